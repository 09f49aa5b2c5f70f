//! The one place that waits for child processes.
//!
//! As PID 1 (or a child subreaper) the agent inherits every orphan in the
//! guest and must reap them, so a thread waits for *any* child
//! (`waitpid(-1)`). Processes the agent starts itself are registered at
//! spawn time, under the same lock the reaper takes before delivering a
//! status, so their exit status always reaches the thread that wants it;
//! every other child is reaped and forgotten.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// How a child ended, as `waitpid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitStatus(pub i32);

impl WaitStatus {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn exit_code(self) -> i32 {
        let s = self.0;
        if libc::WIFEXITED(s) {
            libc::WEXITSTATUS(s)
        } else if libc::WIFSIGNALED(s) {
            128 + libc::WTERMSIG(s)
        } else {
            -1
        }
    }
}

/// Children spawned by the agent, waiting for their status.
struct Registry {
    waiting: Mutex<HashMap<libc::pid_t, SyncSender<WaitStatus>>>,
    /// Signalled on every spawn, so the reaper resumes after `ECHILD`.
    spawned: Condvar,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Registry {
            waiting: Mutex::new(HashMap::new()),
            spawned: Condvar::new(),
        };
        let started = std::thread::Builder::new()
            .name("reaper".into())
            .spawn(reap_forever);
        if let Err(e) = started {
            eprintln!("guest-agent: cannot start the reaper thread: {e}");
        }
        registry
    })
}

/// Starts the reaper (idempotent). Call it early: children and orphans are
/// reaped from then on.
pub fn start() {
    let _ = registry();
}

/// Spawns `cmd` and returns the child with a receiver for its exit status.
/// Never call `wait` on the returned [`Child`]: the reaper owns that.
pub fn spawn(cmd: &mut Command) -> io::Result<(Child, Receiver<WaitStatus>)> {
    let reg = registry();
    let mut waiting = reg.waiting.lock().unwrap_or_else(|p| p.into_inner());
    let child = cmd.spawn()?;
    let (tx, rx) = sync_channel(1);
    waiting.insert(child.id() as libc::pid_t, tx);
    drop(waiting);
    reg.spawned.notify_all();
    Ok((child, rx))
}

fn reap_forever() {
    loop {
        // Peek at the next ended child without reaping it yet: a spawn in
        // progress (holding the lock) may still reap or register it.
        // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only to `info`, a valid local.
        let rc = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        let reg = registry();
        if rc == 0 {
            // SAFETY: waitid succeeded with WEXITED, so si_pid is set.
            let pid = unsafe { info.si_pid() };
            let mut waiting = reg.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`, a valid local.
            let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if reaped == pid
                && let Some(tx) = waiting.remove(&pid)
            {
                let _ = tx.try_send(WaitStatus(status));
            }
            continue;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // ECHILD: no children now. Orphans only come from our descendants,
        // so sleep until the next spawn. Checking again under the lock means
        // a spawn cannot slip in between the check and the wait.
        let waiting = reg.waiting.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: as above; WNOHANG makes it return at once.
        let rc = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            )
        };
        if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            let _ = reg
                .spawned
                .wait_timeout(waiting, Duration::from_millis(500));
        }
    }
}
