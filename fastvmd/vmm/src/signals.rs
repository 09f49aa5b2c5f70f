//! SIGTERM and SIGINT stop the VM cleanly: they are blocked in every thread
//! and a dedicated thread waits for them and reports a stop.

use std::sync::mpsc::Sender;

use super::VmmError;
use super::exit::ExitEvent;

fn termination_set() -> libc::sigset_t {
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

/// Starts the thread that turns SIGTERM/SIGINT into a stop event.
pub fn forward_termination(events: Sender<ExitEvent>) -> Result<(), VmmError> {
    crate::threads::spawn(crate::seccomp::ThreadKind::Signals, "signals", move || {
        let set = termination_set();
        let mut sig: libc::c_int = 0;
        // SAFETY: waits on a valid set of signals blocked in this thread.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        let by = match (rc, sig) {
            (0, libc::SIGINT) => "SIGINT",
            _ => "SIGTERM",
        };
        let _ = events.send(ExitEvent::Stop(by));
    })
    .map(|_| ())
    .map_err(VmmError::Io)
}
