//! The jail's second step: the VM directory (the working directory since
//! the first step) becomes the root, and the process drops to the VM's ids.

use std::sync::atomic::Ordering;

use super::early::mount;
use super::{JAILED, JailError, JailIds, check};
use crate::seccomp::SeccompMode;

/// Enters the jail: after this only the VM directory exists, as `/`, and
/// the calling thread has no capability and not uid 0; every other thread
/// drops to the same ids before it does anything more
/// ([`crate::threads::confine_current`]).
pub fn enter(ids: JailIds, seccomp: SeccompMode) -> Result<(), JailError> {
    enter_root(ids)?;
    drop_to(ids, seccomp)
}

/// The jail's file system half: the VM directory, given to `ids`, becomes
/// `/` (bind-mounted nosuid, nodev, noexec). The process keeps its ids and
/// capabilities until [`drop_to`]; what it opens from here on is named
/// relatively to the VM directory.
pub fn enter_root(ids: JailIds) -> Result<(), JailError> {
    // The monitor writes its snapshots and exit record here.
    // SAFETY: chown of a NUL-terminated path; integers otherwise.
    let rc = unsafe { libc::chown(c".".as_ptr(), ids.uid, ids.gid) };
    check(rc, "give the VM directory to its ids")?;
    // pivot_root needs the new root to be a mount; nothing in it may be
    // executed, nor act as a device or a set-uid file.
    mount(Some(c"."), c".", libc::MS_BIND, "bind the VM directory")?;
    // The bind mount hides the directory's old inode from "."; enter the mount.
    std::env::set_current_dir(std::env::current_dir().map_err(|e| JailError::new("getcwd", e))?)
        .map_err(|e| JailError::new("enter the bind mount", e))?;
    mount(
        None,
        c".",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "remount the VM directory nosuid,nodev,noexec",
    )?;
    change_root()?;
    std::env::set_current_dir("/").map_err(|e| JailError::new("chdir /", e))
}

/// The jail's identity half: this thread drops to `ids` (no capability
/// left), and the threads waiting for the jail drop theirs and install
/// their seccomp filters (compiled for `seccomp`).
pub fn drop_to(ids: JailIds, seccomp: SeccompMode) -> Result<(), JailError> {
    prepare(ids, seccomp);
    drop_ids(ids)?;
    JAILED.store(true, Ordering::SeqCst);
    // Threads waiting for the jail install their filters now.
    crate::threads::jail_entered();
    Ok(())
}

/// Makes the working directory (a mount) the root. pivot_root(".", ".")
/// stacks the old root on the new one and detaching it leaves the VM
/// directory alone as `/`. A host running from its initramfs cannot pivot
/// away from it (EINVAL): there the VM directory is moved over `/` and
/// chrooted into, as container runtimes do; what stays mounted beneath is
/// out of reach once no capability (CAP_SYS_CHROOT included) is left.
fn change_root() -> Result<(), JailError> {
    // SAFETY: both arguments are NUL-terminated paths.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    if rc == 0 {
        // SAFETY: umount2 of a NUL-terminated path.
        return check(
            unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) },
            "detach the host's root",
        );
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(JailError::new("pivot_root", err));
    }
    mount(
        Some(c"."),
        c"/",
        libc::MS_MOVE,
        "move the VM directory over /",
    )?;
    // SAFETY: chroot of a NUL-terminated path.
    check(unsafe { libc::chroot(c".".as_ptr()) }, "chroot")
}

/// The ids the jail drops to, for threads confining themselves.
static IDS: std::sync::OnceLock<JailIds> = std::sync::OnceLock::new();

/// The jail's ids and filter mode are known (from the arguments, before
/// the jail is entered): threads waiting for the jail may install their
/// filters now, off the path to a running guest, and drop their ids when
/// it is entered.
pub fn prepare(ids: JailIds, seccomp: SeccompMode) {
    let _ = IDS.set(ids);
    crate::seccomp::prepare(seccomp, ids);
    crate::threads::filters_prepared();
}

/// Drops the calling thread to the jail's ids, if it has not yet (each
/// thread that existed before the jail does so as it confines itself;
/// threads made later are born with them). Raw syscalls: glibc's wrappers
/// would stop every thread of the process to change them all at once,
/// which costs a signal per thread on the restore path.
pub fn drop_this_thread() -> Result<(), JailError> {
    match IDS.get() {
        Some(ids) => drop_ids(*ids),
        None => Err(JailError::new(
            "drop ids",
            std::io::Error::other("the jail has no ids yet"),
        )),
    }
}

/// Becomes `ids` in the calling thread; leaving uid 0 clears its
/// capabilities, which is checked (fail closed).
fn drop_ids(ids: JailIds) -> Result<(), JailError> {
    // SAFETY: geteuid takes no arguments.
    let euid = unsafe { libc::syscall(libc::SYS_geteuid) };
    if euid != i64::from(ids.uid) {
        // SAFETY: setgroups with an empty list reads no memory.
        let rc = unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) };
        check(rc as libc::c_int, "setgroups")?;
        // SAFETY: integers only.
        let rc = unsafe { libc::syscall(libc::SYS_setresgid, ids.gid, ids.gid, ids.gid) };
        check(rc as libc::c_int, "setresgid")?;
        // SAFETY: integers only.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, ids.uid, ids.uid, ids.uid) };
        check(rc as libc::c_int, "setresuid")?;
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two `cap_user_data_t` for version 3, which
    // `data` is; `header` is the matching header.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    check(rc as libc::c_int, "capget")?;
    if data.iter().any(|d| d.effective != 0 || d.permitted != 0) {
        return Err(JailError::new(
            "drop capabilities",
            std::io::Error::other("capabilities remain after leaving uid 0"),
        ));
    }
    Ok(())
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
