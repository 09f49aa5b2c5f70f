//! Every monitor thread starts here: named, of a [`ThreadKind`], and
//! confined by that kind's seccomp filter before it does anything else.
//! Threads made while the monitor is still building its VM (device
//! backends, the console of a restore, a restore's vCPU 0) install their
//! filters as soon as the jail's ids are known, then wait for the jail to
//! be entered to drop to those ids.

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

/// The jail's ids and filter mode are known: threads waiting for the jail
/// may install their filters.
pub fn filters_prepared() {
    let _state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    DECIDED.notify_all();
}

thread_local! {
    /// This thread confined itself already.
    static CONFINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Confines the calling thread as `kind`, once: its filter goes on as soon
/// as filters are prepared (while the jail is still being entered, so the
/// kernel's work on it is off the path to a running guest; the filter lets
/// the thread drop to the jail's ids and to no other), and its ids drop
/// when the jail is entered. A thread that cannot be confined ends the
/// monitor.
pub fn confine_current(kind: ThreadKind) {
    if CONFINED.get() {
        return;
    }
    let mut filtered = false;
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    while *state == Confinement::Pending {
        if !filtered && seccomp::is_prepared() {
            drop(state);
            install_filter(kind);
            filtered = true;
            state = STATE.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        state = DECIDED.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    let on = *state == Confinement::On;
    drop(state);
    if !on {
        return;
    }
    if !filtered {
        install_filter(kind);
    }
    let start = std::time::Instant::now();
    let dropped = super::jail::root::drop_this_thread();
    super::jail::add_cost(start.elapsed());
    if let Err(e) = dropped {
        tracing::error!("{e}: the monitor does not run unconfined");
        std::process::abort();
    }
    CONFINED.set(true);
}

/// Installs `kind`'s filter on this thread, or ends the monitor.
fn install_filter(kind: ThreadKind) {
    let start = std::time::Instant::now();
    let installed = seccomp::install(kind);
    super::jail::add_cost(start.elapsed());
    if let Err(e) = installed {
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
