//! Which guest new VMs boot, and where its image is.
//!
//! `test` is the freestanding test guest, embedded in this binary and
//! written to the data dir on start. `linux` (the default) is the kernel +
//! rootfs image built by `fastvmd image build` and found in the image cache
//! (`crate::image::cache_dir`); each VM's disk starts as a copy of the
//! rootfs. Until the image exists, or on a host that cannot boot Linux,
//! creating a VM is refused with the reason.

use std::path::{Path, PathBuf};

use crate::vmm::host::HostKind;

/// The guest named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GuestChoice {
    /// The Linux kernel and root filesystem (`fastvmd image build`).
    Linux,
    /// The freestanding test guest (what the test suite boots).
    Test,
}

impl GuestChoice {
    /// Its name, as on the command line and in a VM's `sourceName`.
    pub const fn name(self) -> &'static str {
        match self {
            GuestChoice::Linux => "linux",
            GuestChoice::Test => "test",
        }
    }
}

/// A guest ready to boot, or why it is not.
#[derive(Debug, Clone)]
pub enum GuestImage {
    /// Boot this kernel; each VM's disk starts as a copy of `disk` (the
    /// root filesystem), or empty when there is none.
    Ready {
        kernel: PathBuf,
        cmdline: String,
        disk: Option<PathBuf>,
    },
    /// VMs cannot be created; the reason goes in every 503.
    Unavailable(String),
}

/// The test guest ELF, built by this crate's build script.
pub static TEST_GUEST_ELF: &[u8] = include_bytes!(env!("FASTVM_TEST_GUEST"));

impl GuestImage {
    /// Prepares `choice` on `host`, writing the test guest under `images_dir`.
    pub fn prepare(choice: GuestChoice, host: &HostKind, images_dir: &Path) -> GuestImage {
        match choice {
            GuestChoice::Test => {
                if !host.can_run_test_guest() {
                    return GuestImage::Unavailable(host.describe());
                }
                let kernel = images_dir.join("test-guest");
                let write = std::fs::create_dir_all(images_dir)
                    .and_then(|()| std::fs::write(&kernel, TEST_GUEST_ELF));
                match write {
                    Ok(()) => GuestImage::Ready {
                        kernel,
                        cmdline: crate::vmm::config::DEFAULT_CMDLINE.into(),
                        disk: None,
                    },
                    Err(e) => GuestImage::Unavailable(format!(
                        "cannot write the test guest to {}: {e}",
                        kernel.display()
                    )),
                }
            }
            GuestChoice::Linux => {
                let cache = crate::image::cache_dir_or(images_dir.to_path_buf());
                let image = crate::image::Image::current(&cache);
                if !host.can_boot_linux() {
                    let built = match &image {
                        Ok(_) => "the image is built".to_string(),
                        Err(e) => e.to_string(),
                    };
                    return GuestImage::Unavailable(format!(
                        "this host cannot boot the Linux guest: {} ({built}); start with \
                         --guest test",
                        host.describe()
                    ));
                }
                match image {
                    Ok(image) => GuestImage::Ready {
                        kernel: image.vmlinux,
                        cmdline: crate::image::LINUX_CMDLINE.into(),
                        disk: Some(image.rootfs),
                    },
                    Err(e) => GuestImage::Unavailable(e.to_string()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GuestChoice;
    use clap::ValueEnum;

    #[test]
    fn each_guest_is_named_as_on_the_command_line() {
        for choice in GuestChoice::value_variants() {
            let flag = choice.to_possible_value().unwrap();
            assert_eq!(choice.name(), flag.get_name());
        }
    }
}
