//! Runs one `Exec` request: the command in its own process group, stdout
//! and stderr read as they come and kept up to their caps (the rest is read
//! and dropped, so the command never blocks on a full pipe and the agent's
//! memory never grows past the caps).
//!
//! - A command that runs past `timeoutMs` gets SIGTERM on its whole process
//!   group (children and grandchildren), then SIGKILL after [`KILL_GRACE`];
//!   the result has `timedOut` set and exit code [`TIMEOUT_EXIT_CODE`].
//! - When the host goes away mid-command (the connection hangs up), the
//!   group is killed the same way and no result is produced.
//! - A program that is not found gives exit code 127, one that cannot be
//!   executed (or a `cwd` that is not a directory, or a `user` the image
//!   does not know) 126, with the reason on stderr, like a shell.
//! - With `user`, the command runs as that user and group ([`crate::user`]).
//! - Once the command exits, output still arriving from background
//!   processes is read for at most [`LINGER`]; they are not killed.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdout, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use fastvm_proto::agent::{CappedOutput, ExecRequest, ExecResult};

use crate::output::to_text;
use crate::reaper::{self, WaitStatus};

/// Time between SIGTERM and SIGKILL when a command is stopped.
pub const KILL_GRACE: Duration = Duration::from_millis(500);
/// How long output is still read after the command exited.
pub const LINGER: Duration = Duration::from_millis(100);
pub use fastvm_proto::agent::TIMEOUT_EXIT_CODE;
/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Runs `req`. `hangup` is the host connection: when it hangs up, the command
/// is killed and `None` returned.
pub fn run(req: &ExecRequest, hangup: Option<BorrowedFd<'_>>) -> Option<ExecResult> {
    let start = Instant::now();
    let mut stdout = CappedOutput::new(req.max_stdout);
    let mut stderr = CappedOutput::new(req.max_stderr);
    let finish = |code: i32, stdout: CappedOutput, stderr: CappedOutput, timed_out: bool| {
        Some(ExecResult {
            id: req.id,
            exit_code: code,
            stdout_truncated: stdout.truncated,
            stderr_truncated: stderr.truncated,
            stdout: to_text(stdout),
            stderr: to_text(stderr),
            timed_out,
            duration_ms: start.elapsed().as_millis() as u64,
        })
    };
    let mut cmd =
        match crate::command::build(&req.argv, &req.env, req.cwd.as_deref(), req.user.as_deref()) {
            Ok(cmd) => cmd,
            Err(refusal) => {
                stderr.push(refusal.line().as_bytes());
                return finish(refusal.exit_code, stdout, stderr, false);
            }
        };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let (mut child, status_rx) = match reaper::spawn(&mut cmd) {
        Ok(spawned) => spawned,
        Err(e) => {
            let refusal = crate::command::not_started(&req.argv[0], &e);
            stderr.push(refusal.line().as_bytes());
            return finish(refusal.exit_code, stdout, stderr, false);
        }
    };
    let pid = child.id() as libc::pid_t;
    let pipes = Pipes {
        out: child.stdout.take(),
        err: child.stderr.take(),
    };
    let deadline = req.timeout_ms.map(|ms| start + Duration::from_millis(ms));
    let mut run = Running {
        pid,
        pidfd: pidfd_open(pid),
        status_rx,
        pipes,
        status: None,
    };
    let ended = run.pump(&mut stdout, &mut stderr, deadline, hangup);
    match ended {
        Ended::Exited => {
            run.linger(&mut stdout, &mut stderr);
            let code = run.status.map_or(-1, WaitStatus::exit_code);
            finish(code, stdout, stderr, false)
        }
        Ended::TimedOut => {
            run.stop(&mut stdout, &mut stderr);
            finish(TIMEOUT_EXIT_CODE, stdout, stderr, true)
        }
        Ended::HungUp => {
            run.stop(&mut stdout, &mut stderr);
            None
        }
    }
}

/// Why [`Running::pump`] returned.
enum Ended {
    Exited,
    TimedOut,
    HungUp,
}

struct Pipes {
    out: Option<ChildStdout>,
    err: Option<ChildStderr>,
}

/// A command in flight.
struct Running {
    pid: libc::pid_t,
    /// Readable once the command ends; `None` on kernels without pidfds
    /// (then the status channel is polled every few milliseconds).
    pidfd: Option<OwnedFd>,
    status_rx: Receiver<WaitStatus>,
    pipes: Pipes,
    status: Option<WaitStatus>,
}

/// A descriptor that becomes readable when `pid` ends; `None` on kernels
/// without pidfds.
pub fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Milliseconds for `poll` to wait until `until` (forever when `None`).
pub fn poll_ms(until: Option<Instant>) -> i32 {
    match until {
        None => -1,
        Some(t) => {
            let left = t.saturating_duration_since(Instant::now());
            // Round up so a poll never returns just before the deadline.
            (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
        }
    }
}

/// Reads what is available from `pipe` into `out`; drops the pipe at EOF.
fn drain<R: Read>(pipe: &mut Option<R>, out: &mut CappedOutput, buf: &mut [u8]) {
    let Some(reader) = pipe.as_mut() else { return };
    match reader.read(buf) {
        Ok(0) => *pipe = None,
        Ok(n) => out.push(&buf[..n]),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(_) => *pipe = None,
    }
}

impl Running {
    fn exited(&mut self) -> bool {
        if self.status.is_none()
            && let Ok(status) = self.status_rx.try_recv()
        {
            self.status = Some(status);
        }
        self.status.is_some()
    }

    /// Reads output until the command exits, the deadline passes or the
    /// host hangs up.
    fn pump(
        &mut self,
        stdout: &mut CappedOutput,
        stderr: &mut CappedOutput,
        deadline: Option<Instant>,
        hangup: Option<BorrowedFd<'_>>,
    ) -> Ended {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if self.exited() {
                return Ended::Exited;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ended::TimedOut;
            }
            let mut fds = Vec::with_capacity(4);
            let mut push = |fd: Option<BorrowedFd<'_>>, events: i16| {
                fds.push(libc::pollfd {
                    fd: fd.map_or(-1, |f| f.as_raw_fd()),
                    events,
                    revents: 0,
                });
            };
            push(self.pipes.out.as_ref().map(|p| p.as_fd()), libc::POLLIN);
            push(self.pipes.err.as_ref().map(|p| p.as_fd()), libc::POLLIN);
            push(self.pidfd.as_ref().map(|p| p.as_fd()), libc::POLLIN);
            push(hangup, libc::POLLRDHUP);
            let mut wait = poll_ms(deadline);
            if self.pidfd.is_none() {
                wait = if wait < 0 { 5 } else { wait.min(5) };
            }
            // SAFETY: `fds` is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
            if n < 0 {
                continue; // EINTR
            }
            let ready = |i: usize| fds[i].revents != 0;
            if ready(0) {
                drain(&mut self.pipes.out, stdout, &mut buf);
            }
            if ready(1) {
                drain(&mut self.pipes.err, stderr, &mut buf);
            }
            if ready(2) {
                // The command ended; the reaper delivers its status shortly.
                if let Ok(status) = self.status_rx.recv_timeout(Duration::from_secs(5)) {
                    self.status = Some(status);
                }
                self.pidfd = None;
            }
            if ready(3) {
                return Ended::HungUp;
            }
        }
    }

    /// After the command exited: read what is still coming, briefly.
    fn linger(&mut self, stdout: &mut CappedOutput, stderr: &mut CappedOutput) {
        let until = Instant::now() + LINGER;
        let mut buf = vec![0u8; READ_CHUNK];
        while (self.pipes.out.is_some() || self.pipes.err.is_some()) && Instant::now() < until {
            let mut fds = [
                pollfd_of(self.pipes.out.as_ref().map(|p| p.as_fd())),
                pollfd_of(self.pipes.err.as_ref().map(|p| p.as_fd())),
            ];
            // SAFETY: `fds` is a valid array of two pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, poll_ms(Some(until))) };
            if n <= 0 {
                continue;
            }
            if fds[0].revents != 0 {
                drain(&mut self.pipes.out, stdout, &mut buf);
            }
            if fds[1].revents != 0 {
                drain(&mut self.pipes.err, stderr, &mut buf);
            }
        }
    }

    /// Stops the whole process group: SIGTERM, then SIGKILL after the grace
    /// period, reading output meanwhile.
    fn stop(&mut self, stdout: &mut CappedOutput, stderr: &mut CappedOutput) {
        signal_group(self.pid, libc::SIGTERM);
        let _ = self.pump(stdout, stderr, Some(Instant::now() + KILL_GRACE), None);
        signal_group(self.pid, libc::SIGKILL);
        if !self.exited()
            && let Ok(status) = self.status_rx.recv_timeout(Duration::from_secs(5))
        {
            self.status = Some(status);
        }
    }
}

fn pollfd_of(fd: Option<BorrowedFd<'_>>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.map_or(-1, |f| f.as_raw_fd()),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Sends `signal` to process group `pgid` (gone already is fine).
pub fn signal_group(pgid: libc::pid_t, signal: i32) {
    // SAFETY: kill with a negative pid signals that process group; no memory
    // is involved. ESRCH (the group is gone) is fine.
    unsafe {
        libc::kill(-pgid, signal);
    }
}
