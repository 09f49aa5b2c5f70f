//! A built-in as it runs, for a buffered `Exec` (its output captured) or an
//! `ExecStart` stream (its output sent as it comes): the ones that end at
//! once come from [`crate::commands`]; `sleep`, `tick`, `cat`, `sh`, a
//! streamed `yes`, `net-fetch` and `net-ping` run over time, woken by their
//! timer, their input, the connection's room for more output or the
//! network ([`Program::on_net`]). Time is the caller's, in ms.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use fastvm_proto::agent::{ExecRequest, WindowSize};
use fastvm_proto::agent_stream::{CHANNEL_ERR, CHANNEL_OUT};

use crate::commands::{self, Action, Env, Output};
use crate::fetch::{self, Fetch};
use crate::network::Network;
use crate::ping::{self, Ping};
use crate::shell::Shell;

/// Most ticks one `tick` prints.
pub const MAX_TICKS: u64 = 100_000;

/// Where a running built-in writes its output.
pub trait Console {
    /// Writes `bytes` on `channel` ([`CHANNEL_OUT`] or [`CHANNEL_ERR`]).
    fn write(&mut self, channel: u8, bytes: &[u8]);
    /// Writes `bytes` on `channel`, handing over the buffer.
    fn write_vec(&mut self, channel: u8, bytes: Vec<u8>) {
        self.write(channel, &bytes);
    }
    /// The command dropped output on `channel` past its request's cap.
    fn dropped(&mut self, channel: u8) {
        let _ = channel;
    }
}

/// What the agent must do besides reporting a built-in's exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Power the VM off once the exit is sent (`poweroff`).
    PowerOff,
    /// Fault at once, sending nothing (`crash`).
    Crash,
    /// Make this many bad MMIO writes (`mmio-spam`).
    BadMmio(u32),
    /// Apply the network of a `setNetwork` with `nonce`, then answer it
    /// ([`crate::session::Session::answer`]).
    Network {
        nonce: u64,
        config: crate::netcfg::NetConfig,
    },
}

/// How a built-in started.
#[derive(Debug)]
pub enum Start {
    /// It ended at once.
    Exited { code: i32, effect: Effect },
    /// It runs on.
    Running(Program),
}

/// A built-in that runs on.
#[derive(Debug)]
pub enum Program {
    /// `sleep MS`: ends with `code` at `until`.
    Sleep { until: u64, code: i32 },
    /// `tick N MS`.
    Tick(Tick),
    /// `cat`: its input back on stdout, until end of input.
    Cat,
    /// `sh`: see [`crate::shell`].
    Sh(Shell),
    /// A streamed `yes BYTES`: `left` bytes of `y\n` still to write, the
    /// next one at offset `at`; written as the connection has room.
    Yes { left: u64, at: u64 },
    /// `net-fetch ADDR PORT [REQUEST...]`: see [`crate::fetch`].
    Fetch(Fetch),
    /// `net-ping ADDR`: see [`crate::ping`].
    Ping(Ping),
}

/// `tick N MS`: `tick I` lines, the first at once and the others `every`
/// ms apart from `start`.
#[derive(Debug)]
pub struct Tick {
    n: u64,
    done: u64,
    every: u64,
    start: u64,
}

/// Starts `req` at `now`; with `tty`, on a terminal of that size. A
/// `streamed` `yes` writes as it is pulled instead of all at once.
pub fn start(
    req: &ExecRequest,
    tty: Option<WindowSize>,
    streamed: bool,
    env: &mut Env<'_>,
    now: u64,
    con: &mut dyn Console,
) -> Start {
    let args = req.argv.get(1..).unwrap_or(&[]);
    match req.argv.first().map(|a| a.as_str()) {
        Some("cat") => Start::Running(Program::Cat),
        Some("sh") => {
            let mut out = Vec::new();
            let shell = Shell::start(tty, &mut out);
            con.write_vec(CHANNEL_OUT, out);
            Start::Running(Program::Sh(shell))
        }
        Some("tick") => start_tick(args, now, con),
        Some("net-fetch") => match fetch::parse_args(args) {
            Some((to, request)) => Start::Running(Program::Fetch(Fetch::new(to, request, now))),
            None => usage(fetch::USAGE, con),
        },
        Some("net-ping") => match ping::parse_args(args) {
            Some(to) => Start::Running(Program::Ping(Ping::new(to, now))),
            None => usage(ping::USAGE, con),
        },
        Some("yes") if streamed => match args.first().map(|a| a.parse::<u64>()) {
            Some(Ok(0)) => exited(0),
            Some(Ok(left)) => Start::Running(Program::Yes { left, at: 0 }),
            _ => from_action(commands::run(req, env), now, con),
        },
        _ => from_action(commands::run(req, env), now, con),
    }
}

/// Writes `line` on stderr; exit code 2.
fn usage(line: &str, con: &mut dyn Console) -> Start {
    con.write(CHANNEL_ERR, line.as_bytes());
    exited(2)
}

fn exited(code: i32) -> Start {
    Start::Exited {
        code,
        effect: Effect::None,
    }
}

/// Writes what an immediate command printed; how it goes on.
fn from_action(action: Action, now: u64, con: &mut dyn Console) -> Start {
    let (output, effect) = match action {
        Action::Done(out) => (out, Effect::None),
        Action::PowerOff(out) => (out, Effect::PowerOff),
        Action::BadMmio { writes, output } => (output, Effect::BadMmio(writes)),
        Action::Crash => {
            return Start::Exited {
                code: 0,
                effect: Effect::Crash,
            };
        }
        Action::Sleep { ms, output } => {
            let code = write_output(output, con);
            return Start::Running(Program::Sleep {
                until: now.saturating_add(ms),
                code,
            });
        }
    };
    let code = write_output(output, con);
    Start::Exited { code, effect }
}

/// Writes `out`'s stdout and stderr; its exit code.
fn write_output(out: Output, con: &mut dyn Console) -> i32 {
    if out.stdout.truncated {
        con.dropped(CHANNEL_OUT);
    }
    if out.stderr.truncated {
        con.dropped(CHANNEL_ERR);
    }
    con.write_vec(CHANNEL_OUT, out.stdout.data);
    con.write_vec(CHANNEL_ERR, out.stderr.data);
    out.exit_code
}

fn start_tick(args: &[alloc::string::String], now: u64, con: &mut dyn Console) -> Start {
    let parsed = match args {
        [n, ms] => n.parse::<u64>().ok().zip(ms.parse::<u64>().ok()),
        _ => None,
    };
    let Some((n, every)) = parsed.filter(|(n, _)| *n <= MAX_TICKS) else {
        let usage = format!("test-guest: usage: tick N MS (N at most {MAX_TICKS})\n");
        con.write(CHANNEL_ERR, usage.as_bytes());
        return exited(2);
    };
    if n == 0 {
        return exited(0);
    }
    con.write(CHANNEL_OUT, b"tick 1\n");
    if n == 1 {
        return exited(0);
    }
    Start::Running(Program::Tick(Tick {
        n,
        done: 1,
        every,
        start: now,
    }))
}

impl Program {
    /// When its timer fires, if it has one.
    pub fn deadline(&self) -> Option<u64> {
        match self {
            Program::Sleep { until, .. } => Some(*until),
            Program::Tick(t) => Some(t.start.saturating_add(t.done.saturating_mul(t.every))),
            Program::Fetch(f) => Some(f.deadline()),
            Program::Ping(p) => Some(p.deadline()),
            Program::Cat | Program::Sh(_) | Program::Yes { .. } => None,
        }
    }

    /// Its timer fired (the caller checked [`Program::deadline`]); the exit
    /// code if it ends.
    pub fn on_time(&mut self, con: &mut dyn Console) -> Option<i32> {
        match self {
            Program::Sleep { code, .. } => Some(*code),
            Program::Tick(t) => {
                t.done += 1;
                con.write(CHANNEL_OUT, format!("tick {}\n", t.done).as_bytes());
                (t.done >= t.n).then_some(0)
            }
            Program::Fetch(f) => Some(f.on_time(con)),
            Program::Ping(p) => Some(p.on_time(con)),
            Program::Cat | Program::Sh(_) | Program::Yes { .. } => None,
        }
    }

    /// Moves its network work on at `now` over `net` (none: the guest has
    /// no network); the exit code if it ends. The caller calls it on every
    /// pass of its loop: it does nothing for a program off the network.
    pub fn on_net(
        &mut self,
        net: Option<&mut (dyn Network + '_)>,
        now: u64,
        con: &mut dyn Console,
    ) -> Option<i32> {
        match self {
            Program::Fetch(f) => f.on_net(net, now, con),
            Program::Ping(p) => p.on_net(net, con),
            _ => None,
        }
    }

    /// Bytes on its stdin; the exit code if it ends.
    pub fn input(&mut self, bytes: &[u8], con: &mut dyn Console) -> Option<i32> {
        match self {
            Program::Cat => {
                con.write(CHANNEL_OUT, bytes);
                None
            }
            Program::Sh(shell) => {
                let mut out = Vec::new();
                let code = shell.input(bytes, &mut out);
                con.write_vec(CHANNEL_OUT, out);
                code
            }
            _ => None,
        }
    }

    /// End of its stdin; the exit code if it ends.
    pub fn eof(&mut self) -> Option<i32> {
        match self {
            Program::Cat | Program::Sh(_) => Some(0),
            _ => None,
        }
    }

    /// Its terminal has a new size.
    pub fn resize(&mut self, size: WindowSize) {
        if let Program::Sh(shell) = self {
            shell.resize(size);
        }
    }

    /// Whether it writes more when pulled ([`Program::pull`]).
    pub fn wants_pull(&self) -> bool {
        matches!(self, Program::Yes { .. })
    }

    /// Writes at most `max` more bytes; the exit code once it has written all.
    pub fn pull(&mut self, max: usize, con: &mut dyn Console) -> Option<i32> {
        let Program::Yes { left, at } = self else {
            return None;
        };
        let n = (*left).min(max as u64) as usize;
        let mut bytes = vec![b'y'; n];
        let first_newline = (*at % 2 == 0) as usize;
        for b in bytes.iter_mut().skip(first_newline).step_by(2) {
            *b = b'\n';
        }
        *left -= n as u64;
        *at += n as u64;
        con.write_vec(CHANNEL_OUT, bytes);
        (*left == 0).then_some(0)
    }
}

#[cfg(test)]
#[path = "program_tests.rs"]
mod tests;
