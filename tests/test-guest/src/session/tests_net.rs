//! Host tests of execs on the network in a session (over the fake one).

use std::vec;

use fastvm_proto::agent::{ExecRequest, ExecResult, Frame};

use super::tests::{Harness, data, exit};
use crate::fake_net::FakeNet;
use crate::network::TcpState;
use crate::program::Effect;

#[test]
fn a_buffered_and_a_streamed_fetch_run_side_by_side() {
    let mut h = Harness::new();
    let mut net = FakeNet::default();
    let mut req = ExecRequest::new(["net-fetch", "192.0.2.7", "80"]);
    req.id = 1;
    h.send(Frame::Exec(req));
    h.start(2, &["net-fetch", "fd00::9", "7000", "hi"], None);
    h.session.on_net(h.now, Some(&mut net));
    assert_eq!(net.conns.len(), 2);
    assert_eq!(h.frames(), []);
    assert_eq!(h.session.next_deadline(), Some(10_000));

    h.now = 50;
    for c in &mut net.conns {
        c.state = TcpState::Open;
    }
    net.conns[0].inbox.extend(b"page");
    net.conns[1].inbox.extend(b"fastvm 7000\n");
    h.session.on_net(h.now, Some(&mut net));
    assert_eq!(net.conns[0].sent, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(net.conns[1].sent, b"hi\r\n\r\n");
    assert_eq!(h.frames(), [data(2, 1, "fastvm 7000\n")]);

    h.now = 80;
    net.conns[0].state = TcpState::PeerClosed;
    net.conns[1].state = TcpState::Failed("connection reset by peer");
    h.session.on_net(h.now, Some(&mut net));
    let result = ExecResult {
        id: 1,
        exit_code: 0,
        stdout: "page".into(),
        stderr: "".into(),
        stdout_truncated: false,
        stderr_truncated: false,
        timed_out: false,
        duration_ms: 80,
    };
    assert_eq!(
        h.frames(),
        vec![
            Frame::ExecResult(result),
            data(2, 2, "test-guest: net-fetch: connection reset by peer\n"),
            exit(2, 1, 80),
        ]
    );
    assert!(net.conns.iter().all(|c| c.owner.released()));
    assert_eq!(h.session.next_deadline(), None);
}

#[test]
fn a_signal_or_a_timeout_lets_the_connection_go() {
    let mut h = Harness::new();
    let mut net = FakeNet::default();
    h.start(3, &["net-fetch", "192.0.2.7", "80"], None);
    h.session.on_net(h.now, Some(&mut net));
    h.send(Frame::Signal { id: 3, signal: 15 });
    assert_eq!(h.frames(), [exit(3, 143, 0)]);
    assert!(net.conn().owner.released());

    let mut net = FakeNet::default();
    h.start(4, &["net-fetch", "192.0.2.7", "80"], None);
    h.session.on_net(h.now, Some(&mut net));
    h.advance(10_000);
    assert_eq!(
        h.frames(),
        [
            data(4, 2, "test-guest: net-fetch: timed out after 10 s\n"),
            exit(4, 1, 10_000)
        ]
    );
    assert!(net.conn().owner.released());
}

#[test]
fn set_network_asks_the_agent_to_apply_it_and_a_bad_one_is_refused() {
    let mut h = Harness::new();
    let set = |ip4: Option<&str>| Frame::SetNetwork {
        nonce: 9,
        mac: "02:00:00:00:00:01".into(),
        ip6: "fd00::12/128".into(),
        gw6: "fe80::1".into(),
        ip4: ip4.map(Into::into),
        gw4: Some("100.64.0.1".into()),
    };
    match h.send(set(Some("100.64.3.4/32"))) {
        Effect::Network { nonce, config } => {
            assert_eq!(nonce, 9);
            let v4 = config.ipv4.expect("an IPv4 address");
            assert_eq!(
                v4.addr,
                "100.64.3.4".parse::<core::net::Ipv4Addr>().unwrap()
            );
            assert_eq!(
                config.addr,
                "fd00::12".parse::<core::net::Ipv6Addr>().unwrap()
            );
        }
        other => panic!("{other:?}"),
    }
    // The agent answers once it applied it; nothing is queued before.
    assert!(h.frames().is_empty());
    h.session.answer(Frame::Pong { nonce: 9 });
    assert_eq!(h.frames(), [Frame::Pong { nonce: 9 }]);
    // A gateway without an address is refused at once.
    assert_eq!(h.send(set(None)), Effect::None);
    assert!(
        matches!(&h.frames()[..], [Frame::Error { message }] if message.contains("fastvm.gw4")),
        "a bad setting answered otherwise"
    );
}
