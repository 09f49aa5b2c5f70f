//! The output thread of a streaming exec: sends the command's output as
//! data frames as soon as it is read (at most `DATA_CHUNK` each), enforces
//! `timeoutMs` (SIGTERM to everything the command started, SIGKILL after
//! [`KILL_GRACE`], exit code 124 and `timedOut`), and sends `ExecExit` as
//! the stream's last frame once the command has exited and its output is
//! drained (pipes at EOF, the terminal's master at EIO). The exit status
//! comes from the reaper ([`crate::reaper`]); a pidfd says when to look.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use fastvm_proto::agent::{DATA_CHUNK, ExecExit, Frame, TIMEOUT_EXIT_CODE};

use crate::exec::{KILL_GRACE, poll_ms};
use crate::reaper::WaitStatus;
use crate::stream_exec::ExecStream;
use crate::streams::{Stream, StreamCtx};

/// After the SIGKILL of a timeout, how long output held open by a process
/// that left the group is still waited for.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);
/// Longest sleep of the output thread (it then checks for a hang-up).
const MAX_WAIT: Duration = Duration::from_millis(250);

/// One of the command's outputs and the channel its bytes go on.
pub(crate) struct Output {
    pub(crate) file: File,
    pub(crate) channel: u8,
}

/// The output thread of one streaming exec.
pub(crate) struct Pump {
    pub(crate) ctx: StreamCtx,
    pub(crate) id: u64,
    pub(crate) stream: Arc<ExecStream>,
    pub(crate) outputs: Vec<Output>,
    /// Readable once the command ends; `None` on kernels without pidfds
    /// (then the status is looked for every few milliseconds).
    pub(crate) pidfd: Option<OwnedFd>,
    pub(crate) status_rx: Receiver<WaitStatus>,
    pub(crate) status: Option<WaitStatus>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) begun: Instant,
}

impl Pump {
    pub(crate) fn run(mut self) {
        let mut buf = vec![0u8; DATA_CHUNK];
        let mut timed_out = false;
        let mut kill_at: Option<Instant> = None;
        let mut give_up_at: Option<Instant> = None;
        loop {
            if self.status.is_none() {
                self.status = self.status_rx.try_recv().ok();
            }
            let hung_up = self.stream.hung_up.load(Ordering::SeqCst);
            let drained =
                self.outputs.is_empty() || give_up_at.is_some_and(|t| Instant::now() >= t);
            if self.status.is_some() && (hung_up || drained) {
                if hung_up {
                    return;
                }
                break;
            }
            let now = Instant::now();
            if !timed_out && self.deadline.is_some_and(|d| now >= d) {
                timed_out = true;
                self.stream.kill(libc::SIGTERM);
                kill_at = Some(now + KILL_GRACE);
            }
            if kill_at.is_some_and(|t| now >= t) {
                self.stream.kill(libc::SIGKILL);
                kill_at = None;
                give_up_at = Some(now + DRAIN_AFTER_KILL);
            }
            let wake = [
                self.deadline.filter(|_| !timed_out),
                kill_at,
                give_up_at,
                Some(now + MAX_WAIT),
            ]
            .into_iter()
            .flatten()
            .min();
            self.wait_and_read(wake, &mut buf);
        }
        if kill_at.is_some() {
            // Timed out and ended before the SIGKILL: anything left goes too.
            self.stream.kill(libc::SIGKILL);
        }
        let exit_code = match self.status {
            _ if timed_out => TIMEOUT_EXIT_CODE,
            Some(status) => status.exit_code(),
            None => -1,
        };
        let exit = ExecExit {
            id: self.id,
            exit_code,
            timed_out,
            duration_ms: self.begun.elapsed().as_millis() as u64,
        };
        let _ = self.ctx.finish(self.id, &Frame::ExecExit(exit));
        // The stdin thread stops even if the host's last bytes are unread.
        self.stream.input.close();
    }

    /// Waits until output, the command's end or `wake`, and reads what came.
    fn wait_and_read(&mut self, wake: Option<Instant>, buf: &mut [u8]) {
        let mut fds: Vec<libc::pollfd> = self
            .outputs
            .iter()
            .map(|o| pollfd(o.file.as_raw_fd()))
            .collect();
        if let Some(pidfd) = &self.pidfd {
            fds.push(pollfd(pidfd.as_raw_fd()));
        }
        let mut wait = poll_ms(wake);
        if self.pidfd.is_none() && self.status.is_none() {
            wait = if wait < 0 { 5 } else { wait.min(5) };
        }
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if n <= 0 {
            return;
        }
        if self.pidfd.is_some() && fds.last().is_some_and(|p| p.revents != 0) {
            // The command ended; the reaper delivers its status shortly.
            if let Ok(status) = self.status_rx.recv_timeout(Duration::from_secs(5)) {
                self.status = Some(status);
            }
            self.pidfd = None;
        }
        let ready: Vec<bool> = fds[..self.outputs.len()]
            .iter()
            .map(|p| p.revents != 0)
            .collect();
        let mut index = 0;
        self.outputs.retain_mut(|output| {
            let keep = !ready[index] || read_once(output, buf, &self.ctx, self.id, &self.stream);
            index += 1;
            keep
        });
    }
}

/// Reads one chunk of `output` and sends it; `false` once the output ended.
fn read_once(
    output: &mut Output,
    buf: &mut [u8],
    ctx: &StreamCtx,
    id: u64,
    stream: &ExecStream,
) -> bool {
    match output.file.read(buf) {
        Ok(0) => false,
        Ok(n) => {
            if ctx.data(id, output.channel, &buf[..n]).is_err() {
                // The host is gone: stop the command as a hang-up does.
                stream.hang_up();
            }
            true
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ) =>
        {
            true
        }
        // EIO: the terminal's last holder closed it.
        Err(_) => false,
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
