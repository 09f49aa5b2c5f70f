//! A small container image for the nested scenario, made here as a
//! `docker save` archive and imported as any other
//! ([`crate::image::import`]): busybox at `/usr/local/bin/busybox` and no
//! shell at `/bin/sh`, so the guest boots with nothing of the image's own
//! but the files it reads.

use std::path::{Path, PathBuf};

use super::NestedError;
use crate::image::oci::archive::{docker_save, tar_of};

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

/// Imports the demo image into `cache` (busybox from the host, `agent` as
/// its init); its directory there.
pub fn import_into(cache: &Path, agent: &Path) -> Result<PathBuf, NestedError> {
    let busybox = std::fs::read(super::initramfs::BUSYBOX).map_err(failed)?;
    let agent = std::fs::read(agent).map_err(failed)?;
    let layer = tar_of(&[
        (&BUSYBOX[1..], &busybox, 0o755),
        (MARKER.0, MARKER.1.as_bytes(), 0o644),
    ])
    .map_err(failed)?;
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": [BUSYBOX, "cat", format!("/{}", MARKER.0)], "Env": [ENV],
                   "WorkingDir": WORKING_DIR, "User": USER},
    });
    let archive = docker_save(config, &layer).map_err(failed)?;
    let file = cache.join("nested-demo.tar");
    std::fs::create_dir_all(cache).map_err(failed)?;
    std::fs::write(&file, archive).map_err(failed)?;
    let input = file.to_string_lossy().to_string();
    let (dir, _) =
        crate::image::import::import(cache, NAME, &input, &agent, &mut |_| {}).map_err(failed)?;
    Ok(dir)
}
