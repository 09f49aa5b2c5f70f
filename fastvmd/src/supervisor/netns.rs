//! The empty network namespace every jailed monitor joins (`--netns-fd`):
//! made once per daemon, so a monitor start pays a `setns` (microseconds)
//! instead of creating a namespace (~0.4 ms here). In it a monitor reaches
//! no interface and no abstract Unix socket of the host; its tap was opened
//! before it joined.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

static SHARED: OnceLock<Result<OwnedFd, String>> = OnceLock::new();

/// The shared namespace, made on first use.
pub fn shared() -> Result<BorrowedFd<'static>, String> {
    SHARED
        .get_or_init(make)
        .as_ref()
        .map(|fd| fd.as_fd())
        .map_err(Clone::clone)
}

fn make() -> Result<OwnedFd, String> {
    // A thread of its own: unshare changes only the calling thread's
    // namespace, and the thread ends once the namespace has a descriptor.
    std::thread::spawn(|| {
        // SAFETY: unshare takes flags only and affects this thread alone.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "cannot make the monitors' network namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
        File::open("/proc/thread-self/ns/net")
            .map(OwnedFd::from)
            .map_err(|e| format!("cannot open the monitors' network namespace: {e}"))
    })
    .join()
    .unwrap_or_else(|_| Err("the namespace thread panicked".into()))
}
