//! The jail's second step: the VM directory (the working directory since
//! the first step) becomes the root, and the process drops to the VM's ids.

use std::sync::atomic::Ordering;

use super::early::mount;
use super::{JAILED, JailError, JailIds, check};

/// Enters the jail: after this only the VM directory exists, as `/`, and
/// no thread of the process has a capability or uid 0.
pub fn enter(ids: JailIds) -> Result<(), JailError> {
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
    std::env::set_current_dir("/").map_err(|e| JailError::new("chdir /", e))?;
    drop_ids(ids)?;
    JAILED.store(true, Ordering::SeqCst);
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

/// Becomes `ids` in every thread (glibc applies set*id calls to all of a
/// process's threads); leaving uid 0 clears each thread's capabilities.
fn drop_ids(ids: JailIds) -> Result<(), JailError> {
    // SAFETY: setgroups with an empty list reads no memory.
    let rc = unsafe { libc::setgroups(0, std::ptr::null()) };
    check(rc, "setgroups")?;
    // SAFETY: integers only.
    let rc = unsafe { libc::setresgid(ids.gid, ids.gid, ids.gid) };
    check(rc, "setresgid")?;
    // SAFETY: integers only.
    let rc = unsafe { libc::setresuid(ids.uid, ids.uid, ids.uid) };
    check(rc, "setresuid")?;
    // Fail closed: a capability still effective means the drop did not happen.
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
