//! Streaming execs (`ExecStart`, see `fastvm_proto::agent_stream`).
//!
//! The command starts at once, on the connection's reader (so its process
//! group exists before the next frame is read), in a process group of its
//! own, or with a TTY as the leader of a new session on a pseudo-terminal
//! ([`crate::pty`]). Two threads then serve it: one feeds its stdin
//! ([`crate::stream_stdin`]); the other sends its output, enforces its
//! timeout and ends the stream with `ExecExit`
//! ([`crate::stream_exec_output`]). `Signal` goes to the process group (with
//! a TTY, to the terminal's foreground group, as a key would); a hang-up
//! kills the group (with a TTY, the whole session).
//!
//! Exit statuses come from the reaper ([`crate::reaper`]), the one waiter of
//! every child: the command is registered with it at spawn, and the stream
//! only reads the status it delivers.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use fastvm_proto::agent::{ExecExit, ExecStart, Frame, StreamErrorKind, WindowSize};
use fastvm_proto::agent_stream::{CHANNEL_ERR, CHANNEL_OUT};

use crate::command::{self, Refusal};
use crate::exec::{pidfd_open, signal_group};
use crate::reaper::{self, WaitStatus};
use crate::stream_exec_output::{Output, Pump};
use crate::stream_input::InputQueue;
use crate::stream_stdin::{self, AtEnd, set_nonblocking};
use crate::streams::{Stream, StreamCtx};
use crate::{pty, terminal_session};

/// `TERM` of a TTY exec whose request names none.
pub const DEFAULT_TERM: &str = "xterm-256color";
/// Highest signal number (`SIGRTMAX`).
const MAX_SIGNAL: i32 = 64;

/// A running streaming exec, as the connection steers it.
pub(crate) struct ExecStream {
    /// Its process group, and with a TTY its session.
    pgid: libc::pid_t,
    /// The terminal's master, with a TTY.
    master: Option<Arc<OwnedFd>>,
    pub(crate) input: Arc<InputQueue>,
    pub(crate) hung_up: AtomicBool,
}

impl ExecStream {
    /// Sends `signal` to everything the command started: its group, and
    /// with a TTY every process of its session.
    pub(crate) fn kill(&self, signal: i32) {
        signal_group(self.pgid, signal);
        if self.master.is_some() {
            terminal_session::signal_all(self.pgid, signal);
        }
    }
}

impl Stream for ExecStream {
    fn input(&self) -> Option<&InputQueue> {
        Some(&self.input)
    }

    /// To the process group; with a TTY to the terminal's foreground
    /// process group, as a key like ^C would.
    fn signal(&self, signal: i32) -> Result<(), String> {
        if !(1..=MAX_SIGNAL).contains(&signal) {
            return Err(format!(
                "{signal} is not a signal number (1 to {MAX_SIGNAL})"
            ));
        }
        let group = self
            .master
            .as_ref()
            .and_then(|m| pty::foreground_group(m.as_fd()))
            .unwrap_or(self.pgid);
        // SAFETY: kill with a negative pid signals a process group; no
        // memory is involved.
        if unsafe { libc::kill(-group, signal) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(format!("cannot send signal {signal}: {e}"));
            }
        }
        Ok(())
    }

    fn resize(&self, size: WindowSize) {
        if let Some(master) = &self.master {
            let _ = pty::resize(master.as_fd(), size);
        }
    }

    fn hang_up(&self) {
        self.hung_up.store(true, Ordering::SeqCst);
        self.input.close();
        self.kill(libc::SIGKILL);
    }
}

/// A command just started.
struct Spawned {
    pid: libc::pid_t,
    status_rx: Receiver<WaitStatus>,
    outputs: Vec<Output>,
    stdin: OwnedFd,
    master: Option<Arc<OwnedFd>>,
}

/// Starts `start` and the threads that serve it; answers at once when it
/// cannot start (exit code 127 or 126 and the reason, as a shell).
pub fn start(ctx: &StreamCtx, start: ExecStart) -> io::Result<()> {
    let id = start.id;
    if let Err(e) = ctx.streams.check_room(id) {
        return ctx.send(&Frame::StreamError(e));
    }
    let begun = Instant::now();
    let refuse = |refusal: Refusal| -> io::Result<()> {
        let channel = if start.tty.is_some() {
            CHANNEL_OUT
        } else {
            CHANNEL_ERR
        };
        ctx.data(id, channel, refusal.line().as_bytes())?;
        ctx.send(&Frame::ExecExit(ExecExit {
            id,
            exit_code: refusal.exit_code,
            timed_out: false,
            duration_ms: begun.elapsed().as_millis() as u64,
        }))
    };
    let cmd = match command::build(
        &start.argv,
        &start.env,
        start.cwd.as_deref(),
        start.user.as_deref(),
    ) {
        Ok(cmd) => cmd,
        Err(refusal) => return refuse(refusal),
    };
    let spawned = match start.tty {
        Some(size) => spawn_on_tty(cmd, &start, size),
        None => spawn_with_pipes(cmd, &start.argv[0]),
    };
    let spawned = match spawned {
        Ok(spawned) => spawned,
        Err(refusal) => return refuse(refusal),
    };
    let stream = Arc::new(ExecStream {
        pgid: spawned.pid,
        master: spawned.master.clone(),
        input: Arc::new(InputQueue::new()),
        hung_up: AtomicBool::new(false),
    });
    if let Err(e) = ctx.streams.insert(id, stream.clone()) {
        stream.kill(libc::SIGKILL);
        return ctx.send(&Frame::StreamError(e));
    }
    if let Err(e) = serve(ctx, id, &stream, spawned, start.timeout_ms, begun) {
        stream.hang_up();
        return ctx.fail(
            id,
            StreamErrorKind::Failed,
            format!("cannot start the threads of the command: {e}"),
        );
    }
    Ok(())
}

fn spawn_with_pipes(mut cmd: Command, program: &str) -> Result<Spawned, Refusal> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let (mut child, status_rx) =
        reaper::spawn(&mut cmd).map_err(|e| command::not_started(program, &e))?;
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        signal_group(child.id() as libc::pid_t, libc::SIGKILL);
        return Err(refusal(126, "the command's pipes are missing".into()));
    };
    let outputs = vec![
        Output {
            file: File::from(OwnedFd::from(stdout)),
            channel: CHANNEL_OUT,
        },
        Output {
            file: File::from(OwnedFd::from(stderr)),
            channel: CHANNEL_ERR,
        },
    ];
    Ok(Spawned {
        pid: child.id() as libc::pid_t,
        status_rx,
        outputs,
        stdin: stdin.into(),
        master: None,
    })
}

fn spawn_on_tty(mut cmd: Command, start: &ExecStart, size: WindowSize) -> Result<Spawned, Refusal> {
    let no_tty = |e: io::Error| refusal(126, format!("cannot open a pseudo-terminal: {e}"));
    let (master, slave) = pty::open(size).map_err(no_tty)?;
    let stdin = slave.try_clone().map_err(no_tty)?;
    let stdout = slave.try_clone().map_err(no_tty)?;
    cmd.stdin(stdin).stdout(stdout).stderr(slave);
    if !start.env.contains_key("TERM") {
        cmd.env("TERM", DEFAULT_TERM);
    }
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls (setsid, ioctl).
    unsafe {
        cmd.pre_exec(pty::become_session_leader);
    }
    let (child, status_rx) =
        reaper::spawn(&mut cmd).map_err(|e| command::not_started(&start.argv[0], &e))?;
    // The command's copies of the slave close with it: the master reads
    // EIO once the command and everything it left on the terminal ended.
    drop(cmd);
    let pid = child.id() as libc::pid_t;
    let copies = (master.try_clone(), master.try_clone());
    let (Ok(reader), Ok(writer)) = copies else {
        signal_group(pid, libc::SIGKILL);
        return Err(refusal(
            126,
            "cannot duplicate the terminal's master".into(),
        ));
    };
    Ok(Spawned {
        pid,
        status_rx,
        outputs: vec![Output {
            file: File::from(reader),
            channel: CHANNEL_OUT,
        }],
        stdin: writer,
        master: Some(Arc::new(master)),
    })
}

fn refusal(exit_code: i32, reason: String) -> Refusal {
    Refusal { exit_code, reason }
}

/// Starts the stdin and output threads of a command just started.
fn serve(
    ctx: &StreamCtx,
    id: u64,
    stream: &Arc<ExecStream>,
    spawned: Spawned,
    timeout_ms: Option<u64>,
    begun: Instant,
) -> io::Result<()> {
    let at_end = match &spawned.master {
        Some(master) => AtEnd::Type(pty::eof_char(master.as_fd())),
        None => AtEnd::Close,
    };
    for output in &spawned.outputs {
        set_nonblocking(&output.file)?;
    }
    stream_stdin::spawn(stream.input.clone(), spawned.stdin, at_end)?;
    let output = Pump {
        ctx: ctx.clone(),
        id,
        stream: stream.clone(),
        outputs: spawned.outputs,
        pidfd: pidfd_open(spawned.pid),
        status_rx: spawned.status_rx,
        status: None,
        deadline: timeout_ms.map(|ms| begun + Duration::from_millis(ms)),
        begun,
    };
    std::thread::Builder::new()
        .name("exec-output".into())
        .spawn(move || output.run())?;
    Ok(())
}
