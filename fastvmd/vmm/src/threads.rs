//! Every monitor thread starts here: named, of a [`ThreadKind`], and
//! confined by that kind's seccomp filter before it does anything else.
//! Threads made while the monitor is still building its VM (device
//! backends, the console of a restore) wait until the jail is entered.

use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;

use super::seccomp::{self, ThreadKind};

/// Whether threads must confine themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confinement {
    /// Not a jailed monitor (tests, `--no-jail`): threads run as they are.
    Off,
    /// A jail is being entered: threads wait for it.
    Pending,
    /// The jail is in place and filters are compiled: threads install theirs.
    On,
}

static STATE: Mutex<Confinement> = Mutex::new(Confinement::Off);
static DECIDED: Condvar = Condvar::new();

fn set(state: Confinement) {
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = state;
    DECIDED.notify_all();
}

/// A jail is coming: threads started from now on wait for it.
pub fn jail_pending() {
    set(Confinement::Pending);
}

/// The jail is in place: waiting threads install their filters.
pub fn jail_entered() {
    set(Confinement::On);
}

/// Confines the calling thread as `kind` (waiting for the jail if one is
/// being entered). A thread that cannot be confined ends the monitor.
pub fn confine_current(kind: ThreadKind) {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    while *state == Confinement::Pending {
        state = DECIDED.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    let on = *state == Confinement::On;
    drop(state);
    if !on {
        return;
    }
    let start = std::time::Instant::now();
    let confined = super::jail::root::drop_this_thread()
        .map_err(|e| e.to_string())
        .and_then(|()| seccomp::install(kind));
    super::jail::add_cost(start.elapsed());
    if let Err(e) = confined {
        tracing::error!("{e}: the monitor does not run unconfined");
        std::process::abort();
    }
}

/// Starts thread `name` of `kind`, confined before `f` runs.
pub fn spawn<F, T>(kind: ThreadKind, name: &str, f: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            confine_current(kind);
            f()
        })
}
