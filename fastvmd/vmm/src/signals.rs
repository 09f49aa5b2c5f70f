//! SIGTERM and SIGINT stop the VM cleanly: they are blocked in every thread
//! and the service loop ([`crate::service`]) reads them from a signalfd and
//! reports a stop.

use super::VmmError;

/// SIGTERM and SIGINT.
pub fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it and
    // sigaddset only touches that local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in this thread and every thread it starts later.
pub fn block_termination() -> Result<(), VmmError> {
    let set = termination_set();
    // SAFETY: changes this thread's signal mask with a valid set.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(VmmError::Io(std::io::Error::from_raw_os_error(rc)));
    }
    Ok(())
}
