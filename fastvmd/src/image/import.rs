//! `fastvmd image import NAME FILE|-`: a container image becomes a named
//! FastVM image in the cache —
//!
//! ```text
//! <cache>/named/<NAME>/rootfs.ext4   the image's files, guest-agent as /sbin/init
//! <cache>/named/<NAME>/image.json    where it came from and how commands run in it
//! ```
//!
//! (the kernel is the one `fastvmd image build` made, shared by every
//! image). The work happens in `<cache>/named/.<NAME>.import-<pid>`, which
//! is renamed into place only when everything succeeded and removed
//! otherwise: a failed import leaves nothing behind.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::oci::layers::{Kind, Meta, remove_any};
use super::oci::{self, ImportError, Progress, config::RunDefaults};

/// The directory of named images in the cache.
pub const NAMED: &str = "named";
/// An image's metadata file.
pub const IMAGE_JSON: &str = "image.json";
/// Directories the agent mounts on (made when an image lacks them).
const MOUNT_POINTS: [&str; 6] = ["proc", "sys", "dev", "tmp", "run", "sbin"];

/// What `image.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageInfo {
    pub name: String,
    /// What it was imported from (the file name as given).
    pub source: String,
    /// Layers applied.
    pub layers: usize,
    /// Size of the root file system (sparse), bytes.
    pub rootfs_bytes: u64,
    /// How commands run in it by default.
    pub run: RunDefaults,
    /// Unix milliseconds.
    pub created_ms: i64,
}

/// `name` if it can name an image: 1 to 63 of `a-z 0-9 . _ -`, starting
/// with a letter or digit.
pub fn check_name(name: &str) -> Result<(), ImportError> {
    fastvm_proto::api::check_image_name(name).map_err(ImportError::Malformed)
}

/// The root file system of image `name` in `cache`, if there is one.
pub fn rootfs_of(cache: &Path, name: &str) -> Option<PathBuf> {
    check_name(name).ok()?;
    let dir = cache.join(NAMED).join(name);
    let rootfs = dir.join(super::ROOTFS);
    (dir.join(IMAGE_JSON).is_file() && rootfs.is_file()).then_some(rootfs)
}

fn io(what: &str) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        what: what.to_string(),
        source,
    }
}

/// Imports `input` (a path, or `-` for stdin) as image `name` in `cache`,
/// with `agent` as its `/sbin/init`. Returns its directory and metadata.
pub fn import(
    cache: &Path,
    name: &str,
    input: &str,
    agent: &[u8],
    progress: &mut dyn FnMut(&Progress),
) -> Result<(PathBuf, ImageInfo), ImportError> {
    let source = if input == "-" {
        "standard input"
    } else {
        input
    };
    import_labelled(cache, name, input, source, agent, progress)
}

/// [`import`], with `source` as what the image says it came from.
pub fn import_labelled(
    cache: &Path,
    name: &str,
    input: &str,
    source: &str,
    agent: &[u8],
    progress: &mut dyn FnMut(&Progress),
) -> Result<(PathBuf, ImageInfo), ImportError> {
    check_name(name)?;
    let named = cache.join(NAMED);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&named)
        .map_err(io("the image cache"))?;
    let dest = named.join(name);
    if dest.exists() {
        return Err(ImportError::Malformed(format!(
            "an image named {name} exists; remove it first (`fastvmd image rm {name}`)"
        )));
    }
    let work = named.join(format!(".{name}.import-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&work)
        .map_err(io("the work directory"))?;
    let done = build(&work, name, input, source, agent, progress).and_then(|info| {
        fs::rename(&work, &dest).map_err(io("the image directory"))?;
        Ok((dest.clone(), info))
    });
    if done.is_err() {
        let _ = fs::remove_dir_all(&work);
    }
    done
}

fn build(
    work: &Path,
    name: &str,
    input: &str,
    source_label: &str,
    agent: &[u8],
    progress: &mut dyn FnMut(&Progress),
) -> Result<ImageInfo, ImportError> {
    let source = if input == "-" {
        let path = work.join("stdin.tar");
        let mut file = fs::File::create(&path).map_err(io("the work directory"))?;
        io::copy(&mut io::stdin().lock(), &mut file).map_err(io("standard input"))?;
        path
    } else {
        PathBuf::from(input)
    };
    let unpacked = oci::unpack(&source, work, progress)?;
    let mut tree = unpacked.tree;
    for dir in MOUNT_POINTS {
        tree.add_dir(dir)
            .map_err(|e| ImportError::Malformed(e.to_string()))?;
    }
    tree.add_file("sbin/init", agent, init_meta())
        .map_err(|e| ImportError::Malformed(format!("placing the agent as /sbin/init: {e}")))?;
    let content = dir_size(tree.root());
    let rootfs_bytes = (super::ROOTFS_SIZE_GIB << 30).max(content.saturating_mul(2));
    let scratch = work.join("scratch");
    fs::create_dir(&scratch).map_err(io("the work directory"))?;
    oci::ext4::write(&tree, &work.join(super::ROOTFS), rootfs_bytes, &scratch)?;
    for leftover in ["rootfs", "archive", "scratch", "stdin.tar"] {
        let _ = remove_any(&work.join(leftover));
    }
    let info = ImageInfo {
        name: name.to_string(),
        source: source_label.to_string(),
        layers: unpacked.layers,
        rootfs_bytes,
        run: unpacked.run,
        created_ms: crate::store::now_ms(),
    };
    let json = serde_json::to_vec_pretty(&info)
        .map_err(|e| ImportError::Malformed(format!("image.json: {e}")))?;
    fs::write(work.join(IMAGE_JSON), json).map_err(io("image.json"))?;
    Ok(info)
}

fn init_meta() -> Meta {
    Meta {
        kind: Kind::File,
        mode: 0o755,
        uid: 0,
        gid: 0,
        xattrs: Vec::new(),
    }
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The metadata of image `name` in `cache`, if it has any.
pub fn info_of(cache: &Path, name: &str) -> Option<ImageInfo> {
    check_name(name).ok()?;
    read_info(&cache.join(NAMED).join(name))
}

/// `dir/image.json`, read (at most 1 MiB).
fn read_info(dir: &Path) -> Option<ImageInfo> {
    let mut text = String::new();
    fs::File::open(dir.join(IMAGE_JSON))
        .ok()?
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// The named images in `cache`, by name.
pub fn list(cache: &Path) -> Vec<ImageInfo> {
    let Ok(entries) = fs::read_dir(cache.join(NAMED)) else {
        return Vec::new();
    };
    let mut images: Vec<ImageInfo> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| read_info(&e.path()))
        .collect();
    images.sort_by(|a, b| a.name.cmp(&b.name));
    images
}

/// Removes image `name` from `cache`.
pub fn remove(cache: &Path, name: &str) -> Result<(), ImportError> {
    check_name(name)?;
    let dir = cache.join(NAMED).join(name);
    if !dir.join(IMAGE_JSON).is_file() {
        return Err(ImportError::Malformed(format!("no image named {name}")));
    }
    fs::remove_dir_all(&dir).map_err(io("the image directory"))
}
