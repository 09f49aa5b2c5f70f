//! An L1 ready to boot: Debian's kernel, `fastvmd`, the built guest image
//! (its root filesystem shrunk) and the caller's binaries, with one payload
//! command; booted under QEMU with emulated SVM.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::initramfs::Initramfs;
use super::qemu::{self, L1Machine, L1Outcome};
use super::{L1_FASTVMD, L1_IMAGE_CACHE, L1_MONITOR, NestedError, l1_kernel};
use crate::image::{self, Image};

/// Memory of L1: two Linux VMs of 2 GiB (touched lazily), their snapshot
/// and L1's own tmpfs all live in it.
pub const L1_MEMORY_MIB: u32 = 6144;
/// Free space left in the guest's shrunk root file system.
pub const ROOTFS_SPARE_MIB: u64 = 64;
/// Free space left in the demo container image's shrunk file system.
pub const DEMO_SPARE_MIB: u64 = 8;
/// Free space left in the Debian userland's shrunk file system (the
/// agent grows it to the VM's disk at boot).
pub const USERLAND_SPARE_MIB: u64 = 32;

/// Host programs L1 carries, with their packages and where they go in L1:
/// `nft` for `fastvmd`'s NAT, iproute2's `ip` (ahead of busybox's on
/// `PATH`) for the namespace that stands for the internet.
pub const NETWORK_TOOLS: &[(&str, &str, &str)] = &[
    ("nft", "nftables", "/usr/sbin/nft"),
    ("ip", "iproute2", "/bin/ip"),
];

/// The built guest image, from `$FASTVM_IMAGE_CACHE` or the default data
/// directory's cache.
pub fn guest_image() -> Result<Image, NestedError> {
    let cache = image::cache_dir(&crate::serve::default_data_dir());
    Image::current(&cache).map_err(|e| NestedError::Missing(e.to_string()))
}

/// A prepared L1: the kernel and the initramfs, in a work directory that
/// also receives the serial logs.
pub struct PreparedL1 {
    pub machine: L1Machine,
    pub workdir: tempfile::TempDir,
}

/// Assembles L1 to run `payload` (a command line inside L1) with `fastvmd`
/// at [`L1_FASTVMD`], its monitor program at [`L1_MONITOR`] and each `extra`
/// binary at its path. `progress` gets a line per long step.
pub fn prepare(
    fastvmd: &Path,
    monitor: &Path,
    extra: &[(&Path, &str)],
    payload: &str,
    timeout: Duration,
    progress: &dyn Fn(&str),
) -> Result<PreparedL1, NestedError> {
    if let Some(why) = qemu::unavailable() {
        return Err(NestedError::Missing(why));
    }
    let image = guest_image()?;
    let kernel = l1_kernel::fetch(&super::cache_dir(), progress)?;
    progress(&format!(
        "L1: kernel {}; assembling the initramfs",
        kernel.name
    ));
    let env = [("FASTVM_IMAGE_CACHE", L1_IMAGE_CACHE), ("RUST_LOG", "info")];
    let tree = Initramfs::new(&kernel, payload, &env)?;
    tree.add_binary(fastvmd, L1_FASTVMD)?;
    tree.add_binary(monitor, L1_MONITOR)?;
    for (src, dst) in extra {
        tree.add_binary(src, dst)?;
    }
    for (program, package, dst) in NETWORK_TOOLS {
        let src = super::which(program).ok_or_else(|| {
            NestedError::Missing(format!(
                "{program} not found: install it with `apt-get install {package}`"
            ))
        })?;
        tree.add_linked_binary(&src, dst)?;
    }
    let current = format!("{L1_IMAGE_CACHE}/{}", image::CURRENT);
    tree.add_file(
        &image.vmlinux,
        &format!("{current}/{}", image::VMLINUX),
        0o644,
    )?;
    tree.add_file(
        &image.kernel_config,
        &format!("{current}/{}", image::KERNEL_CONFIG),
        0o644,
    )?;
    tree.add_file(&image.agent, &format!("{current}/{}", image::AGENT), 0o755)?;
    tree.add_shrunk_ext4(
        &image.rootfs,
        &format!("{current}/{}", image::ROOTFS),
        ROOTFS_SPARE_MIB,
    )?;
    let workdir = tempfile::Builder::new()
        .prefix("fastvm-nested-")
        .tempdir()
        .map_err(|e| NestedError::Step {
            step: "work directory".into(),
            detail: e.to_string(),
        })?;
    // An imported container image, as `fastvmd image import` leaves it.
    progress("L1: importing the demo container image");
    let demo = super::demo_image::import_into(&workdir.path().join("cache"), &image.agent)?;
    let named = format!(
        "{L1_IMAGE_CACHE}/{}/{}",
        image::import::NAMED,
        super::demo_image::NAME
    );
    tree.add_file(
        &demo.join(image::import::IMAGE_JSON),
        &format!("{named}/{}", image::import::IMAGE_JSON),
        0o644,
    )?;
    tree.add_shrunk_ext4(
        &demo.join(image::ROOTFS),
        &format!("{named}/{}", image::ROOTFS),
        DEMO_SPARE_MIB,
    )?;
    // The Debian userland, as `fastvmd image build --userland debian` left it.
    let userland = image::userland::NAME;
    let host_cache = image::cache_dir(&crate::serve::default_data_dir());
    let debian = image::import::rootfs_of(&host_cache, userland).ok_or_else(|| {
        NestedError::Missing(format!(
            "no {userland} image in {}: run `fastvmd image build --userland {userland}`",
            host_cache.display()
        ))
    })?;
    progress(&format!("L1: adding the {userland} image"));
    let named = format!("{L1_IMAGE_CACHE}/{}/{userland}", image::import::NAMED);
    tree.add_file(
        &debian.with_file_name(image::import::IMAGE_JSON),
        &format!("{named}/{}", image::import::IMAGE_JSON),
        0o644,
    )?;
    tree.add_shrunk_ext4(
        &debian,
        &format!("{named}/{}", image::ROOTFS),
        USERLAND_SPARE_MIB,
    )?;
    let initrd = workdir.path().join("l1.cpio");
    tree.write(&initrd)?;
    Ok(PreparedL1 {
        machine: L1Machine {
            kernel: kernel.vmlinuz,
            initrd,
            memory_mib: L1_MEMORY_MIB,
            cpus: 2,
            workdir: workdir.path().to_path_buf(),
            timeout,
        },
        workdir,
    })
}

impl PreparedL1 {
    /// Boots L1; each results line goes to `on_line` as it arrives.
    pub fn run(&self, on_line: &mut dyn FnMut(&str)) -> Result<L1Outcome, NestedError> {
        self.machine.run(on_line)
    }

    /// Keeps the work directory (logs, initramfs) after a failure; its path.
    pub fn keep(self) -> PathBuf {
        self.workdir.keep()
    }
}
