//! Finding an image's config and layers in what the user handed over: a
//! `docker save` archive (`manifest.json`) or an OCI image layout
//! (`index.json`, blobs by digest), as a directory or as a tar (which is
//! first unpacked into the import's own work directory, with the same
//! checks as a layer). Every name read from the archive's JSON is resolved
//! inside it: none can point at a host file.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ImportError;
use super::resolve::{entry_components, resolve};

/// Largest JSON document read (manifest, index, config).
const MAX_JSON: u64 = 16 << 20;
/// Index levels followed to reach a manifest (multi-platform images).
const MAX_INDEX_DEPTH: usize = 4;

/// An image inside an unpacked archive.
#[derive(Debug)]
pub struct Layout {
    /// The config blob.
    pub config: Vec<u8>,
    /// The layer blobs, bottom first, on the host, with their names in the
    /// archive (for messages).
    pub layers: Vec<(PathBuf, String)>,
}

/// The file `name` (as the archive's JSON names it) inside `dir`.
fn file_in(dir: &Path, name: &str) -> Result<PathBuf, ImportError> {
    let bad = || ImportError::Malformed(format!("{name:?} does not name a file in the archive"));
    let parts = entry_components(Path::new(name)).ok_or_else(bad)?;
    let rel = resolve(dir, &parts, true).map_err(|_| bad())?;
    let path = dir.join(rel);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        _ => Err(bad()),
    }
}

/// Reads a JSON document of at most [`MAX_JSON`] bytes.
fn read_json(path: &Path, what: &str) -> Result<Vec<u8>, ImportError> {
    let file = fs::File::open(path).map_err(|e| ImportError::Malformed(format!("{what}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImportError::Malformed(format!("{what}: {e}")))?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(ImportError::Malformed(format!(
            "{what} is larger than {} MiB",
            MAX_JSON >> 20
        )));
    }
    Ok(bytes)
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, ImportError> {
    serde_json::from_slice(bytes).map_err(|e| ImportError::Malformed(format!("{what}: {e}")))
}

/// Finds the image in directory `dir`.
pub fn find(dir: &Path) -> Result<Layout, ImportError> {
    if dir.join("index.json").is_file() {
        oci(dir)
    } else if dir.join("manifest.json").is_file() {
        docker(dir)
    } else {
        Err(ImportError::NotAnImage(
            "neither manifest.json (docker save) nor index.json (OCI image layout) is in it".into(),
        ))
    }
}

/// One image of a `docker save` manifest.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn docker(dir: &Path) -> Result<Layout, ImportError> {
    let manifest = read_json(&dir.join("manifest.json"), "manifest.json")?;
    let images: Vec<DockerImage> = parse(&manifest, "manifest.json")?;
    let image = match images.as_slice() {
        [one] => one,
        [] => {
            return Err(ImportError::NotAnImage(
                "manifest.json lists no image".into(),
            ));
        }
        many => {
            let tags: Vec<String> = many
                .iter()
                .map(|i| i.repo_tags.clone().unwrap_or_default().join(","))
                .collect();
            return Err(ImportError::Malformed(format!(
                "the archive holds {} images ({}); save one image per archive",
                many.len(),
                tags.join("; ")
            )));
        }
    };
    let config = read_json(&file_in(dir, &image.config)?, "the image config")?;
    let layers = image
        .layers
        .iter()
        .map(|name| Ok((file_in(dir, name)?, name.clone())))
        .collect::<Result<_, ImportError>>()?;
    Ok(Layout { config, layers })
}

/// An OCI descriptor: what a blob is and its digest.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// The blob with `digest` (`sha256:<hex>`) in OCI layout `dir`.
fn blob(dir: &Path, digest: &str) -> Result<PathBuf, ImportError> {
    let bad = || ImportError::Malformed(format!("{digest:?} is not a digest"));
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let plain = |s: &str, ok: fn(char) -> bool| !s.is_empty() && s.chars().all(ok);
    if !plain(algorithm, |c| c.is_ascii_alphanumeric()) || !plain(hex, |c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    file_in(dir, &format!("blobs/{algorithm}/{hex}"))
}

fn is_index(d: &Descriptor) -> bool {
    d.media_type.as_deref().is_some_and(|t| {
        t == "application/vnd.oci.image.index.v1+json"
            || t == "application/vnd.docker.distribution.manifest.list.v2+json"
    })
}

fn for_this_host(d: &Descriptor) -> bool {
    d.platform
        .as_ref()
        .is_none_or(|p| p.os == "linux" && matches!(p.architecture.as_str(), "amd64" | "x86_64"))
}

fn oci(dir: &Path) -> Result<Layout, ImportError> {
    let mut index_bytes = read_json(&dir.join("index.json"), "index.json")?;
    for _ in 0..MAX_INDEX_DEPTH {
        let index: Index = parse(&index_bytes, "index.json")?;
        let chosen = index
            .manifests
            .iter()
            .find(|d| for_this_host(d))
            .ok_or_else(|| ImportError::Platform("the image has no linux/amd64 manifest".into()))?;
        let bytes = read_json(&blob(dir, &chosen.digest)?, "a manifest")?;
        if is_index(chosen) {
            index_bytes = bytes;
            continue;
        }
        let manifest: Manifest = parse(&bytes, "the image manifest")?;
        let config = read_json(&blob(dir, &manifest.config.digest)?, "the image config")?;
        let layers = manifest
            .layers
            .iter()
            .map(|d| Ok((blob(dir, &d.digest)?, d.digest.clone())))
            .collect::<Result<_, ImportError>>()?;
        return Ok(Layout { config, layers });
    }
    Err(ImportError::Malformed(format!(
        "more than {MAX_INDEX_DEPTH} levels of image indexes"
    )))
}
