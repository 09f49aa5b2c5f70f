//! A small container image for the nested scenario, made here as a
//! `docker save` archive and imported as any other
//! ([`crate::image::import`]): busybox at `/usr/local/bin/busybox` and no
//! shell at `/bin/sh`, so the guest boots with nothing of the image's own
//! but the files it reads.

use std::path::{Path, PathBuf};

use super::NestedError;
use crate::image::oci::digest_of;

/// The image's name in L1's image cache.
pub const NAME: &str = "nested-demo";
/// A file the image carries, and what it holds.
pub const MARKER: (&str, &str) = ("etc/imported", "from a container image\n");
/// Where busybox is in the image.
pub const BUSYBOX: &str = "/usr/local/bin/busybox";
/// The image's `Env` entry, `WorkingDir` and `User`, which exec applies.
pub const ENV: &str = "DEMO_ENV=from-image";
pub const WORKING_DIR: &str = "/etc";
pub const USER: &str = "65534:65534";

fn failed(e: impl std::fmt::Display) -> NestedError {
    NestedError::step("demo image", e)
}

/// A tar of `files` (path, content, mode).
fn tar_of(files: &[(&str, &[u8], u32)]) -> Result<Vec<u8>, NestedError> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(content.len() as u64);
        tar.append_data(&mut header, path, *content)
            .map_err(failed)?;
    }
    tar.into_inner().map_err(failed)
}

/// Imports the demo image into `cache` (busybox from the host, `agent` as
/// its init); its directory there.
pub fn import_into(cache: &Path, agent: &Path) -> Result<PathBuf, NestedError> {
    let busybox = std::fs::read(super::initramfs::BUSYBOX).map_err(failed)?;
    let agent = std::fs::read(agent).map_err(failed)?;
    let layer = tar_of(&[
        (&BUSYBOX[1..], &busybox, 0o755),
        (MARKER.0, MARKER.1.as_bytes(), 0o644),
    ])?;
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": [BUSYBOX, "cat", format!("/{}", MARKER.0)], "Env": [ENV],
                   "WorkingDir": WORKING_DIR, "User": USER},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]},
    });
    let manifest = serde_json::json!([{"Config": "config.json", "Layers": ["layer.tar"]}]);
    let archive = tar_of(&[
        ("manifest.json", manifest.to_string().as_bytes(), 0o644),
        ("config.json", config.to_string().as_bytes(), 0o644),
        ("layer.tar", &layer, 0o644),
    ])?;
    let file = cache.join("nested-demo.tar");
    std::fs::create_dir_all(cache).map_err(failed)?;
    std::fs::write(&file, archive).map_err(failed)?;
    let input = file.to_string_lossy().to_string();
    let (dir, _) =
        crate::image::import::import(cache, NAME, &input, &agent, &mut |_| {}).map_err(failed)?;
    Ok(dir)
}
