//! What the agent does as PID 1: mount the basic filesystems, set the
//! hostname, bring up `lo`, and keep a login shell on the serial console.
//! Orphans are reaped by [`crate::reaper`].

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment every command starts from.
pub const BASE_ENV: [(&str, &str); 4] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("TERM", "linux"),
    ("LANG", "C.UTF-8"),
];
/// Hostname when `/etc/hostname` has none.
pub const DEFAULT_HOSTNAME: &str = "fastvm";
/// The console device.
pub const CONSOLE: &str = "/dev/ttyS0";
/// A console shell that ends sooner than this is restarted after a pause.
const RESPAWN_PAUSE: Duration = Duration::from_secs(1);

/// Filesystems mounted at start: (source, target, type, flags, data).
const MOUNTS: [(&str, &str, &str, libc::c_ulong, &str); 6] = [
    (
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ),
    ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=0620,ptmxmode=0666",
    ),
    (
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    ),
];

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Mounts one filesystem; one already mounted there is fine.
fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    let (source, target_c, fstype, data) = (cstr(source), cstr(target), cstr(fstype), cstr(data));
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EBUSY) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Sets the hostname from `/etc/hostname`, else [`DEFAULT_HOSTNAME`].
fn set_hostname() -> io::Result<()> {
    let name = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_HOSTNAME.into());
    // SAFETY: the pointer and length describe `name`'s bytes.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets `lo` up (`IFF_UP` over rtnetlink).
pub fn loopback_up() -> io::Result<()> {
    let mut rtnl = crate::rtnl::Rtnl::open()?;
    let lo = rtnl.link("lo")?;
    rtnl.set_link(lo.index, Some(true), None)
}

/// Sets up the guest as PID 1. Failures are printed and skipped: a guest
/// with a missing mount is still better than a kernel panic.
pub fn setup() {
    for (key, value) in BASE_ENV {
        // SAFETY: called from main before any other thread exists.
        unsafe { std::env::set_var(key, value) };
    }
    for (source, target, fstype, flags, data) in MOUNTS {
        if let Err(e) = mount(source, target, fstype, flags, data) {
            eprintln!("guest-agent: mount {fstype} on {target}: {e}");
        }
    }
    if let Err(e) = set_hostname() {
        eprintln!("guest-agent: hostname: {e}");
    }
    if let Err(e) = loopback_up() {
        eprintln!("guest-agent: lo up: {e}");
    }
}

/// Shells the console may run, in order of preference.
const SHELLS: [&str; 4] = ["bin/sh", "bin/bash", "bin/ash", "usr/bin/sh"];

/// The first of [`SHELLS`] under `root` that is an executable file.
pub fn find_shell(root: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    SHELLS.iter().map(|s| root.join(s)).find(|path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Runs one login shell (`shell`) on `console` and waits for it to end.
fn console_shell_once(console: &Path, shell: &Path) -> io::Result<()> {
    let tty = OpenOptions::new().read(true).write(true).open(console)?;
    let mut cmd = Command::new(shell);
    cmd.arg0("-sh");
    if Path::new("/root").is_dir() {
        cmd.current_dir("/root");
    }
    cmd.stdin(Stdio::from(tty.try_clone()?))
        .stdout(Stdio::from(tty.try_clone()?))
        .stderr(Stdio::from(tty));
    // SAFETY: setsid and ioctl are async-signal-safe; the closure touches
    // no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (_child, status) = crate::reaper::spawn(&mut cmd)?;
    let _ = status.recv();
    Ok(())
}

/// Keeps a login shell on `console`, starting a new one whenever it exits.
/// An image without a shell gets none: the console says so once and shows
/// the guest's output.
pub fn spawn_console_shell(console: PathBuf) {
    let Some(shell) = find_shell(Path::new("/")) else {
        let note = "guest-agent: this image has no shell (/bin/sh): the console shows the \
                    guest's output only; exec works as ever\n";
        if let Ok(mut tty) = OpenOptions::new().write(true).open(&console) {
            let _ = std::io::Write::write_all(&mut tty, note.as_bytes());
        }
        return;
    };
    let started = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            loop {
                let start = Instant::now();
                if let Err(e) = console_shell_once(&console, &shell) {
                    eprintln!("guest-agent: console shell on {}: {e}", console.display());
                }
                if start.elapsed() < RESPAWN_PAUSE {
                    std::thread::sleep(RESPAWN_PAUSE);
                }
            }
        });
    if let Err(e) = started {
        eprintln!("guest-agent: cannot start the console thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_console_shell_is_the_first_executable_one_or_none() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(find_shell(root.path()), None);
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        let bash = root.path().join("bin/bash");
        std::fs::write(&bash, "").unwrap();
        assert_eq!(find_shell(root.path()), None, "not executable");
        std::fs::set_permissions(&bash, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_shell(root.path()), Some(bash));
        let sh = root.path().join("bin/sh");
        std::fs::write(&sh, "").unwrap();
        std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_shell(root.path()), Some(sh));
    }
}
