//! The `guest-agent` binary that becomes `/sbin/init`: given on the command
//! line, or built from this workspace with `+crt-static` (its own target
//! directory and an explicit `--target`, so the flag never reaches build
//! scripts or proc macros), and always checked to be static.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::kernel::run_logged;
use super::{ImageError, io_err};

/// The only target this project builds for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The workspace this `fastvmd` was built from, if it is still there.
pub fn workspace_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    root.join("guest-agent/Cargo.toml")
        .is_file()
        .then(|| root.to_path_buf())
}

/// Fails unless `bytes` is a static executable.
pub fn check_static(bytes: &[u8], what: &Path) -> Result<(), ImageError> {
    let linkage = super::elf::linkage(bytes).map_err(|e| ImageError::Step {
        step: format!("check {}", what.display()),
        detail: e,
    })?;
    if linkage.is_static() {
        return Ok(());
    }
    Err(ImageError::Step {
        step: format!("check {}", what.display()),
        detail: format!(
            "not a static executable (interpreter {:?}, {} shared libraries)",
            linkage.interpreter, linkage.needed
        ),
    })
}

/// Reads `explicit`, or builds the agent from the workspace into
/// `target_dir`; returns the (static) binary.
pub fn obtain(
    explicit: Option<&Path>,
    target_dir: &Path,
    progress: &dyn Fn(&str),
) -> Result<Vec<u8>, ImageError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => build(target_dir, progress)?,
    };
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    check_static(&bytes, &path)?;
    Ok(bytes)
}

fn build(target_dir: &Path, progress: &dyn Fn(&str)) -> Result<PathBuf, ImageError> {
    let workspace = workspace_dir().ok_or_else(|| {
        ImageError::NotBuilt(
            "the FastVM source tree this fastvmd was built from is gone; pass --agent PATH \
         (a guest-agent built with RUSTFLAGS='-C target-feature=+crt-static' --target \
         x86_64-unknown-linux-gnu)"
                .into(),
        )
    })?;
    std::fs::create_dir_all(target_dir).map_err(io_err(target_dir))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    progress("agent: cargo build --release -p guest-agent (static)");
    let log = target_dir.join("build.log");
    let _ = std::fs::remove_file(&log);
    run_logged(
        "build guest-agent",
        Command::new(cargo)
            .current_dir(&workspace)
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "guest-agent",
                "--target",
                TARGET,
            ])
            .env("CARGO_TARGET_DIR", target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS"),
        &log,
        progress,
    )?;
    Ok(target_dir.join(TARGET).join("release/guest-agent"))
}
