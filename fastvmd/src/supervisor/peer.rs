//! Is the socket the daemon just connected to in a VM directory served by
//! that VM's monitor? The jailed monitor owns its directory and could swap
//! `control.sock`, `vsock.sock` or `console.sock` for a symlink to another
//! VM's socket (the daemon, not the monitor, would follow it), so after
//! each connect the daemon checks the listening peer's pid (`SO_PEERCRED`:
//! the process that called `listen`) against the monitor that holds the
//! directory ([`super::monitor_pid`], which trusts the lock file only when
//! that pid's command line names this directory).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

/// The pid of the process at the other end of a Unix stream.
pub fn peer_pid(stream: &impl AsFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes a `struct ucred` of at most `len` bytes
    // into `cred`, which is one; the descriptor is borrowed, open.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(cred.pid).map_err(|_| io::Error::other("no peer pid"))
}

/// Ok when `stream` is served by the monitor holding VM directory `dir`.
pub fn ensure_monitor(stream: &impl AsFd, dir: &Path) -> io::Result<()> {
    ensure_pid(peer_pid(stream)?, dir)
}

/// Unit tests of a single layer serve VM sockets from fakes, not monitors.
#[cfg(test)]
pub(crate) static ACCEPT_FAKE_MONITORS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Ok when `pid` is the monitor holding VM directory `dir`.
pub fn ensure_pid(pid: u32, dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    if ACCEPT_FAKE_MONITORS.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    match super::monitor_pid(dir) {
        Some(monitor) if monitor == pid => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a socket of this VM is not served by its monitor (refused)",
        )),
    }
}
