//! The L1 initramfs: a staging directory written out as a `newc` cpio
//! archive. Holds busybox (every applet linked), the L1 kernel's modules,
//! an `/init` that mounts, loads the modules and runs one payload command
//! with its output on the second serial line, and the files callers add.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::l1_kernel::{L1Kernel, MODULES};
use super::{NestedError, run};

/// Busybox as Debian's `busybox-static` installs it.
pub const BUSYBOX: &str = "/bin/busybox";
/// The payload's output line (second serial port of L1).
pub const RESULTS_TTY: &str = "/dev/ttyS1";
/// Written on the results line when the payload ends: `L1 EXIT <status>`.
pub const EXIT_MARK: &str = "L1 EXIT ";

/// An initramfs being put together.
#[derive(Debug)]
pub struct Initramfs {
    root: tempfile::TempDir,
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> NestedError + '_ {
    move |e| NestedError::step("initramfs", format!("{}: {e}", what.display()))
}

impl Initramfs {
    /// A tree with busybox and `kernel`'s modules; `/init` runs `payload`
    /// (a shell command line) with `env` set.
    pub fn new(
        kernel: &L1Kernel,
        payload: &str,
        env: &[(&str, &str)],
    ) -> Result<Self, NestedError> {
        if !Path::new(BUSYBOX).is_file() {
            return Err(NestedError::Missing(format!(
                "{BUSYBOX} not found: install it with `apt-get install busybox-static`"
            )));
        }
        let root = tempfile::Builder::new()
            .prefix("fastvm-l1-")
            .tempdir()
            .map_err(|e| NestedError::step("initramfs", e))?;
        let tree = Initramfs { root };
        tree.add_file(Path::new(BUSYBOX), "bin/busybox", 0o755)?;
        for (path, name) in kernel.modules.iter().zip(MODULES) {
            tree.add_file(path, &format!("lib/modules/{name}.ko"), 0o644)?;
        }
        tree.add_bytes("init", init_script(payload, env).as_bytes(), 0o755)?;
        Ok(tree)
    }

    fn dest(&self, dst: &str) -> Result<PathBuf, NestedError> {
        let path = self.root.path().join(dst.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        Ok(path)
    }

    /// Copies `src` to `dst` (a path inside L1) with `mode`.
    pub fn add_file(&self, src: &Path, dst: &str, mode: u32) -> Result<(), NestedError> {
        let path = self.dest(dst)?;
        std::fs::copy(src, &path).map_err(io(src))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io(&path))
    }

    /// Writes `data` to `dst` (a path inside L1) with `mode`.
    pub fn add_bytes(&self, dst: &str, data: &[u8], mode: u32) -> Result<(), NestedError> {
        let path = self.dest(dst)?;
        std::fs::write(&path, data).map_err(io(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io(&path))
    }

    /// Copies an executable without its debug information (a debug build
    /// is mostly that), so the archive stays small.
    pub fn add_binary(&self, src: &Path, dst: &str) -> Result<(), NestedError> {
        let path = self.dest(dst)?;
        run(
            "strip",
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(src)
                .arg(&path),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(io(&path))
    }

    /// Copies the dynamically linked program `src` to `dst` with every
    /// shared library it needs at its host path
    /// ([`super::linked::libraries`]).
    pub fn add_linked_binary(&self, src: &Path, dst: &str) -> Result<(), NestedError> {
        for lib in super::linked::libraries(src)? {
            let dst = lib.to_string_lossy().into_owned();
            if !self.dest(&dst)?.exists() {
                self.add_file(&lib, &dst, 0o755)?;
            }
        }
        self.add_file(src, dst, 0o755)
    }

    /// Adds a copy of the ext4 image `src` shrunk to its contents plus
    /// `spare_mib` (`resize2fs -M`), so L1 does not carry empty blocks.
    pub fn add_shrunk_ext4(
        &self,
        src: &Path,
        dst: &str,
        spare_mib: u64,
    ) -> Result<(), NestedError> {
        let path = self.dest(dst)?;
        run(
            "copy rootfs",
            Command::new("cp")
                .arg("--sparse=always")
                .arg(src)
                .arg(&path),
        )?;
        run("e2fsck", Command::new("e2fsck").arg("-fy").arg(&path))?;
        run(
            "resize2fs -M",
            Command::new("resize2fs").arg("-M").arg(&path),
        )?;
        let target_mib = ext4_bytes(&path)?.div_ceil(1 << 20) + spare_mib;
        run(
            "resize2fs",
            Command::new("resize2fs")
                .arg(&path)
                .arg(format!("{target_mib}M")),
        )?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        file.set_len(target_mib << 20).map_err(io(&path))
    }

    /// Writes the archive to `out`.
    pub fn write(&self, out: &Path) -> Result<(), NestedError> {
        let file = std::fs::File::create(out).map_err(io(out))?;
        let list = run(
            "find",
            Command::new("find").arg(".").current_dir(self.root.path()),
        )?;
        let mut cpio = Command::new("cpio")
            .args(["-o", "-H", "newc", "--quiet"])
            .current_dir(self.root.path())
            .stdin(std::process::Stdio::piped())
            .stdout(file)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| NestedError::Missing(format!("cpio: {e} (apt-get install cpio)")))?;
        {
            use std::io::Write;
            let mut stdin = cpio.stdin.take().expect("piped");
            stdin
                .write_all(&list)
                .map_err(|e| NestedError::step("cpio", e))?;
        }
        let out = cpio
            .wait_with_output()
            .map_err(|e| NestedError::step("cpio", e))?;
        if !out.status.success() {
            return Err(NestedError::step(
                "cpio",
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }
}

/// The size of the ext4 file system in `image` (block count × block size).
fn ext4_bytes(image: &Path) -> Result<u64, NestedError> {
    let out = run("dumpe2fs", Command::new("dumpe2fs").arg("-h").arg(image))?;
    let text = String::from_utf8_lossy(&out);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    match (field("Block count:"), field("Block size:")) {
        (Some(count), Some(size)) => Ok(count * size),
        _ => Err(NestedError::step("dumpe2fs", "no block count or size")),
    }
}

/// `/init` of L1: mounts, modules, loopback, then the payload; its output
/// goes to [`RESULTS_TTY`], its stderr to the console, and its exit status
/// ends the results before L1 powers off.
pub fn init_script(payload: &str, env: &[(&str, &str)]) -> String {
    let exports: String = env
        .iter()
        .map(|(k, v)| format!("export {k}='{v}'\n"))
        .collect();
    let modules: String = MODULES
        .iter()
        .map(|m| format!("insmod /lib/modules/{m}.ko || echo \"L1: insmod {m} failed\"\n"))
        .collect();
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin /var/lib\n\
         /bin/busybox --install -s\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mkdir -p /dev/pts && mount -t devpts devpts /dev/pts\n\
         mount -t tmpfs -o mode=1777 tmpfs /tmp\n\
         mount -t cgroup2 cgroup2 /sys/fs/cgroup || echo \"L1: no cgroup2\"\n\
         {modules}\
         ip link set lo up\n\
         hostname l1\n\
         {exports}\
         echo \"L1 UP $(cat /proc/uptime)\" > {RESULTS_TTY}\n\
         ( {payload} ) > {RESULTS_TTY} 2>/dev/console\n\
         echo \"{EXIT_MARK}$?\" > {RESULTS_TTY}\n\
         sync\n\
         poweroff -f\n"
    )
}
