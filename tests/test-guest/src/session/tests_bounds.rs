//! Host tests of a session's bounds, forwards and effects.

use std::vec;

use fastvm_proto::agent::{ExecRequest, Frame, StreamErrorKind};

use super::tests::{Harness, data, exit, stream_error};
use super::*;

#[test]
fn streams_are_bounded_and_ids_unique() {
    let mut h = Harness::new();
    for id in 0..MAX_STREAMS as u64 {
        h.start(id, &["cat"], None);
    }
    h.start(1, &["cat"], None);
    h.start(100, &["cat"], None);
    h.send(Frame::Connect { id: 101, port: 7 });
    let frames = h.frames();
    assert_eq!(frames.len(), 3);
    assert_eq!(stream_error(1, &frames[0]).0, StreamErrorKind::Invalid);
    assert_eq!(stream_error(100, &frames[1]).0, StreamErrorKind::Busy);
    assert_eq!(stream_error(101, &frames[2]).0, StreamErrorKind::Busy);
    h.end(5);
    assert_eq!(h.frames(), [exit(5, 0, 0)]);
    h.start(100, &["echo"], None);
    assert_eq!(h.frames().len(), 2);
}

#[test]
fn forwards_reach_the_echo_and_http_services_only() {
    let mut h = Harness::new();
    h.send(Frame::Connect { id: 1, port: 7 });
    h.data(1, b"ping");
    h.end(1);
    assert_eq!(
        h.frames(),
        [
            Frame::Connected { id: 1 },
            data(1, 1, "ping"),
            Frame::StreamEnd { id: 1, channel: 1 }
        ]
    );
    h.send(Frame::Connect { id: 2, port: 80 });
    h.data(2, b"GET / HTTP/1.0\r\nHost: x\r\n");
    assert_eq!(h.frames(), [Frame::Connected { id: 2 }]);
    h.data(2, b"\r\n");
    let response = core::str::from_utf8(HTTP_RESPONSE).unwrap();
    assert_eq!(
        h.frames(),
        [data(2, 1, response), Frame::StreamEnd { id: 2, channel: 1 }]
    );
    assert_eq!(
        response,
        "HTTP/1.0 200 OK\r\nContent-Length: 18\r\n\r\nhello from guest\r\n"
    );
    // A client that ends before its request is complete gets the end.
    h.send(Frame::Connect { id: 3, port: 80 });
    h.data(3, b"GET /");
    h.end(3);
    assert_eq!(
        h.frames(),
        [
            Frame::Connected { id: 3 },
            Frame::StreamEnd { id: 3, channel: 1 }
        ]
    );
    // An endless head is refused with 431.
    h.send(Frame::Connect { id: 4, port: 80 });
    h.data(4, &vec![b'a'; MAX_HTTP_HEAD + 1]);
    let frames = h.joined();
    assert!(matches!(&frames[1], Frame::Data(d) if d.bytes.starts_with(b"HTTP/1.0 431")));
    h.send(Frame::Connect { id: 5, port: 22 });
    let frames = h.frames();
    assert_eq!(
        stream_error(5, &frames[0]),
        (
            StreamErrorKind::Invalid,
            "connection refused: nothing listens on port 22 in the guest"
        )
    );
    assert_eq!(h.session.streams(), 0);
}

#[test]
fn effects_go_to_the_agent() {
    let mut h = Harness::new();
    assert_eq!(h.start(1, &["mmio-spam", "4"], None), Effect::BadMmio(4));
    assert_eq!(h.start(2, &["crash"], None), Effect::Crash);
    h.start(3, &["cat"], None);
    h.data(3, b"queued");
    assert_eq!(h.start(4, &["poweroff"], None), Effect::PowerOff);
    let queued = h.session.take_queued();
    assert!(queued.contains(&exit(4, 0, 0)), "{queued:?}");
    assert!(queued.contains(&data(3, 1, "queued")));
    assert_eq!(
        h.send(Frame::Exec(ExecRequest::new(["poweroff"]))),
        Effect::PowerOff
    );
}

#[test]
fn signal_exit_codes() {
    assert_eq!(signal_exit(2), Some(130));
    assert_eq!(signal_exit(9), Some(137));
    assert_eq!(signal_exit(15), Some(143));
    for ignored in [0, -1, 17, 18, 23, 28, 65] {
        assert_eq!(signal_exit(ignored), None);
    }
}
