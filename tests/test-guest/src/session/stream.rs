//! One stream of a connection: what it is (an exec, a file going in or
//! out, a forward to a built-in service), what it does with the host's
//! frames, and what it has to send.

use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;

use fastvm_proto::agent::{DATA_CHUNK, ExecExit, Frame, StreamError, StreamErrorKind, WindowSize};
use fastvm_proto::agent_stream::CHANNEL_OUT;

use super::exec::{Exit, Run, Send, signal_exit};
use crate::files::{FileError, FileStore, Reservation};
use crate::network::Network;
use crate::outbox::Outbox;

/// The HTTP responder's answer to any request.
pub const HTTP_RESPONSE: &[u8] =
    b"HTTP/1.0 200 OK\r\nContent-Length: 18\r\n\r\nhello from guest\r\n";
/// Its answer to a request head longer than [`MAX_HTTP_HEAD`].
const HTTP_TOO_LARGE: &[u8] =
    b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n";
/// Longest request head the HTTP responder reads.
pub const MAX_HTTP_HEAD: usize = 8 << 10;
/// Port of the built-in echo service.
pub const ECHO_PORT: u16 = 7;
/// Port of the built-in HTTP responder.
pub const HTTP_PORT: u16 = 80;

/// What a stream is.
#[derive(Debug)]
pub enum Kind {
    /// A streaming exec; `tty` when it runs on a terminal.
    Exec { run: Run, tty: bool },
    /// A file being written: its bytes so far, held against the store's bound.
    Write {
        key: String,
        data: Vec<u8>,
        mode: u32,
        res: Reservation,
    },
    /// A file being read out, from offset `at`.
    Read { data: Rc<Vec<u8>>, at: usize },
    /// A forward to the echo service.
    Echo,
    /// A forward to the HTTP responder: the request head so far.
    Http(Vec<u8>),
    /// Its last frame is queued; it goes once that is sent.
    Ended,
}

/// One stream.
#[derive(Debug)]
pub struct Stream {
    pub id: u64,
    pub outbox: Outbox,
    pub kind: Kind,
}

/// A stream error frame.
pub fn error(id: u64, kind: StreamErrorKind, message: String) -> Frame {
    Frame::StreamError(StreamError { id, kind, message })
}

/// The stream error a file error is answered with.
pub fn file_error(id: u64, e: FileError) -> Frame {
    let kind = match e {
        FileError::NotFound(_) => StreamErrorKind::NotFound,
        FileError::Invalid(_) => StreamErrorKind::Invalid,
        FileError::NoSpace(_) => StreamErrorKind::Failed,
    };
    error(id, kind, String::from(e.message()))
}

impl Stream {
    /// A stream with nothing queued yet.
    pub fn new(id: u64, kind: Kind) -> Self {
        Stream {
            id,
            outbox: Outbox::default(),
            kind,
        }
    }

    /// Queues `frame` as its last and ends it.
    pub fn end_with(&mut self, frame: Frame) {
        self.outbox.push_frame(frame);
        self.kind = Kind::Ended;
    }

    /// Ends its exec as `exit` at `now`.
    pub fn exit(&mut self, exit: Exit, started: u64, now: u64) {
        self.end_with(Frame::ExecExit(ExecExit {
            id: self.id,
            exit_code: exit.code,
            timed_out: exit.timed_out,
            duration_ms: now.saturating_sub(started),
        }));
    }

    /// Whether its last frame is sent.
    pub fn finished(&self) -> bool {
        matches!(self.kind, Kind::Ended) && self.outbox.is_empty()
    }

    /// Bytes on its channel 0.
    pub fn input(&mut self, bytes: &[u8], files: &FileStore, now: u64) {
        match &mut self.kind {
            Kind::Exec { run, tty } => {
                let mut con = Send {
                    outbox: &mut self.outbox,
                    tty: *tty,
                };
                if let Some(code) = run.program.input(bytes, &mut con) {
                    let started = run.started;
                    self.exit(Exit::code(code), started, now);
                }
            }
            Kind::Write { key, data, res, .. } => {
                let taken = files.reserve(key, res, bytes.len()).and_then(|()| {
                    // The heap is far larger than the store, but never abort on it.
                    data.try_reserve(bytes.len()).map_err(|_| {
                        FileError::NoSpace(String::from("out of memory in the test guest"))
                    })
                });
                match taken {
                    Ok(()) => data.extend_from_slice(bytes),
                    Err(e) => {
                        let frame = file_error(self.id, e);
                        self.end_with(frame);
                    }
                }
            }
            Kind::Echo => self.outbox.push_data(CHANNEL_OUT, bytes),
            Kind::Http(head) => {
                let take = bytes.len().min(MAX_HTTP_HEAD + 4 - head.len());
                head.extend_from_slice(&bytes[..take]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                    self.answer_http(HTTP_RESPONSE);
                } else if head.len() > MAX_HTTP_HEAD {
                    self.answer_http(HTTP_TOO_LARGE);
                }
            }
            Kind::Read { .. } | Kind::Ended => {}
        }
    }

    fn answer_http(&mut self, response: &[u8]) {
        self.outbox.push_data(CHANNEL_OUT, response);
        let id = self.id;
        self.end_with(Frame::StreamEnd {
            id,
            channel: CHANNEL_OUT,
        });
    }

    /// The end of its channel 0.
    pub fn eof(&mut self, files: &mut FileStore, now: u64) {
        let id = self.id;
        match core::mem::replace(&mut self.kind, Kind::Ended) {
            Kind::Exec { mut run, tty } => match run.program.eof() {
                Some(code) => self.exit(Exit::code(code), run.started, now),
                None => self.kind = Kind::Exec { run, tty },
            },
            Kind::Write {
                key,
                data,
                mode,
                res,
            } => match files.commit(&key, data, mode, res) {
                Ok(bytes) => self.end_with(Frame::FileDone { id, bytes }),
                Err(e) => self.end_with(file_error(id, e)),
            },
            Kind::Echo | Kind::Http(_) => self.end_with(Frame::StreamEnd {
                id,
                channel: CHANNEL_OUT,
            }),
            other @ (Kind::Read { .. } | Kind::Ended) => self.kind = other,
        }
    }

    /// Signal `signal` for its exec.
    pub fn signal(&mut self, signal: i32, now: u64) {
        if let Kind::Exec { run, .. } = &self.kind
            && let Some(code) = signal_exit(signal)
        {
            let started = run.started;
            self.exit(Exit::code(code), started, now);
        }
    }

    /// A new terminal size for its exec.
    pub fn resize(&mut self, size: WindowSize) {
        if let Kind::Exec { run, tty: true } = &mut self.kind {
            run.program.resize(size);
        }
    }

    /// When its exec's next timer fires.
    pub fn deadline(&self) -> Option<u64> {
        match &self.kind {
            Kind::Exec { run, .. } => run.deadline(),
            _ => None,
        }
    }

    /// Fires its exec's timers due by `now`.
    pub fn on_time(&mut self, now: u64) {
        if let Kind::Exec { run, tty } = &mut self.kind {
            let mut con = Send {
                outbox: &mut self.outbox,
                tty: *tty,
            };
            if let Some(exit) = run.on_time(now, &mut con) {
                let started = run.started;
                self.exit(exit, started, now);
            }
        }
    }

    /// Moves its exec's network work on at `now` (see
    /// [`crate::program::Program::on_net`]).
    pub fn on_net(&mut self, net: Option<&mut (dyn Network + '_)>, now: u64) {
        if let Kind::Exec { run, tty } = &mut self.kind {
            let mut con = Send {
                outbox: &mut self.outbox,
                tty: *tty,
            };
            if let Some(code) = run.program.on_net(net, now, &mut con) {
                let started = run.started;
                self.exit(Exit::code(code), started, now);
            }
        }
    }

    /// Queues more of what it makes as it is sent (a file read out, a
    /// streamed `yes`), when its outbox is empty.
    pub fn refill(&mut self, now: u64) {
        if !self.outbox.is_empty() {
            return;
        }
        let id = self.id;
        match &mut self.kind {
            Kind::Read { data, at } if *at < data.len() => {
                let n = (data.len() - *at).min(DATA_CHUNK);
                self.outbox
                    .push_vec(CHANNEL_OUT, data[*at..*at + n].to_vec());
                *at += n;
            }
            Kind::Read { .. } => self.end_with(Frame::StreamEnd {
                id,
                channel: CHANNEL_OUT,
            }),
            Kind::Exec { run, tty } if run.program.wants_pull() => {
                let mut con = Send {
                    outbox: &mut self.outbox,
                    tty: *tty,
                };
                if let Some(code) = run.program.pull(DATA_CHUNK, &mut con) {
                    let started = run.started;
                    self.exit(Exit::code(code), started, now);
                }
            }
            _ => {}
        }
    }
}
