//! The jail's first step, taken while the monitor has a single thread (so
//! every thread it makes inherits it): see the module above.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::{JailError, check};
use crate::net::tap::Tap;

/// malloc arenas of a jailed monitor: the main one only (its threads
/// rarely allocate). A thread arena's heap, the first time it shrinks,
/// makes glibc read `/proc/sys/vm/overcommit_memory` (`shrink_heap`), an
/// `openat` that no thread's filter allows: a vCPU thread freeing a large
/// buffer was killed for it. The main arena grows and shrinks with `brk`.
const MALLOC_ARENAS: libc::c_int = 1;

/// What the starter hands a monitor as open descriptors (the daemon hands
/// them as stdin and stdout, which lets it spawn without a fork).
#[derive(Debug, Default, Clone)]
pub struct Handed {
    /// An open tap (`--tap-fd`).
    pub tap_fd: Option<RawFd>,
    /// A tap to open by name, in the host's network namespace (`--tap`
    /// without `--tap-fd`; needs CAP_NET_ADMIN).
    pub tap_name: Option<String>,
    /// The network namespace to join (`--netns-fd`); a new, empty one
    /// when absent.
    pub netns_fd: Option<RawFd>,
    /// cgroups to join before anything else (`--cgroup`).
    pub cgroups: Vec<std::path::PathBuf>,
}

/// The jail's first step; returns the VM's tap, opened before the network
/// namespace changes. `dir` (created if missing) becomes the working
/// directory, which the monitor's relative paths then name.
pub fn confine_process(handed: &Handed, dir: &Path) -> Result<Option<Tap>, JailError> {
    // Threads made from now on wait for the jail before they do anything.
    crate::threads::jail_pending();
    // One malloc arena: otherwise a thread's first malloc may count CPUs
    // by opening /sys files, and a thread arena that shrinks opens a /proc
    // file; neither exists in the jail, nor may a filtered thread open it.
    // SAFETY: mallopt with integer arguments, before any other thread.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    // Charged to the VM's cgroups from the start.
    join_cgroups(&handed.cgroups).map_err(|e| JailError::new("join the VM's cgroup", e))?;
    let keep: Vec<RawFd> = handed
        .tap_fd
        .iter()
        .chain(&handed.netns_fd)
        .copied()
        .collect();
    close_all_except(&keep)?;
    let tap = take_tap(handed)?;
    drop_bounding_set()?;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(rc, "no_new_privs")?;
    // SAFETY: unshare takes flags only; this thread is the only one.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    check(rc, "mount namespace")?;
    // Nothing this namespace mounts reaches the host, nor the reverse.
    mount(
        None,
        c"/",
        libc::MS_REC | libc::MS_PRIVATE,
        "private mounts",
    )?;
    match handed.netns_fd {
        Some(fd) => {
            // SAFETY: the caller handed this descriptor over for us to own.
            let ns = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: setns on a descriptor we own; flags only.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            check(rc, "join the network namespace (--netns-fd)")?;
        }
        None => {
            // SAFETY: unshare takes flags only.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            check(rc, "network namespace")?;
        }
    }
    reopen_standard_streams(&keep)?;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::env::set_current_dir(dir))
        .map_err(|e| JailError::dir(dir, e))?;
    Ok(tap)
}

/// The unconfined start (`--no-jail`): the tap opened, `dir` entered.
pub fn unconfined(handed: &Handed, dir: &Path) -> Result<Option<Tap>, JailError> {
    join_cgroups(&handed.cgroups).map_err(|e| JailError::new("join the VM's cgroup", e))?;
    let tap = take_tap(handed)?;
    std::fs::create_dir_all(dir)
        .and_then(|()| std::env::set_current_dir(dir))
        .map_err(|e| JailError::dir(dir, e))?;
    Ok(tap)
}

fn take_tap(handed: &Handed) -> Result<Option<Tap>, JailError> {
    let tap_err = |e: crate::net::tap::TapError| JailError::new("tap", std::io::Error::other(e));
    match (handed.tap_fd, &handed.tap_name) {
        (Some(fd), _) => {
            // Moved above the standard streams, which are reopened.
            // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor; no pointers.
            let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            check(moved, "tap descriptor")?;
            // SAFETY: `moved` is a new descriptor nobody else owns.
            let owned = unsafe { OwnedFd::from_raw_fd(moved) };
            if fd > 2 {
                // SAFETY: the handed descriptor, now duplicated, is ours to
                // close (0-2 are pointed at /dev/null instead).
                unsafe { libc::close(fd) };
            }
            Tap::from_fd(owned).map(Some).map_err(tap_err)
        }
        (None, Some(name)) => Tap::open(name).map(Some).map_err(tap_err),
        (None, None) => Ok(None),
    }
}

/// Closes every descriptor from 3 up except `keep`, so nothing the starter
/// had open (a database, a listening socket) reaches the guest's side.
fn close_all_except(keep: &[RawFd]) -> Result<(), JailError> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|fd| **fd >= 3)
        .map(|fd| *fd as u32)
        .collect();
    keep.sort_unstable();
    let mut first = 3u32;
    for fd in keep.into_iter().chain([u32::MAX]) {
        if fd > first {
            // SAFETY: close_range takes integers only; the descriptors
            // closed belong to nothing in this single-threaded process.
            let rc = unsafe { libc::syscall(libc::SYS_close_range, first, fd - 1, 0) };
            check(rc as libc::c_int, "close inherited descriptors")?;
        }
        first = fd.saturating_add(1);
    }
    Ok(())
}

/// Handed descriptors among 0-2 were moved or consumed: point those streams
/// at `/dev/null` again.
fn reopen_standard_streams(keep: &[RawFd]) -> Result<(), JailError> {
    for fd in keep.iter().copied().filter(|fd| (0..3).contains(fd)) {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| JailError::new("open /dev/null", e))?;
        if null.as_raw_fd() != fd {
            // SAFETY: dup2 onto a standard stream number; both are open.
            let rc = unsafe { libc::dup2(null.as_raw_fd(), fd) };
            check(rc, "reopen a standard stream")?;
        } else {
            std::mem::forget(null);
        }
    }
    Ok(())
}

/// Empties the capability bounding set, so no later exec could gain one.
fn drop_bounding_set() -> Result<(), JailError> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
            let err = std::io::Error::last_os_error();
            // EINVAL: past the kernel's last capability.
            if err.raw_os_error() == Some(libc::EINVAL) {
                return Ok(());
            }
            return Err(JailError::new("drop the capability bounding set", err));
        }
    }
    Ok(())
}

/// mount(2) with no file system type and no data.
pub(super) fn mount(
    source: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    flags: libc::c_ulong,
    step: &'static str,
) -> Result<(), JailError> {
    let source = source.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string or null, as mount
    // allows when no file system type or data is given.
    let rc = unsafe {
        libc::mount(
            source,
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    check(rc, step)
}

/// Moves the calling process into each of `dirs` (a monitor joining its
/// VM's cgroups before it allocates anything).
fn join_cgroups(dirs: &[std::path::PathBuf]) -> std::io::Result<()> {
    for dir in dirs {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", procs.display())))?;
    }
    Ok(())
}
