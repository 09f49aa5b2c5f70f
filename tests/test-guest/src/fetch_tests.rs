//! Host tests of `net-fetch` and `net-ping` over the fake network.

use std::string::String;
use std::vec::Vec;

use fastvm_proto::agent::ExecRequest;

use super::*;
use crate::commands::{Env, Memory};
use crate::fake_net::FakeNet;
use crate::files::FileStore;
use crate::program::{self, Program, Start};

/// What a program wrote.
#[derive(Default)]
struct Seen {
    out: Vec<u8>,
    err: String,
    dropped: usize,
}

impl Console for Seen {
    fn write(&mut self, channel: u8, bytes: &[u8]) {
        match channel {
            CHANNEL_ERR => self.err.push_str(core::str::from_utf8(bytes).unwrap()),
            _ => self.out.extend_from_slice(bytes),
        }
    }

    fn dropped(&mut self, channel: u8) {
        assert_eq!(channel, CHANNEL_OUT);
        self.dropped += 1;
    }
}

fn start(argv: &[&str], now: u64) -> (Start, Seen) {
    let mut memory = Memory::new();
    let mut files = FileStore::default();
    let mut env = Env {
        memory: &mut memory,
        disk: None,
        files: &mut files,
    };
    let mut seen = Seen::default();
    let req = ExecRequest::new(argv.iter().copied());
    let started = program::start(&req, None, true, &mut env, now, &mut seen);
    (started, seen)
}

fn running(argv: &[&str], now: u64) -> Program {
    match start(argv, now).0 {
        Start::Running(p) => p,
        Start::Exited { code, .. } => panic!("{argv:?} exited {code}"),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| String::from(*a)).collect()
}

#[test]
fn arguments() {
    let (to, request) = parse_args(&strings(&["192.0.2.7", "8080"])).unwrap();
    assert_eq!(to, "192.0.2.7:8080".parse().unwrap());
    assert_eq!(request, b"GET / HTTP/1.0\r\n\r\n");
    let (to, request) =
        parse_args(&strings(&["2001:db8::1", "80", "HEAD", "/x", "HTTP/1.1"])).unwrap();
    assert_eq!(to, "[2001:db8::1]:80".parse().unwrap());
    assert_eq!(request, b"HEAD /x HTTP/1.1\r\n\r\n");
    let (to, _) = parse_args(&strings(&["[fd00::1]", "7000", "hi"])).unwrap();
    assert_eq!(to, "[fd00::1]:7000".parse().unwrap());
    for bad in [
        &[][..],
        &["192.0.2.7"],
        &["192.0.2.7", "0"],
        &["192.0.2.7", "65536"],
        &["192.0.2.7", "http"],
        &["example.com", "80"],
        &["192.0.2.300", "80"],
    ] {
        assert_eq!(parse_args(&strings(bad)), None, "{bad:?}");
        let mut argv = std::vec!["net-fetch"];
        argv.extend_from_slice(bad);
        let (started, seen) = start(&argv, 0);
        assert!(matches!(started, Start::Exited { code: 2, .. }), "{bad:?}");
        assert_eq!(seen.err, USAGE);
    }
}

#[test]
fn connects_sends_prints_and_ends_when_the_peer_closes() {
    let mut net = FakeNet::default();
    let mut seen = Seen::default();
    let mut p = running(
        &["net-fetch", "192.0.2.7", "80", "GET", "/a", "HTTP/1.0"],
        100,
    );
    assert_eq!(p.on_net(Some(&mut net), 100, &mut seen), None);
    assert_eq!(net.conn().to, "192.0.2.7:80".parse().unwrap());
    // Nothing goes before the handshake; then as the room allows.
    assert!(net.conn().sent.is_empty());
    net.conn().state = TcpState::Open;
    net.conn().room = 4;
    assert_eq!(p.on_net(Some(&mut net), 200, &mut seen), None);
    assert_eq!(net.conn().sent, b"GET ");
    net.conn().room = usize::MAX;
    net.conn().inbox.extend(b"HTTP/1.0 200 OK\r\n\r\n");
    assert_eq!(p.on_net(Some(&mut net), 300, &mut seen), None);
    assert_eq!(net.conn().sent, b"GET /a HTTP/1.0\r\n\r\n");
    assert_eq!(seen.out, b"HTTP/1.0 200 OK\r\n\r\n");
    // Data and the close in one go: all of it is printed, then it ends.
    net.conn().inbox.extend(b"hello");
    net.conn().state = TcpState::PeerClosed;
    assert_eq!(p.on_net(Some(&mut net), 400, &mut seen), Some(0));
    assert_eq!(seen.out, b"HTTP/1.0 200 OK\r\n\r\nhello");
    assert_eq!((seen.err.as_str(), seen.dropped), ("", 0));
    // Its connection goes with it.
    assert!(!net.conn().owner.released());
    drop(p);
    assert!(net.conn().owner.released());
}

#[test]
fn refused_reset_and_no_route_fail_on_stderr() {
    for why in ["connection refused", "connection reset by peer"] {
        let mut net = FakeNet::default();
        let mut seen = Seen::default();
        let mut p = running(&["net-fetch", "192.0.2.7", "81"], 0);
        assert_eq!(p.on_net(Some(&mut net), 0, &mut seen), None);
        net.conn().state = TcpState::Failed(why);
        assert_eq!(p.on_net(Some(&mut net), 5, &mut seen), Some(1));
        assert_eq!(seen.err, std::format!("test-guest: net-fetch: {why}\n"));
    }
    let mut net = FakeNet {
        refuse: Some(String::from("no route (no IPv4 address)")),
        ..FakeNet::default()
    };
    let mut seen = Seen::default();
    let mut p = running(&["net-fetch", "192.0.2.7", "80"], 0);
    assert_eq!(p.on_net(Some(&mut net), 0, &mut seen), Some(1));
    assert_eq!(
        seen.err,
        "test-guest: net-fetch: no route (no IPv4 address)\n"
    );
    let mut seen = Seen::default();
    let mut p = running(&["net-fetch", "192.0.2.7", "80"], 0);
    assert_eq!(p.on_net(None, 0, &mut seen), Some(1));
    assert_eq!(
        seen.err,
        "test-guest: net-fetch: no network (no NIC configured)\n"
    );
}

#[test]
fn times_out_without_progress() {
    let mut net = FakeNet::default();
    let mut seen = Seen::default();
    let mut p = running(&["net-fetch", "192.0.2.7", "80"], 1000);
    assert_eq!(p.on_net(Some(&mut net), 1000, &mut seen), None);
    assert_eq!(p.on_net(Some(&mut net), 9000, &mut seen), None);
    assert_eq!(p.deadline(), Some(11_000));
    assert_eq!(p.on_time(&mut seen), Some(1));
    assert_eq!(seen.err, "test-guest: net-fetch: timed out after 10 s\n");

    // Connected, each piece of data puts the deadline off.
    let mut net = FakeNet::default();
    let mut seen = Seen::default();
    let mut p = running(&["net-fetch", "192.0.2.7", "80"], 0);
    p.on_net(Some(&mut net), 0, &mut seen);
    net.conn().state = TcpState::Open;
    p.on_net(Some(&mut net), 2000, &mut seen);
    assert_eq!(p.deadline(), Some(12_000));
    net.conn().inbox.extend(b"x");
    p.on_net(Some(&mut net), 7000, &mut seen);
    assert_eq!(p.deadline(), Some(17_000));
    p.on_net(Some(&mut net), 8000, &mut seen);
    assert_eq!(p.deadline(), Some(17_000));
    assert_eq!(p.on_time(&mut seen), Some(1));
    assert_eq!(seen.out, b"x");
    assert_eq!(
        seen.err,
        "test-guest: net-fetch: timed out after 10 s without data\n"
    );
}

#[test]
fn keeps_at_most_a_mebibyte() {
    let mut net = FakeNet::default();
    let mut seen = Seen::default();
    let mut p = running(&["net-fetch", "192.0.2.7", "80"], 0);
    p.on_net(Some(&mut net), 0, &mut seen);
    net.conn().state = TcpState::Open;
    net.conn()
        .inbox
        .extend(std::iter::repeat_n(b'a', MAX_OUTPUT - 3));
    p.on_net(Some(&mut net), 1, &mut seen);
    net.conn().inbox.extend(b"bbbbbb");
    p.on_net(Some(&mut net), 2, &mut seen);
    net.conn().inbox.extend(b"cc");
    net.conn().state = TcpState::PeerClosed;
    assert_eq!(p.on_net(Some(&mut net), 3, &mut seen), Some(0));
    assert_eq!(seen.out.len(), MAX_OUTPUT);
    assert!(seen.out.ends_with(b"aaabbb"));
    assert_eq!(seen.dropped, 1);
    assert!(net.conn().inbox.is_empty());
}

#[test]
fn ping_replies_or_times_out() {
    let mut net = FakeNet::default();
    let mut seen = Seen::default();
    let mut p = running(&["net-ping", "192.0.2.7"], 0);
    assert_eq!(p.on_net(Some(&mut net), 0, &mut seen), None);
    assert_eq!(p.on_net(Some(&mut net), 10, &mut seen), None);
    assert_eq!(net.pings.len(), 1);
    net.pings[0].2 = true;
    assert_eq!(p.on_net(Some(&mut net), 20, &mut seen), Some(0));
    assert_eq!(seen.out, b"reply from 192.0.2.7\n");

    let mut seen = Seen::default();
    let mut p = running(&["net-ping", "fd00::1"], 100);
    p.on_net(Some(&mut net), 100, &mut seen);
    assert_eq!(p.deadline(), Some(5100));
    assert_eq!(p.on_time(&mut seen), Some(1));
    assert_eq!(
        seen.err,
        "test-guest: net-ping: no reply from fd00::1 after 5 s\n"
    );
    drop(p);
    assert!(net.pings[1].1.released());

    for bad in [
        &["net-ping"][..],
        &["net-ping", "host"],
        &["net-ping", "1.2.3.4", "x"],
    ] {
        let (started, seen) = start(bad, 0);
        assert!(matches!(started, Start::Exited { code: 2, .. }), "{bad:?}");
        assert_eq!(seen.err, crate::ping::USAGE);
    }
}
