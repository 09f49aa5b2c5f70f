//! A running exec, whatever becomes of its output: its built-in with the
//! request's timeout ([`Run`]), and the two places output goes: data
//! frames of its stream ([`Send`]) or a buffered exec's captured result
//! ([`Captured`]).

use alloc::vec::Vec;

use fastvm_proto::agent::{CappedOutput, ExecRequest, ExecResult, TIMEOUT_EXIT_CODE};
use fastvm_proto::agent_stream::{CHANNEL_ERR, CHANNEL_OUT};

use crate::outbox::Outbox;
use crate::program::{Console, Program};

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: i32,
    pub timed_out: bool,
}

impl Exit {
    /// Ended by itself with `code`.
    pub fn code(code: i32) -> Self {
        Exit {
            code,
            timed_out: false,
        }
    }
}

/// A built-in running under its request's timeout.
#[derive(Debug)]
pub struct Run {
    pub program: Program,
    pub started: u64,
    timeout_at: Option<u64>,
}

impl Run {
    /// `program`, started at `started` (ms), ended after `timeout_ms`.
    pub fn new(program: Program, started: u64, timeout_ms: Option<u64>) -> Self {
        Run {
            program,
            started,
            timeout_at: timeout_ms.map(|t| started.saturating_add(t)),
        }
    }

    /// When its next timer fires.
    pub fn deadline(&self) -> Option<u64> {
        match (self.program.deadline(), self.timeout_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires its timers due by `now`, in order (the program's own first
    /// when both fall together); how it ended, if it did.
    pub fn on_time(&mut self, now: u64, con: &mut dyn Console) -> Option<Exit> {
        loop {
            let own = self.program.deadline().filter(|t| *t <= now);
            match (own, self.timeout_at.filter(|t| *t <= now)) {
                (Some(own), Some(limit)) if limit < own => return Some(timed_out()),
                (Some(_), _) => {
                    if let Some(code) = self.program.on_time(con) {
                        return Some(Exit::code(code));
                    }
                }
                (None, Some(_)) => return Some(timed_out()),
                (None, None) => return None,
            }
        }
    }
}

fn timed_out() -> Exit {
    Exit {
        code: TIMEOUT_EXIT_CODE,
        timed_out: true,
    }
}

/// The exit code signal `signal` ends a built-in with (128 + N), or none
/// when the signal does not end it: not a signal (0, negative, past 64) or
/// one whose default action is to ignore it (SIGCHLD, SIGCONT, SIGURG,
/// SIGWINCH).
pub fn signal_exit(signal: i32) -> Option<i32> {
    match signal {
        17 | 18 | 23 | 28 => None,
        1..=64 => Some(128 + signal),
        _ => None,
    }
}

/// Output as data frames of a stream; with a terminal, stderr is stdout.
pub struct Send<'a> {
    pub outbox: &'a mut Outbox,
    pub tty: bool,
}

impl Send<'_> {
    fn channel(&self, channel: u8) -> u8 {
        if self.tty && channel == CHANNEL_ERR {
            CHANNEL_OUT
        } else {
            channel
        }
    }
}

impl Console for Send<'_> {
    fn write(&mut self, channel: u8, bytes: &[u8]) {
        let channel = self.channel(channel);
        self.outbox.push_data(channel, bytes);
    }

    fn write_vec(&mut self, channel: u8, bytes: Vec<u8>) {
        let channel = self.channel(channel);
        if bytes.len() <= 64 {
            self.outbox.push_data(channel, &bytes);
        } else {
            self.outbox.push_vec(channel, bytes);
        }
    }
}

/// A buffered exec that runs on: its output is kept for its result.
#[derive(Debug)]
pub struct Captured {
    pub id: u64,
    pub run: Run,
    pub out: Capture,
}

/// A buffered exec's output, capped as its request says.
#[derive(Debug)]
pub struct Capture {
    stdout: CappedOutput,
    stderr: CappedOutput,
}

impl Capture {
    /// Empty output with the caps of `req`.
    pub fn new(req: &ExecRequest) -> Self {
        Capture {
            stdout: CappedOutput::new(req.max_stdout),
            stderr: CappedOutput::new(req.max_stderr),
        }
    }

    /// The result of exec `id`, ended as `exit` after `duration_ms`.
    pub fn finish(self, id: u64, exit: Exit, duration_ms: u64) -> ExecResult {
        ExecResult {
            id,
            exit_code: exit.code,
            stdout_truncated: self.stdout.truncated,
            stderr_truncated: self.stderr.truncated,
            stdout: self.stdout.into_string(),
            stderr: self.stderr.into_string(),
            timed_out: exit.timed_out,
            duration_ms,
        }
    }
}

impl Console for Capture {
    fn write(&mut self, channel: u8, bytes: &[u8]) {
        match channel {
            CHANNEL_ERR => self.stderr.push(bytes),
            _ => self.stdout.push(bytes),
        }
    }

    fn write_vec(&mut self, channel: u8, bytes: Vec<u8>) {
        let out = match channel {
            CHANNEL_ERR => &mut self.stderr,
            _ => &mut self.stdout,
        };
        if out.data.is_empty() && bytes.len() <= out.cap {
            out.data = bytes;
        } else {
            out.push(&bytes);
        }
    }

    fn dropped(&mut self, channel: u8) {
        match channel {
            CHANNEL_ERR => self.stderr.truncated = true,
            _ => self.stdout.truncated = true,
        }
    }
}
