//! `fastvmd image build --userland debian`: a normal Linux userland as the
//! named image `debian`, for users who want `python3`, `git` and `apt`
//! rather than busybox.
//!
//! `debootstrap --variant=minbase` installs Debian's essential packages
//! and [`PACKAGES`] from the mirror the host's apt uses, into a directory
//! that becomes one layer of a `docker save` directory:
//!
//! ```text
//! <cache>/userland-debian-<key>/manifest.json, config.json, l/layer.tar
//! ```
//!
//! keyed by the suite and the package list (the slow part, minutes; kept).
//! That directory is then imported like any container image
//! ([`super::import`]), with the agent as `/sbin/init`: a changed agent
//! re-imports from the kept layer in about a minute without downloading
//! anything. The image's `source` names the key and the agent, so an image
//! made from other inputs is made again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::kernel::run_logged;
use super::oci::Progress;
use super::{ImageError, io_err, key, tools};

/// The name the userland image gets.
pub const NAME: &str = "debian";
/// Packages installed beside minbase's.
pub const PACKAGES: [&str; 5] = ["python3", "git", "curl", "ca-certificates", "iproute2"];
/// Where debootstrap comes from.
const DEBOOTSTRAP: (&str, &str) = ("debootstrap", "debootstrap");
/// Bumped when what is built from the same inputs changes.
const RECIPE: &str = "1";
/// What a command gets when the request names none.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which Debian to install, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The suite (`bookworm`).
    pub suite: String,
    /// The mirror's URL (`http://deb.debian.org/debian`).
    pub mirror: String,
}

impl Source {
    /// The host's own: its release's codename and the first Debian mirror
    /// its apt sources name (deb822 `URIs:` or a one-line `deb` entry).
    pub fn of_host() -> Result<Source, ImageError> {
        let release = fs::read_to_string("/etc/os-release").unwrap_or_default();
        let suite = os_release_codename(&release).ok_or_else(|| {
            ImageError::NotBuilt(
                "--userland debian: /etc/os-release names no VERSION_CODENAME; \
                 give --suite"
                    .into(),
            )
        })?;
        let mut sources = String::new();
        for path in apt_source_files() {
            sources.push_str(&fs::read_to_string(&path).unwrap_or_default());
            sources.push('\n');
        }
        let mirror = first_mirror(&sources).ok_or_else(|| {
            ImageError::NotBuilt(
                "--userland debian: no Debian mirror in /etc/apt/sources.list{,.d}; \
                 give --mirror"
                    .into(),
            )
        })?;
        Ok(Source { suite, mirror })
    }
}

fn apt_source_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files
}

/// `VERSION_CODENAME` of an os-release text.
pub fn os_release_codename(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The first mirror of the main archive in apt sources text: not a
/// security or backports archive, http(s) only.
pub fn first_mirror(text: &str) -> Option<String> {
    let candidates = text.lines().flat_map(|line| {
        let line = line.trim();
        let urls: Vec<&str> = if let Some(uris) = line.strip_prefix("URIs:") {
            uris.split_whitespace().collect()
        } else if let Some(rest) = line.strip_prefix("deb ") {
            // `deb [options] URL suite components`
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(options) => options.split_once(']').map_or("", |(_, r)| r),
                None => rest,
            };
            rest.split_whitespace().take(1).collect()
        } else {
            Vec::new()
        };
        urls.into_iter().map(str::to_string).collect::<Vec<_>>()
    });
    candidates
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .find(|u| !u.contains("security") && !u.contains("backports"))
        .map(|u| u.trim_end_matches('/').to_string())
}

/// The key of a userland layer: suite, packages, recipe.
pub fn layer_key(suite: &str) -> String {
    let packages = PACKAGES.join(",");
    key::hash_parts(&[
        ("suite", suite.as_bytes()),
        ("packages", packages.as_bytes()),
        ("recipe", RECIPE.as_bytes()),
    ])[..16]
        .to_string()
}

/// What the image's `source` says: enough to tell when it is stale.
fn source_label(suite: &str, layer_key: &str, agent: &[u8]) -> String {
    let agent = &key::hash_parts(&[("agent", agent)])[..16];
    format!(
        "debian {suite} (debootstrap minbase + {}; layer {layer_key}, agent {agent})",
        PACKAGES.join(" ")
    )
}

/// Builds (or keeps) the `debian` image in `cache` with `agent` as init.
/// Returns whether anything was made.
pub fn build(
    cache: &Path,
    source: &Source,
    agent: &[u8],
    progress: &dyn Fn(&str),
) -> Result<bool, ImageError> {
    let layer_key = layer_key(&source.suite);
    let label = source_label(&source.suite, &layer_key, agent);
    if super::import::info_of(cache, NAME).is_some_and(|info| info.source == label) {
        progress(&format!("userland: {NAME} is up to date"));
        return Ok(false);
    }
    let layer_dir = cache.join(format!("userland-{NAME}-{layer_key}"));
    if !layer_dir.join("manifest.json").is_file() {
        tools::require(&[DEBOOTSTRAP, ("tar", "tar")], &[])?;
        make_layer(&layer_dir, source, progress)?;
    } else {
        progress(&format!(
            "userland: debootstrap layer cached ({})",
            layer_dir.display()
        ));
    }
    if super::import::info_of(cache, NAME).is_some() {
        progress(&format!("userland: replacing the older {NAME} image"));
        super::import::remove(cache, NAME).map_err(|e| ImageError::Step {
            step: format!("remove the older {NAME} image"),
            detail: e.to_string(),
        })?;
    }
    progress(&format!("userland: importing it as image {NAME}"));
    let mut report = |p: &Progress| {
        progress(&format!(
            "userland: applying the layer ({} MiB), then writing the file system",
            p.bytes >> 20
        ))
    };
    let input = layer_dir.to_str().ok_or_else(|| {
        ImageError::NotBuilt(format!(
            "the image cache path {} is not UTF-8",
            cache.display()
        ))
    })?;
    super::import::import_labelled(cache, NAME, input, &label, agent, &mut report).map_err(
        |e| ImageError::Step {
            step: format!("import the {NAME} userland"),
            detail: e.to_string(),
        },
    )?;
    Ok(true)
}

/// debootstrap into a scratch tree, then the tree as a one-layer `docker
/// save` directory at `out` (made under another name and renamed).
fn make_layer(out: &Path, source: &Source, progress: &dyn Fn(&str)) -> Result<(), ImageError> {
    let tmp = out.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    let tree = tmp.join("tree");
    fs::create_dir_all(tmp.join("l")).map_err(io_err(&tmp))?;
    let log = tmp.join("debootstrap.log");
    progress(&format!(
        "userland: debootstrap {} from {} with {} (a few minutes; log {})",
        source.suite,
        source.mirror,
        PACKAGES.join(" "),
        log.display()
    ));
    run_logged(
        "debootstrap",
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg("--components=main")
            .arg(&source.suite)
            .arg(&tree)
            .arg(&source.mirror),
        &log,
        progress,
    )?;
    // Downloaded packages and indexes: the image does not need them.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        clear_files(&tree.join(dir));
    }
    progress("userland: packing the tree as a layer");
    run_logged(
        "pack the userland",
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("--xattrs")
            .arg("-C")
            .arg(&tree)
            .arg("-cf")
            .arg(tmp.join("l/layer.tar"))
            .arg("."),
        &log,
        progress,
    )?;
    fs::remove_dir_all(&tree).map_err(io_err(&tree))?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": [PATH_ENV, "LANG=C.UTF-8"],
            "WorkingDir": "/root",
            "Cmd": ["/bin/bash"],
        },
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [format!("debian:{}", source.suite)],
        "Layers": ["l/layer.tar"],
    }]);
    for (name, value) in [("config.json", config), ("manifest.json", manifest)] {
        let path = tmp.join(name);
        fs::write(&path, value.to_string()).map_err(io_err(&path))?;
    }
    let _ = fs::remove_dir_all(out);
    fs::rename(&tmp, out).map_err(io_err(out))
}

/// Removes the regular files directly in `dir` (apt's `partial/` and
/// `lock` stay as they are).
fn clear_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if entry.file_type().is_ok_and(|t| t.is_file()) && name != "lock" {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codename_comes_from_os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(os_release_codename(text).as_deref(), Some("bookworm"));
        assert_eq!(os_release_codename("ID=debian\n"), None);
        assert_eq!(os_release_codename("VERSION_CODENAME=\n"), None);
    }

    #[test]
    fn the_main_mirror_is_found_in_either_format() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            first_mirror(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let security_first = "URIs: http://deb.debian.org/debian-security/\n\
                              URIs: https://mirror.example/debian/\n";
        assert_eq!(
            first_mirror(security_first).as_deref(),
            Some("https://mirror.example/debian")
        );
        let one_line = "# deb http://old.example/debian bookworm main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            first_mirror(one_line).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(first_mirror("deb file:/srv/repo bookworm main\n"), None);
        assert_eq!(first_mirror(""), None);
    }

    #[test]
    fn the_label_changes_with_the_agent_and_the_key_with_the_suite() {
        let key = layer_key("bookworm");
        assert_eq!(key.len(), 16);
        assert_ne!(key, layer_key("trixie"));
        assert_ne!(
            source_label("bookworm", &key, b"agent one"),
            source_label("bookworm", &key, b"agent two")
        );
    }
}
