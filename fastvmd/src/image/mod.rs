//! The Linux guest image: a kernel (`vmlinux`) built from Debian's
//! `linux-source` with the fragment in `kernel.config`, and a 10 GiB sparse
//! ext4 root filesystem holding busybox-static and `guest-agent` as
//! `/sbin/init`.
//!
//! `fastvmd image build` ([`build::build`]) makes both and caches them
//! under the image cache directory ([`cache_dir`]), each keyed by the hash
//! of its inputs ([`key`]):
//!
//! ```text
//! <cache>/kernel-<hash>/vmlinux, config       kernel and its final .config
//! <cache>/rootfs-<hash>/rootfs.ext4, guest-agent
//! <cache>/image-<hash>/                        links to one kernel + one rootfs
//! <cache>/current -> image-<hash>              what `fastvmd serve` boots
//! <cache>/build/                               source trees and cargo output
//! ```
//!
//! A rebuild with unchanged inputs does nothing; a changed agent rebuilds
//! only the root filesystem.

pub mod agent_binary;
pub mod build;
pub mod elf;
pub mod import;
pub mod kernel;
pub mod key;
pub mod oci;
pub mod rootfs;
pub mod tools;
pub mod userland;

use std::path::{Path, PathBuf};

/// Environment variable naming the image cache directory.
pub const CACHE_ENV: &str = "FASTVM_IMAGE_CACHE";
/// The link to the image `fastvmd serve` boots, in the cache directory.
pub const CURRENT: &str = "current";
/// The kernel's file name in an image directory.
pub const VMLINUX: &str = "vmlinux";
/// The root filesystem's file name in an image directory.
pub const ROOTFS: &str = "rootfs.ext4";
/// The kernel's final `.config` in an image directory.
pub const KERNEL_CONFIG: &str = "config";
/// The agent binary (as installed as `/sbin/init`) in an image directory.
pub const AGENT: &str = "guest-agent";
/// Size of the root filesystem image (sparse).
pub const ROOTFS_SIZE_GIB: u64 = 10;
/// Kernel command line of the Linux guest (the monitor appends its
/// virtio-mmio devices). No `pci=off` or `nomodule`: the kernel has neither
/// PCI nor modules, and would hand unknown words to init. One UART only:
/// probing the other three costs port I/O exits at boot.
pub const LINUX_CMDLINE: &str =
    "console=ttyS0 8250.nr_uarts=1 reboot=k panic=1 quiet root=/dev/vda rw rootfstype=ext4";

/// Errors of building or finding the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A program the build needs is not installed.
    #[error("{tool} not found: install it with `apt-get install {package}`")]
    MissingTool { tool: String, package: &'static str },
    /// A build step ran and failed; the log has the details.
    #[error("{step} failed: {detail}")]
    Step { step: String, detail: String },
    /// After `make olddefconfig` some required options were not set.
    #[error("the kernel .config lacks required options: {}", .0.join(", "))]
    MissingOptions(Vec<String>),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The built image is not there.
    #[error("{0}")]
    NotBuilt(String),
}

/// Wraps an I/O error with the path it concerns.
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The image cache: `$FASTVM_IMAGE_CACHE`, else `<data dir>/images`.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    cache_dir_or(data_dir.join("images"))
}

/// `$FASTVM_IMAGE_CACHE`, else `default`.
pub fn cache_dir_or(default: PathBuf) -> PathBuf {
    match std::env::var_os(CACHE_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => default,
    }
}

/// A built image's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub vmlinux: PathBuf,
    pub rootfs: PathBuf,
    pub kernel_config: PathBuf,
    pub agent: PathBuf,
}

impl Image {
    /// The files of the image directory `dir`.
    pub fn in_dir(dir: &Path) -> Image {
        Image {
            vmlinux: dir.join(VMLINUX),
            rootfs: dir.join(ROOTFS),
            kernel_config: dir.join(KERNEL_CONFIG),
            agent: dir.join(AGENT),
        }
    }

    /// The current image in `cache`, if `fastvmd image build` made one,
    /// with every link resolved (a later build does not move it).
    pub fn current(cache: &Path) -> Result<Image, ImageError> {
        let image = Image::in_dir(&cache.join(CURRENT));
        let resolve = |file: &Path| {
            std::fs::canonicalize(file)
                .ok()
                .filter(|p| p.is_file())
                .ok_or_else(|| {
                    ImageError::NotBuilt(format!(
                        "the Linux guest image is not built ({} is missing); run `fastvmd \
                         image build`",
                        file.display()
                    ))
                })
        };
        Ok(Image {
            vmlinux: resolve(&image.vmlinux)?,
            rootfs: resolve(&image.rootfs)?,
            kernel_config: resolve(&image.kernel_config)?,
            agent: resolve(&image.agent)?,
        })
    }
}
