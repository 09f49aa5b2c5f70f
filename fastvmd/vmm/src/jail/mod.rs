//! The monitor jail: a monitor confines itself before its guest runs, in
//! two steps, the way Firecracker's jailer confines Firecracker.
//!
//! [`early::confine_process`], first thing in `fastvmd vmm`, while the
//! process has one thread: every descriptor it was not handed on purpose
//! closed, the capability bounding set emptied, no_new_privs set, a mount
//! namespace of its own (every mount private to it) and a network namespace
//! with nothing in it (the daemon's shared empty one, or a new one). Every
//! thread made afterwards inherits all of that.
//!
//! [`root::enter`], once everything the VM needs from the host is open
//! (`/dev/kvm`, kernel, disk, snapshot, tap, sockets) and before a vCPU
//! runs: the VM directory becomes the root (bind-mounted nosuid, nodev,
//! noexec; `pivot_root`; the old root detached), it is given to the VM's
//! uid/gid, and every thread drops to them, which clears every capability.
//!
//! There is no PID namespace: a process cannot start threads after
//! `unshare(CLONE_NEWPID)`, so one would cost a fork and a second pid per
//! VM for the daemon to track. What it would give is had otherwise: the
//! jail has no `/proc` (nothing to list), and its uid is the VM's alone
//! with no capability left, so `kill` and `ptrace` of any other process
//! fail with EPERM.

pub mod early;
pub mod ids;
pub mod root;
pub mod vm_files;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

pub use ids::JailIds;

/// Set once [`root::enter`] succeeded: paths outside the VM directory no
/// longer exist for this process.
static JAILED: AtomicBool = AtomicBool::new(false);

/// Time spent in the jail's steps, in nanoseconds.
static COST_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts `spent` as time the jail cost.
pub fn add_cost(spent: std::time::Duration) {
    COST_NS.fetch_add(spent.as_nanos() as u64, Ordering::Relaxed);
}

/// What entering the jail cost so far, in microseconds.
pub fn cost_us() -> u64 {
    COST_NS.load(Ordering::Relaxed) / 1000
}

/// True once this process is inside its jail.
pub fn is_jailed() -> bool {
    JAILED.load(Ordering::SeqCst)
}

/// Why the jail could not be entered; the monitor refuses to run unconfined.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JailError(String);

impl JailError {
    /// The failed `step` with the OS error just seen.
    pub fn last_os(step: &'static str) -> JailError {
        JailError::new(step, io::Error::last_os_error())
    }

    /// The failed `step` with `source`.
    pub fn new(step: &'static str, source: io::Error) -> JailError {
        let hint = if source.raw_os_error() == Some(libc::EPERM) {
            " (the jail needs root; `--no-jail` runs the monitor unconfined, for debugging)"
        } else {
            ""
        };
        JailError(format!("jail: {step}: {source}{hint}"))
    }

    /// The VM directory cannot be created or entered.
    pub fn dir(dir: &std::path::Path, source: io::Error) -> JailError {
        JailError(format!(
            "--dir {}: cannot create or enter: {source}",
            dir.display()
        ))
    }
}

/// `rc` as a result: negative means the OS error of `step`.
pub(crate) fn check(rc: libc::c_int, step: &'static str) -> Result<(), JailError> {
    if rc < 0 {
        Err(JailError::last_os(step))
    } else {
        Ok(())
    }
}

/// The VM's tap, opened before the first step changed the network
/// namespace; the NIC takes it when the machine is built.
static EARLY_TAP: std::sync::Mutex<Option<crate::net::tap::Tap>> = std::sync::Mutex::new(None);

/// Keeps `tap` for [`take_early_tap`].
pub fn keep_early_tap(tap: crate::net::tap::Tap) {
    *EARLY_TAP.lock().unwrap_or_else(|e| e.into_inner()) = Some(tap);
}

/// The tap opened at start, if its name is `name`.
pub fn take_early_tap(name: &str) -> Option<crate::net::tap::Tap> {
    let mut slot = EARLY_TAP.lock().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_some_and(|t| t.name() == name) {
        slot.take()
    } else {
        None
    }
}

/// The name of the tap opened at start, while it waits to be taken.
pub fn early_tap_name() -> Option<String> {
    let slot = EARLY_TAP.lock().unwrap_or_else(|e| e.into_inner());
    slot.as_ref().map(|t| t.name().to_string())
}
