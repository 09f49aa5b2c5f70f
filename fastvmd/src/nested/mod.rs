//! Nested Linux: the real Linux guest on a host that cannot boot it.
//!
//! QEMU's software emulation (TCG) emulates AMD SVM
//! (`-accel tcg -cpu max,+svm,+npt`), so a Debian kernel running in it (L1)
//! has an ordinary hardware-style `/dev/kvm`, and there `fastvmd` runs
//! Linux guests (L2) exactly as on a hardware host, only slower. This module
//! assembles L1 — Debian's kernel and its `kvm-amd` modules
//! ([`l1_kernel`]), an initramfs with busybox, `fastvmd`, the guest image
//! and whatever the caller adds ([`initramfs`]) — and runs it under QEMU
//! with a second serial line that carries only the payload's output
//! ([`qemu`]). The nested Linux test and `fastvmd bench --linux` are built
//! on it.

pub mod demo_image;
pub mod initramfs;
pub mod l1;
pub mod l1_kernel;
pub mod linked;
pub mod qemu;

use std::path::{Path, PathBuf};

/// Environment variable naming the cache of L1 kernels.
pub const CACHE_ENV: &str = "FASTVM_NESTED_CACHE";
/// The QEMU binary (found on `PATH`).
pub const QEMU: &str = "qemu-system-x86_64";
/// Where the guest image sits inside L1 (`FASTVM_IMAGE_CACHE` there).
pub const L1_IMAGE_CACHE: &str = "/images";
/// Where `fastvmd` sits inside L1.
pub const L1_FASTVMD: &str = "/bin/fastvmd";
/// Where the monitor program sits in L1: next to the daemon.
pub const L1_MONITOR: &str = "/bin/fastvm-vmm";

/// Why nested Linux cannot run, or a step of it failed.
#[derive(Debug, thiserror::Error)]
pub enum NestedError {
    /// The host lacks something nested Linux needs (QEMU, the L1 kernel
    /// package, the guest image); the text says what and how to get it.
    #[error("{0}")]
    Missing(String),
    /// A step ran and failed.
    #[error("{step}: {detail}")]
    Step { step: String, detail: String },
}

impl NestedError {
    pub(crate) fn step(step: impl Into<String>, detail: impl ToString) -> NestedError {
        NestedError::Step {
            step: step.into(),
            detail: detail.to_string(),
        }
    }
}

/// The cache of L1 kernels: `$FASTVM_NESTED_CACHE`, else
/// `/var/cache/fastvm/nested` as root, else `~/.cache/fastvm/nested`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/fastvm/nested");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/fastvm/nested")
}

/// The program `name` on `PATH`, if any.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `cmd`, an error naming `step` with its stderr when it fails.
pub(crate) fn run(step: &str, cmd: &mut std::process::Command) -> Result<Vec<u8>, NestedError> {
    let out = cmd
        .output()
        .map_err(|e| NestedError::step(step, format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(NestedError::step(
            step,
            format!("{cmd:?}: {}: {}", out.status, tail.join(" | ")),
        ));
    }
    Ok(out.stdout)
}
