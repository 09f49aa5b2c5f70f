//! Host tests of the built-ins that run over time.

use std::string::String;
use std::vec::Vec;

use fastvm_proto::agent::{ExecRequest, WindowSize};
use fastvm_proto::agent_stream::{CHANNEL_ERR, CHANNEL_OUT};

use super::*;
use crate::commands::{Env, Memory};
use crate::files::FileStore;

/// Output written, as (channel, text) pieces.
#[derive(Default)]
struct Seen(Vec<(u8, String)>);

impl Console for Seen {
    fn write(&mut self, channel: u8, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.0
                .push((channel, String::from_utf8_lossy(bytes).into_owned()));
        }
    }
}

impl Seen {
    fn text(&mut self) -> String {
        let text = self.0.iter().map(|(_, t)| t.as_str()).collect();
        self.0.clear();
        text
    }
}

fn start_at(argv: &[&str], tty: Option<WindowSize>, streamed: bool, now: u64) -> (Start, Seen) {
    let mut memory = Memory::new();
    let mut files = FileStore::default();
    let mut env = Env {
        memory: &mut memory,
        disk: None,
        files: &mut files,
    };
    let mut seen = Seen::default();
    let req = ExecRequest::new(argv.iter().copied());
    let start = start(&req, tty, streamed, &mut env, now, &mut seen);
    (start, seen)
}

fn running(start: Start) -> Program {
    match start {
        Start::Running(p) => p,
        Start::Exited { code, .. } => panic!("exited {code}"),
    }
}

#[test]
fn tick_prints_at_once_then_on_its_schedule() {
    let (start, mut seen) = start_at(&["tick", "3", "100"], None, true, 1000);
    let mut p = running(start);
    assert_eq!(seen.text(), "tick 1\n");
    assert_eq!(p.deadline(), Some(1100));
    assert_eq!(p.on_time(&mut seen), None);
    assert_eq!(seen.text(), "tick 2\n");
    assert_eq!(p.deadline(), Some(1200));
    assert_eq!(p.on_time(&mut seen), Some(0));
    assert_eq!(seen.text(), "tick 3\n");

    let (start, mut seen) = start_at(&["tick", "1", "100"], None, true, 0);
    assert!(matches!(start, Start::Exited { code: 0, .. }));
    assert_eq!(seen.text(), "tick 1\n");
    let (start, seen) = start_at(&["tick", "0", "100"], None, true, 0);
    assert!(matches!(start, Start::Exited { code: 0, .. }) && seen.0.is_empty());
    for bad in [
        &["tick", "x", "1"][..],
        &["tick", "3"],
        &["tick", "100001", "0"],
    ] {
        let (start, seen) = start_at(bad, None, true, 0);
        assert!(matches!(start, Start::Exited { code: 2, .. }), "{bad:?}");
        assert_eq!(seen.0[0].0, CHANNEL_ERR);
    }
}

#[test]
fn a_streamed_yes_writes_as_pulled_with_its_pattern() {
    let (start, seen) = start_at(&["yes", "5"], None, true, 0);
    let mut p = running(start);
    assert!(seen.0.is_empty() && p.wants_pull());
    let mut seen = Seen::default();
    assert_eq!(p.pull(3, &mut seen), None);
    assert_eq!(p.pull(3, &mut seen), Some(0));
    assert_eq!(seen.text(), "y\ny\ny");
    // Buffered, it is the plain command.
    let (start, mut seen) = start_at(&["yes", "5"], None, false, 0);
    assert!(matches!(start, Start::Exited { code: 0, .. }));
    assert_eq!(seen.text(), "y\ny\ny");
    let (start, _) = start_at(&["yes", "0"], None, true, 0);
    assert!(matches!(start, Start::Exited { code: 0, .. }));
    let (start, _) = start_at(&["yes", "lots"], None, true, 0);
    assert!(matches!(start, Start::Exited { code: 2, .. }));
}

#[test]
fn cat_and_sh_read_their_input() {
    let mut seen = Seen::default();
    let mut cat = running(start_at(&["cat"], None, true, 0).0);
    assert_eq!(cat.input(b"abc", &mut seen), None);
    assert_eq!(seen.0, [(CHANNEL_OUT, String::from("abc"))]);
    assert_eq!(cat.eof(), Some(0));

    let size = WindowSize { cols: 80, rows: 24 };
    let (start, mut seen) = start_at(&["sh"], Some(size), true, 0);
    let mut sh = running(start);
    assert_eq!(seen.text(), "$ ");
    sh.resize(WindowSize { cols: 10, rows: 5 });
    assert_eq!(sh.input(b"size\r", &mut seen), None);
    assert_eq!(seen.text(), "size\r\n5 10\r\n$ ");
    assert_eq!(sh.input(b"exit\r", &mut seen), Some(0));
}

#[test]
fn sleep_and_immediate_commands() {
    let mut p = running(start_at(&["sleep", "250"], None, true, 50).0);
    assert_eq!(p.deadline(), Some(300));
    assert_eq!(p.on_time(&mut Seen::default()), Some(0));
    let (start, mut seen) = start_at(&["echo", "hi"], None, true, 0);
    assert!(matches!(
        start,
        Start::Exited {
            code: 0,
            effect: Effect::None
        }
    ));
    assert_eq!(seen.text(), "hi\n");
    assert!(matches!(
        start_at(&["poweroff"], None, true, 0).0,
        Start::Exited {
            effect: Effect::PowerOff,
            ..
        }
    ));
    assert!(matches!(
        start_at(&["mmio-spam", "3"], None, false, 0).0,
        Start::Exited {
            effect: Effect::BadMmio(3),
            ..
        }
    ));
    let (start, seen) = start_at(&["nope"], None, true, 0);
    assert!(matches!(start, Start::Exited { code: 127, .. }));
    assert_eq!(
        seen.0,
        [(
            CHANNEL_ERR,
            String::from("test-guest: unknown command: nope\n")
        )]
    );
}
