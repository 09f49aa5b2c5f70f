//! Host tests of a connection's session: streaming execs, buffered execs
//! beside them, forwards and bounds (files: `tests_files.rs`).

use std::collections::BTreeMap;
use std::string::String;
use std::vec::Vec;
use std::{format, vec};

use fastvm_proto::agent::{
    DATA_CHUNK, Data, ExecExit, ExecRequest, ExecResult, ExecStart, Frame, STREAMS_VERSION,
    StreamError, StreamErrorKind, WindowSize,
};

use super::*;
use crate::commands::Memory;
use crate::files::FileStore;

/// A session with its guest state and a clock the test moves.
pub(super) struct Harness {
    pub session: Session,
    pub memory: Memory,
    pub files: FileStore,
    pub now: u64,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            session: Session::new(),
            memory: Memory::new(),
            files: FileStore::default(),
            now: 0,
        }
    }

    /// Hands the session one frame from the host.
    pub fn send(&mut self, frame: Frame) -> Effect {
        let now = self.now;
        let mut env = Env {
            memory: &mut self.memory,
            disk: None,
            files: &mut self.files,
        };
        self.session.handle(frame, &mut env, &|| now)
    }

    /// Sends `bytes` on stream `id`'s channel 0.
    pub fn data(&mut self, id: u64, bytes: &[u8]) {
        self.send(Frame::Data(Data {
            id,
            channel: 0,
            bytes: bytes.to_vec(),
        }));
    }

    /// Ends stream `id`'s channel 0.
    pub fn end(&mut self, id: u64) {
        self.send(Frame::StreamEnd { id, channel: 0 });
    }

    /// Moves the clock on by `ms` and fires what is due.
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        self.session.on_time(self.now);
    }

    /// Every frame the session has to send now.
    pub fn frames(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(frame) = self.session.next_frame(self.now) {
            if let Frame::Data(d) = &frame {
                assert!(d.bytes.len() <= DATA_CHUNK && !d.bytes.is_empty(), "{d:?}");
            }
            out.push(frame);
        }
        out
    }

    /// Every frame to send now, with the data frames of each (id,
    /// channel) joined as text, in the order their first came.
    pub fn joined(&mut self) -> Vec<Frame> {
        let mut out: Vec<Frame> = Vec::new();
        for frame in self.frames() {
            if let (Frame::Data(d), Some(Frame::Data(last))) = (&frame, out.last_mut())
                && (last.id, last.channel) == (d.id, d.channel)
            {
                last.bytes.extend_from_slice(&d.bytes);
                continue;
            }
            out.push(frame);
        }
        out
    }

    /// Starts a streaming exec.
    pub fn start(&mut self, id: u64, argv: &[&str], tty: Option<WindowSize>) -> Effect {
        self.send(Frame::ExecStart(ExecStart {
            id,
            argv: argv.iter().map(|a| String::from(*a)).collect(),
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            tty,
            timeout_ms: None,
        }))
    }
}

pub(super) fn data(id: u64, channel: u8, text: &str) -> Frame {
    Frame::Data(Data {
        id,
        channel,
        bytes: text.as_bytes().to_vec(),
    })
}

pub(super) fn exit(id: u64, code: i32, duration_ms: u64) -> Frame {
    Frame::ExecExit(ExecExit {
        id,
        exit_code: code,
        timed_out: false,
        duration_ms,
    })
}

pub(super) fn stream_error(id: u64, frame: &Frame) -> (StreamErrorKind, &str) {
    match frame {
        Frame::StreamError(StreamError {
            id: got,
            kind,
            message,
        }) if *got == id => (*kind, message.as_str()),
        other => panic!("expected the error of stream {id}, got {other:?}"),
    }
}

#[test]
fn ready_announces_streams() {
    match ready("test-guest 0.1.0") {
        Frame::Ready(r) => assert_eq!(
            (r.version, r.agent.as_str()),
            (STREAMS_VERSION, "test-guest 0.1.0")
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_immediate_built_in_streams_its_output_then_its_exit() {
    let mut h = Harness::new();
    h.start(1, &["echo", "hello", "world"], None);
    assert_eq!(h.frames(), [data(1, 1, "hello world\n"), exit(1, 0, 0)]);
    h.start(2, &["stderr", "oops"], None);
    assert_eq!(h.frames(), [data(2, 2, "oops\n"), exit(2, 0, 0)]);
    // A terminal has one output.
    h.start(
        3,
        &["stderr", "oops"],
        Some(WindowSize { cols: 80, rows: 24 }),
    );
    assert_eq!(h.frames(), [data(3, 1, "oops\n"), exit(3, 0, 0)]);
    h.start(4, &["frobnicate"], None);
    assert_eq!(
        h.frames(),
        [
            data(4, 2, "test-guest: unknown command: frobnicate\n"),
            exit(4, 127, 0)
        ]
    );
    h.start(5, &["exit", "42"], None);
    assert_eq!(h.frames(), [exit(5, 42, 0)]);
    // Ids are free again once a stream ended.
    h.start(1, &["echo"], None);
    assert_eq!(h.frames(), [data(1, 1, "\n"), exit(1, 0, 0)]);
    assert_eq!(h.session.streams(), 0);
}

#[test]
fn cat_sends_its_input_back_as_it_comes() {
    let mut h = Harness::new();
    h.start(7, &["cat"], None);
    assert_eq!(h.frames(), []);
    h.data(7, b"abc");
    assert_eq!(h.frames(), [data(7, 1, "abc")]);
    h.data(7, b"de");
    h.data(7, b"f");
    assert_eq!(h.frames(), [data(7, 1, "def")]);
    h.advance(30);
    h.end(7);
    assert_eq!(h.frames(), [exit(7, 0, 30)]);
    // Frames for a stream that is gone are ignored.
    h.data(7, b"late");
    h.end(7);
    h.send(Frame::Signal { id: 7, signal: 9 });
    h.send(Frame::Resize {
        id: 7,
        cols: 1,
        rows: 1,
    });
    assert_eq!(h.frames(), []);
}

#[test]
fn tick_goes_out_live_on_its_timer() {
    let mut h = Harness::new();
    h.now = 1000;
    h.start(1, &["tick", "3", "100"], None);
    assert_eq!(h.frames(), [data(1, 1, "tick 1\n")]);
    assert_eq!(h.session.next_deadline(), Some(1100));
    h.advance(99);
    assert_eq!(h.frames(), []);
    h.advance(1);
    assert_eq!(h.frames(), [data(1, 1, "tick 2\n")]);
    h.advance(100);
    assert_eq!(h.frames(), [data(1, 1, "tick 3\n"), exit(1, 0, 200)]);
    assert_eq!(h.session.next_deadline(), None);
}

#[test]
fn sleep_timeout_and_signals_end_a_stream() {
    let mut h = Harness::new();
    h.send(Frame::ExecStart(ExecStart {
        id: 1,
        argv: vec!["sleep".into(), "1000".into()],
        env: BTreeMap::new(),
        cwd: None,
        user: None,
        tty: None,
        timeout_ms: Some(300),
    }));
    h.start(2, &["sleep", "200"], None);
    h.start(3, &["sh"], None);
    assert_eq!(h.frames(), [data(3, 1, "$ ")]);
    assert_eq!(h.session.next_deadline(), Some(200));
    h.advance(250);
    assert_eq!(h.frames(), [exit(2, 0, 250)]);
    // Default-ignored signals and non-signals do nothing.
    h.send(Frame::Signal { id: 3, signal: 28 });
    h.send(Frame::Signal { id: 3, signal: 0 });
    assert_eq!(h.frames(), []);
    h.send(Frame::Signal { id: 3, signal: 2 });
    assert_eq!(h.frames(), [exit(3, 130, 250)]);
    h.advance(50);
    assert_eq!(
        h.frames(),
        [Frame::ExecExit(ExecExit {
            id: 1,
            exit_code: 124,
            timed_out: true,
            duration_ms: 300
        })]
    );
}

#[test]
fn sh_on_a_terminal_echoes_answers_and_follows_resizes() {
    let mut h = Harness::new();
    h.start(9, &["sh"], Some(WindowSize { cols: 80, rows: 24 }));
    h.data(9, b"size\r");
    h.data(9, b"hi there\n");
    assert_eq!(
        h.joined(),
        [data(
            9,
            1,
            "$ size\r\n24 80\r\n$ hi there\r\nyou said: hi there\r\n$ "
        )]
    );
    h.send(Frame::Resize {
        id: 9,
        cols: 100,
        rows: 40,
    });
    h.data(9, b"size\rexit\r");
    assert_eq!(
        h.joined(),
        [data(9, 1, "size\r\n40 100\r\n$ exit\r\n"), exit(9, 0, 0)]
    );
    // Without a terminal, its size is 0 0; the end of input ends it.
    h.start(10, &["sh"], None);
    h.data(10, b"size\n");
    h.end(10);
    assert_eq!(
        h.joined(),
        [data(10, 1, "$ size\r\n0 0\r\n$ "), exit(10, 0, 0)]
    );
}

#[test]
fn a_streamed_yes_is_made_as_it_is_sent() {
    let mut h = Harness::new();
    let total = DATA_CHUNK * 3 + 5;
    h.start(1, &["yes", &format!("{total}")], None);
    assert_eq!(h.session.queued_bytes(), 0);
    let frames = h.frames();
    let mut bytes = Vec::new();
    for f in &frames[..frames.len() - 1] {
        let Frame::Data(d) = f else { panic!("{f:?}") };
        bytes.extend_from_slice(&d.bytes);
    }
    assert_eq!(frames.len(), 5);
    assert_eq!(frames[4], exit(1, 0, 0));
    assert_eq!(bytes.len(), total);
    assert!(bytes.chunks(2).all(|p| p == b"y\n" || p == b"y"));
}

#[test]
fn streams_take_turns() {
    let mut h = Harness::new();
    let n = format!("{}", DATA_CHUNK * 2);
    h.start(1, &["yes", &n], None);
    h.start(2, &["yes", &n], None);
    let order: Vec<u64> = h
        .frames()
        .iter()
        .map(|f| match f {
            Frame::Data(d) => d.id,
            Frame::ExecExit(e) => e.id + 100,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(order, [1, 2, 1, 2, 101, 102]);
}

#[test]
fn pings_and_buffered_execs_are_answered_while_streams_and_sleeps_run() {
    let mut h = Harness::new();
    h.start(1, &["cat"], None);
    h.send(Frame::Exec(ExecRequest {
        id: 5,
        ..ExecRequest::new(["sleep", "100"])
    }));
    h.send(Frame::Exec(ExecRequest {
        id: 6,
        ..ExecRequest::new(["sleep", "50"])
    }));
    h.send(Frame::Ping { nonce: 3 });
    h.send(Frame::Exec(ExecRequest {
        id: 7,
        ..ExecRequest::new(["echo", "x"])
    }));
    h.data(1, b"in");
    let frames = h.frames();
    assert_eq!(frames[0], Frame::Pong { nonce: 3 });
    assert!(matches!(&frames[1], Frame::ExecResult(r) if r.id == 7 && r.stdout == "x\n"));
    assert_eq!(frames[2], data(1, 1, "in"));
    assert_eq!(h.session.running_execs(), 2);
    h.advance(50);
    assert!(matches!(&h.frames()[..], [Frame::ExecResult(r)] if r.id == 6 && r.duration_ms == 50));
    h.advance(50);
    assert!(matches!(&h.frames()[..], [Frame::ExecResult(r)] if r.id == 5));
    // An unexpected frame is answered with an error, as before.
    h.send(Frame::Pong { nonce: 1 });
    assert!(matches!(&h.frames()[..], [Frame::Error { message }] if message.contains("pong 1")));
}

#[test]
fn a_buffered_tick_gives_its_total_output_or_what_came_before_its_timeout() {
    let mut h = Harness::new();
    h.send(Frame::Exec(ExecRequest {
        id: 1,
        ..ExecRequest::new(["tick", "3", "50"])
    }));
    let mut req = ExecRequest::new(["tick", "3", "50"]);
    req.id = 2;
    req.timeout_ms = Some(60);
    h.send(Frame::Exec(req));
    h.advance(60);
    let [Frame::ExecResult(cut)] = &h.frames()[..] else {
        panic!()
    };
    assert_eq!(
        (cut.id, cut.exit_code, cut.timed_out, cut.stdout.as_str()),
        (2, 124, true, "tick 1\ntick 2\n")
    );
    h.advance(40);
    let [Frame::ExecResult(whole)] = &h.frames()[..] else {
        panic!()
    };
    assert_eq!(
        whole,
        &ExecResult {
            id: 1,
            stdout: "tick 1\ntick 2\ntick 3\n".into(),
            duration_ms: 100,
            ..ExecResult::default()
        }
    );
    // Buffered, cat and sh see no input.
    h.send(Frame::Exec(ExecRequest::new(["cat"])));
    h.send(Frame::Exec(ExecRequest::new(["sh"])));
    let frames = h.frames();
    assert!(matches!(&frames[0], Frame::ExecResult(r) if r.exit_code == 0 && r.stdout.is_empty()));
    assert!(matches!(&frames[1], Frame::ExecResult(r) if r.stdout == "$ "));
    // A sleep as long as its timeout ends by itself.
    let mut req = ExecRequest::new(["sleep", "20"]);
    req.timeout_ms = Some(20);
    h.send(Frame::Exec(req));
    h.advance(20);
    assert!(matches!(&h.frames()[..], [Frame::ExecResult(r)] if !r.timed_out && r.exit_code == 0));
}
