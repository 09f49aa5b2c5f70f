//! Which guest new VMs boot, and where its image is.
//!
//! `test` is the freestanding test guest, embedded in this binary and
//! written to the data dir on start. `linux` is the kernel + rootfs image
//! built by `fastvmd image build`; until it exists, or on a host that
//! cannot boot Linux, creating a VM is refused with the reason.

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

/// A guest ready to boot, or why it is not.
#[derive(Debug, Clone)]
pub enum GuestImage {
    /// Boot this kernel (no disk image of its own: VMs get empty disks).
    Ready { kernel: PathBuf, cmdline: String },
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
                    },
                    Err(e) => GuestImage::Unavailable(format!(
                        "cannot write the test guest to {}: {e}",
                        kernel.display()
                    )),
                }
            }
            GuestChoice::Linux => {
                if !host.can_boot_linux() {
                    return GuestImage::Unavailable(format!(
                        "this host cannot boot the Linux guest: {}; start with --guest test",
                        host.describe()
                    ));
                }
                GuestImage::Unavailable(
                    "the Linux guest image is not available in this build yet; start with \
                     --guest test"
                        .into(),
                )
            }
        }
    }
}
