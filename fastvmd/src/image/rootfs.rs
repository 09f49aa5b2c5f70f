//! The root filesystem: a staging tree with busybox-static (one binary and
//! a symlink per applet), `guest-agent` as `/sbin/init` and a few files in
//! `/etc`, written into a sparse ext4 image with `mkfs.ext4 -d`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use super::kernel::run_logged;
use super::{AGENT, ImageError, ROOTFS, io_err};

/// Directories created in the root filesystem.
const DIRS: [&str; 15] = [
    "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root",
    "var/tmp", "var/log", "mnt", "home",
];
/// Files written into `/etc`: (path, contents).
const ETC_FILES: [(&str, &str); 6] = [
    ("etc/hostname", "fastvm\n"),
    ("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
    ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
    ("etc/group", "root:x:0:\n"),
    ("etc/shells", "/bin/sh\n/bin/ash\n"),
    (
        "etc/profile",
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         export HOME=/root\nexport PS1='\\h:\\w\\$ '\n",
    ),
];

/// Lays out the staging tree in `staging` (which must not exist).
pub fn stage(staging: &Path, busybox: &Path, agent: &[u8]) -> Result<(), ImageError> {
    for dir in DIRS {
        let d = staging.join(dir);
        fs::create_dir_all(&d).map_err(io_err(&d))?;
    }
    for dir in ["tmp", "var/tmp"] {
        let d = staging.join(dir);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o1777)).map_err(io_err(&d))?;
    }
    let root = staging.join("root");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(io_err(&root))?;
    for (path, text) in ETC_FILES {
        let p = staging.join(path);
        fs::write(&p, text).map_err(io_err(&p))?;
    }
    let bb = staging.join("bin/busybox");
    fs::copy(busybox, &bb).map_err(io_err(busybox))?;
    fs::set_permissions(&bb, fs::Permissions::from_mode(0o755)).map_err(io_err(&bb))?;
    let init = staging.join("sbin/init");
    fs::write(&init, agent).map_err(io_err(&init))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).map_err(io_err(&init))?;
    for applet in applets(busybox)? {
        let link = staging.join(&applet);
        if applet == "sbin/init" || applet == "bin/busybox" || link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        symlink("/bin/busybox", &link).map_err(io_err(&link))?;
    }
    Ok(())
}

/// The applets of `busybox` as relative paths (`bin/sh`, `usr/bin/awk`, ...).
pub fn applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(io_err(busybox))?;
    if !out.status.success() {
        return Err(ImageError::Step {
            step: "busybox --list-full".into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.contains(".."))
        .collect())
}

/// Makes `out_dir/rootfs.ext4` (sparse, `size_gib` GiB) from `staging`, and
/// keeps a copy of the agent next to it. `out_dir` must not exist.
pub fn make_image(
    staging: &Path,
    out_dir: &Path,
    agent: &[u8],
    size_gib: u64,
    log: &Path,
    progress: &dyn Fn(&str),
) -> Result<(), ImageError> {
    let tmp = out_dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let image = tmp.join(ROOTFS);
    let file = fs::File::create(&image).map_err(io_err(&image))?;
    file.set_len(size_gib << 30).map_err(io_err(&image))?;
    drop(file);
    progress(&format!("rootfs: mkfs.ext4 -d ({size_gib} GiB sparse)"));
    run_logged(
        "mkfs.ext4",
        Command::new(super::tools::which("mkfs.ext4").unwrap_or_else(|| "mkfs.ext4".into()))
            // The file is sparse, so already zero: no need to write the
            // journal's zeros (which would allocate 64 MiB per VM disk).
            .args(["-q", "-F", "-L", "fastvm-root"])
            .args(["-E", "root_owner=0:0,lazy_journal_init=1", "-d"])
            .arg(staging)
            .arg(&image),
        log,
        progress,
    )?;
    let agent_copy = tmp.join(AGENT);
    fs::write(&agent_copy, agent).map_err(io_err(&agent_copy))?;
    fs::set_permissions(&agent_copy, fs::Permissions::from_mode(0o755))
        .map_err(io_err(&agent_copy))?;
    fs::rename(&tmp, out_dir).map_err(io_err(out_dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_holds_init_busybox_applets_and_etc() {
        let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
        else {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIP staging_holds_init_busybox_applets_and_etc: busybox is not installed"
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("root");
        stage(&staging, busybox, b"agent bytes").unwrap();
        assert_eq!(fs::read(staging.join("sbin/init")).unwrap(), b"agent bytes");
        let mode = fs::metadata(staging.join("sbin/init"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(staging.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert!(staging.join("bin/busybox").is_file());
        assert_eq!(
            fs::read_to_string(staging.join("etc/hostname")).unwrap(),
            "fastvm\n"
        );
        assert!(staging.join("proc").is_dir() && staging.join("dev").is_dir());
    }
}
