//! One agent connection's state, without I/O: the frames the host sent go
//! in ([`Session::handle`]), timers fire ([`Session::on_time`]), and the
//! frames to send come out one at a time ([`Session::next_frame`]) as the
//! connection has room, so a large output or file never sits in memory
//! encoded. Buffered execs that run on (a `sleep`, a `tick`, a
//! `net-fetch`) and streams run side by side while pings and other execs
//! are answered; the ones on the network move on in [`Session::on_net`].
//! Time is in ms, from the caller's clock.

mod exec;
mod stream;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bounds;
#[cfg(test)]
mod tests_files;
#[cfg(test)]
mod tests_net;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Bound;

use fastvm_proto::agent::{
    DEFAULT_OUTPUT_CAP, ExecRequest, ExecStart, Frame, Ready, STREAMS_VERSION, StreamErrorKind,
    WindowSize,
};
use fastvm_proto::agent_stream::CHANNEL_IN;

use self::exec::{Capture, Captured, Exit, Run, Send};
use self::stream::{ECHO_PORT, HTTP_PORT, Kind, Stream, error, file_error};
use crate::commands::Env;
use crate::files::DEFAULT_MODE;
use crate::network::Network;
use crate::program::{self, Effect, Start};

pub use self::exec::signal_exit;
pub use self::stream::{HTTP_RESPONSE, MAX_HTTP_HEAD};

/// Most streams open at once on one connection.
pub const MAX_STREAMS: usize = 64;
/// Most bytes a streaming exec's built-in that ends at once may print
/// (a streamed `yes` is not bound by it: it writes as it is sent).
pub const STREAM_OUTPUT_CAP: u64 = DEFAULT_OUTPUT_CAP;

/// The frame that opens every connection.
pub fn ready(agent: &str) -> Frame {
    Frame::Ready(Ready {
        version: STREAMS_VERSION,
        agent: String::from(agent),
    })
}

/// One connection's execs and streams, and what it has to send.
#[derive(Debug, Default)]
pub struct Session {
    /// Frames outside any stream (pongs, results, refused streams), sent first.
    control: VecDeque<Frame>,
    /// Buffered execs that run on.
    captured: Vec<Captured>,
    streams: BTreeMap<u64, Stream>,
    /// The stream that sent last (they take turns).
    cursor: u64,
}

impl Session {
    /// A new connection's state.
    pub fn new() -> Self {
        Session::default()
    }

    /// Acts on one frame from the host; `clock` tells the time in ms.
    /// Returns what the agent must do besides sending (for `poweroff`,
    /// `crash`, `mmio-spam`).
    pub fn handle(&mut self, frame: Frame, env: &mut Env<'_>, clock: &dyn Fn() -> u64) -> Effect {
        match frame {
            Frame::Ping { nonce } => self.control.push_back(Frame::Pong { nonce }),
            Frame::SetNetwork {
                nonce,
                ip6,
                gw6,
                ip4,
                gw4,
                ..
            } => match crate::netcfg::from_setting(&ip6, &gw6, ip4.as_deref(), gw4.as_deref()) {
                Ok(config) => return Effect::Network { nonce, config },
                Err(e) => self.control.push_back(Frame::Error {
                    message: format!("test-guest: setNetwork: {e}"),
                }),
            },
            Frame::Exec(req) => return self.exec(&req, env, clock),
            Frame::ExecStart(start) => return self.exec_start(start, env, clock),
            Frame::FileWrite { id, path, mode } if self.may_open(id) => {
                match env.files.check_writable(&path) {
                    Ok(key) => {
                        let kind = Kind::Write {
                            key,
                            data: Vec::new(),
                            mode: mode.unwrap_or(DEFAULT_MODE),
                            res: env.files.reservation(),
                        };
                        self.streams.insert(id, Stream::new(id, kind));
                    }
                    Err(e) => self.control.push_back(file_error(id, e)),
                }
            }
            Frame::FileRead { id, path } if self.may_open(id) => match env.files.get(&path) {
                Ok(file) => {
                    let data = file.data.clone();
                    let mut stream = Stream::new(id, Kind::Read { data, at: 0 });
                    stream.outbox.push_frame(Frame::FileInfo {
                        id,
                        size: file.data.len() as u64,
                        mode: file.mode,
                    });
                    self.streams.insert(id, stream);
                }
                Err(e) => self.control.push_back(file_error(id, e)),
            },
            Frame::Connect { id, port } if self.may_open(id) => self.connect(id, port),
            Frame::FileWrite { .. } | Frame::FileRead { .. } | Frame::Connect { .. } => {}
            Frame::Data(data) if data.channel == CHANNEL_IN => {
                if let Some(s) = self.streams.get_mut(&data.id) {
                    s.input(&data.bytes, env.files, clock());
                }
            }
            Frame::StreamEnd { id, channel } if channel == CHANNEL_IN => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.eof(env.files, clock());
                }
            }
            Frame::Data(_) | Frame::StreamEnd { .. } => {}
            Frame::Resize { id, cols, rows } => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.resize(WindowSize { cols, rows });
                }
            }
            Frame::Signal { id, signal } => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.signal(signal, clock());
                }
            }
            other => {
                let message = format!("test-guest: unexpected frame {}", other.describe());
                self.control.push_back(Frame::Error { message });
            }
        }
        Effect::None
    }

    /// Queues the answer to a frame whose work the agent did (a
    /// `setNetwork`'s pong or error).
    pub fn answer(&mut self, frame: Frame) {
        self.control.push_back(frame);
    }

    /// Whether stream `id` may open; if not, its refusal is queued.
    fn may_open(&mut self, id: u64) -> bool {
        let refusal = if self.streams.contains_key(&id) {
            let message = format!("stream id {id} is in use on this connection");
            error(id, StreamErrorKind::Invalid, message)
        } else if self.streams.len() >= MAX_STREAMS {
            let message = format!("too many streams on this connection ({MAX_STREAMS} at most)");
            error(id, StreamErrorKind::Busy, message)
        } else {
            return true;
        };
        self.control.push_back(refusal);
        false
    }

    /// Opens a forward to `port`.
    fn connect(&mut self, id: u64, port: u16) {
        let kind = match port {
            ECHO_PORT => Kind::Echo,
            HTTP_PORT => Kind::Http(Vec::new()),
            _ => {
                let message =
                    format!("connection refused: nothing listens on port {port} in the guest");
                self.control
                    .push_back(error(id, StreamErrorKind::Invalid, message));
                return;
            }
        };
        let mut stream = Stream::new(id, kind);
        stream.outbox.push_frame(Frame::Connected { id });
        self.streams.insert(id, stream);
    }

    /// Runs a buffered exec: answered now, or once it ends.
    fn exec(&mut self, req: &ExecRequest, env: &mut Env<'_>, clock: &dyn Fn() -> u64) -> Effect {
        let now = clock();
        let mut out = Capture::new(req);
        match program::start(req, None, false, env, now, &mut out) {
            Start::Exited { code, effect } => {
                let result = out.finish(req.id, Exit::code(code), clock().saturating_sub(now));
                self.control.push_back(Frame::ExecResult(result));
                effect
            }
            // Its stdin is empty: what reads it ends at once.
            Start::Running(mut program) => {
                match program.eof() {
                    Some(code) => {
                        let result = out.finish(req.id, Exit::code(code), 0);
                        self.control.push_back(Frame::ExecResult(result));
                    }
                    None => self.captured.push(Captured {
                        id: req.id,
                        run: Run::new(program, now, req.timeout_ms),
                        out,
                    }),
                }
                Effect::None
            }
        }
    }

    /// Starts a streaming exec.
    fn exec_start(
        &mut self,
        start: ExecStart,
        env: &mut Env<'_>,
        clock: &dyn Fn() -> u64,
    ) -> Effect {
        if !self.may_open(start.id) {
            return Effect::None;
        }
        let now = clock();
        let id = start.id;
        let req = ExecRequest {
            id,
            argv: start.argv,
            env: start.env,
            cwd: start.cwd,
            user: start.user,
            timeout_ms: start.timeout_ms,
            max_stdout: STREAM_OUTPUT_CAP,
            max_stderr: STREAM_OUTPUT_CAP,
        };
        let tty = start.tty.is_some();
        let mut stream = Stream::new(id, Kind::Ended);
        let mut con = Send {
            outbox: &mut stream.outbox,
            tty,
        };
        let effect = match program::start(&req, start.tty, true, env, now, &mut con) {
            Start::Exited { code, effect } => {
                stream.exit(Exit::code(code), now, clock());
                effect
            }
            Start::Running(program) => {
                let run = Run::new(program, now, req.timeout_ms);
                stream.kind = Kind::Exec { run, tty };
                Effect::None
            }
        };
        self.streams.insert(id, stream);
        effect
    }

    /// Fires the timers due by `now` (ms).
    pub fn on_time(&mut self, now: u64) {
        let mut i = 0;
        while i < self.captured.len() {
            let c = &mut self.captured[i];
            match c.run.on_time(now, &mut c.out) {
                Some(exit) => {
                    let c = self.captured.swap_remove(i);
                    let took = now.saturating_sub(c.run.started);
                    let result = c.out.finish(c.id, exit, took);
                    self.control.push_back(Frame::ExecResult(result));
                }
                None => i += 1,
            }
        }
        for stream in self.streams.values_mut() {
            stream.on_time(now);
        }
    }

    /// Moves the network work of its execs on at `now` (ms) over `net`
    /// (none: the guest has no network); call it on every pass of the
    /// caller's loop.
    pub fn on_net(&mut self, now: u64, mut net: Option<&mut (dyn Network + '_)>) {
        let mut i = 0;
        while i < self.captured.len() {
            let c = &mut self.captured[i];
            match c.run.program.on_net(net.as_deref_mut(), now, &mut c.out) {
                Some(code) => {
                    let c = self.captured.swap_remove(i);
                    let took = now.saturating_sub(c.run.started);
                    let result = c.out.finish(c.id, Exit::code(code), took);
                    self.control.push_back(Frame::ExecResult(result));
                }
                None => i += 1,
            }
        }
        for stream in self.streams.values_mut() {
            stream.on_net(net.as_deref_mut(), now);
        }
    }

    /// When the next timer fires (ms), if one runs.
    pub fn next_deadline(&self) -> Option<u64> {
        let captured = self.captured.iter().filter_map(|c| c.run.deadline());
        let streams = self.streams.values().filter_map(Stream::deadline);
        captured.chain(streams).min()
    }

    /// The next frame to send, if any: frames outside streams first, then
    /// the streams' in turn; `now` (ms) times an exec that ends as it is sent.
    pub fn next_frame(&mut self, now: u64) -> Option<Frame> {
        if let Some(frame) = self.control.pop_front() {
            return Some(frame);
        }
        let mut key = self.cursor;
        for _ in 0..self.streams.len() {
            let after = self.streams.range((Bound::Excluded(key), Bound::Unbounded));
            key = match after.map(|(k, _)| *k).next() {
                Some(k) => k,
                None => *self.streams.keys().next()?,
            };
            let stream = self.streams.get_mut(&key).expect("a listed key");
            stream.refill(now);
            let frame = stream.outbox.pop(key);
            if stream.finished() {
                self.streams.remove(&key);
            }
            if frame.is_some() {
                self.cursor = key;
                return frame;
            }
        }
        None
    }

    /// Every frame queued now, without making more (before a power-off).
    pub fn take_queued(&mut self) -> Vec<Frame> {
        let mut frames: Vec<Frame> = self.control.drain(..).collect();
        for (id, stream) in self.streams.iter_mut() {
            while let Some(frame) = stream.outbox.pop(*id) {
                frames.push(frame);
            }
        }
        self.streams.retain(|_, s| !s.finished());
        frames
    }

    /// Bytes queued to send (roughly, for frames outside streams): what
    /// the connection holds before it reads more from the host.
    pub fn queued_bytes(&self) -> usize {
        let control: usize = self
            .control
            .iter()
            .map(|f| match f {
                Frame::ExecResult(r) => r.stdout.len() + r.stderr.len() + 256,
                _ => 256,
            })
            .sum();
        control
            + self
                .streams
                .values()
                .map(|s| s.outbox.bytes())
                .sum::<usize>()
    }

    /// Streams open.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Buffered execs running.
    pub fn running_execs(&self) -> usize {
        self.captured.len()
    }
}
