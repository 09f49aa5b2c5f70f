//! Streaming exec end to end against a live daemon (the test guest): the
//! socket's `execStream`, `GET /v1/vms/{id}/exec/ws` in the
//! `v5.channel.k8s.io` protocol, and `fastvmd exec`. Output arrives while
//! the command runs, stdin goes in, a terminal has a size that follows
//! resizes, signals end the command, and bad requests are answered before
//! anything streams.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::socket::Conn;
use fastvm_proto::exec_channel::{
    self, CLOSE, MessageDecoder, RESIZE, SIGNAL, STATUS, STDERR, STDIN, STDOUT,
};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;

/// A running VM of `d`.
fn running_vm(d: &Daemon) -> String {
    let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    assert_eq!(status, 201, "{vm}");
    vm["id"].as_str().unwrap().to_string()
}

/// An exec stream on the socket, past its 101.
struct SocketExec {
    conn: Conn,
    decoder: MessageDecoder,
}

impl SocketExec {
    /// Starts `body` on VM `id`; the answer when it is not a 101.
    fn start(d: &Daemon, id: &str, body: Value) -> Result<SocketExec, (u16, Value)> {
        let mut conn = Conn::open(d, Duration::from_secs(20));
        let (status, answer) =
            conn.call(json!({"op": "execStream", "params": {"id": id}, "body": body}));
        if status != 101 {
            return Err((status, answer));
        }
        Ok(SocketExec {
            conn,
            decoder: MessageDecoder::default(),
        })
    }

    fn send(&mut self, channel: u8, bytes: &[u8]) {
        self.conn
            .writer
            .write_all(&exec_channel::frame(channel, bytes))
            .unwrap();
    }

    /// The next message.
    fn next(&mut self) -> (u8, Vec<u8>) {
        let mut buf = [0u8; 16 << 10];
        loop {
            if let Some(m) = self.decoder.next_message().unwrap() {
                return m;
            }
            let n = self.conn.reader.read(&mut buf).expect("a message in time");
            assert!(n > 0, "the daemon closed the stream without a status");
            self.decoder.push(&buf[..n]);
        }
    }

    /// Output (stdout and stderr) until `needle` has been seen in stdout.
    fn until(&mut self, needle: &str) -> String {
        let mut out = String::new();
        while !out.contains(needle) {
            let (channel, bytes) = self.next();
            assert_ne!(
                channel,
                STATUS,
                "ended before {needle:?}: {out:?} {}",
                String::from_utf8_lossy(&bytes)
            );
            if channel == STDOUT {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        out
    }

    /// (stdout, stderr, status) to the end.
    fn finish(&mut self) -> (String, String, Value) {
        let (mut out, mut err) = (String::new(), String::new());
        loop {
            let (channel, bytes) = self.next();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match channel {
                STDOUT => out.push_str(&text),
                STDERR => err.push_str(&text),
                STATUS => return (out, err, serde_json::from_str(&text).unwrap()),
                other => panic!("channel {other} from the daemon"),
            }
        }
    }
}

#[test]
fn socket_streams_live_output_stdin_terminal_and_signals() {
    if !common::can_run_vms("socket_streams_live_output_stdin_terminal_and_signals") {
        return;
    }
    let d = Daemon::start();
    let id = running_vm(&d);

    // Live: the first tick arrives a good while before the command ends.
    let started = Instant::now();
    let mut s = SocketExec::start(&d, &id, json!({"command": ["tick", "2", "1500"]})).unwrap();
    s.until("tick 1");
    let first = started.elapsed();
    let (out, _, status) = s.finish();
    let total = started.elapsed();
    assert_eq!(out, "tick 2\n");
    assert_eq!(exec_channel::exit_code_of(&status), Some(0), "{status}");
    assert!(
        total - first >= Duration::from_millis(1000),
        "first tick at {first:?}, end at {total:?}"
    );

    // Stdin in, the same bytes out, and stdin's close ends `cat`.
    let mut s = SocketExec::start(&d, &id, json!({"command": ["cat"]})).unwrap();
    s.send(STDIN, b"hello ");
    assert_eq!(s.until("hello "), "hello ");
    s.send(STDIN, b"world");
    s.send(CLOSE, &[STDIN]);
    let (out, _, status) = s.finish();
    assert_eq!(out, "world");
    assert_eq!(status["status"], "Success", "{status}");

    // A terminal with a size that follows a resize.
    let tty = json!({"command": ["sh"], "tty": true, "cols": 80, "rows": 24});
    let mut s = SocketExec::start(&d, &id, tty).unwrap();
    s.until("$ ");
    s.send(STDIN, b"size\r");
    s.until("24 80");
    s.send(RESIZE, br#"{"Width":100,"Height":30}"#);
    s.send(STDIN, b"size\r");
    s.until("30 100");
    s.send(STDIN, b"exit\r");
    let (_, _, status) = s.finish();
    assert_eq!(exec_channel::exit_code_of(&status), Some(0), "{status}");

    // A signal ends a command (SIGINT: 128 + 2), and a failure says so.
    let mut s = SocketExec::start(&d, &id, json!({"command": ["sleep", "60000"]})).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.send(SIGNAL, br#"{"Signal":2}"#);
    let (_, _, status) = s.finish();
    assert_eq!(exec_channel::exit_code_of(&status), Some(130), "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode");

    // stderr on its own channel, the exit code passed on.
    let mut s = SocketExec::start(&d, &id, json!({"command": ["stderr", "oops"]})).unwrap();
    let (out, err, _) = s.finish();
    assert_eq!((out.as_str(), err.as_str()), ("", "oops\n"));
    let mut s = SocketExec::start(&d, &id, json!({"command": ["exit", "3"]})).unwrap();
    let (_, _, status) = s.finish();
    assert_eq!(exec_channel::exit_code_of(&status), Some(3), "{status}");

    // A client message that makes no sense ends the session, saying why.
    let mut s = SocketExec::start(&d, &id, json!({"command": ["cat"]})).unwrap();
    s.send(RESIZE, b"not json");
    let (_, _, status) = s.finish();
    assert_eq!(status["status"], "Failure");
    assert!(
        status["message"].as_str().unwrap().contains("resize"),
        "{status}"
    );
}

#[test]
fn bad_exec_streams_are_answered_before_anything_streams() {
    if !common::can_run_vms("bad_exec_streams_are_answered_before_anything_streams") {
        return;
    }
    let d = Daemon::start();
    let id = running_vm(&d);
    let refused = |body: Value| SocketExec::start(&d, &id, body).err().expect("refused");
    let (status, body) = refused(json!({"command": []}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("command"),
        "{body}"
    );
    let (status, body) = refused(json!({"command": ["x"], "cwd": "relative"}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = refused(json!({"command": ["x"], "bogus": 1}));
    assert_eq!(status, 400, "{body}");
    let other = "6f1c2d3e-0000-4000-8000-000000000000";
    let err = SocketExec::start(&d, other, json!({"command": ["x"]}))
        .err()
        .unwrap();
    assert_eq!(err.0, 404, "{}", err.1);

    let (status, _) = d.call("DELETE", &format!("/v1/vms/{id}"), None);
    assert_eq!(status, 200);
    let (status, body) = refused(json!({"command": ["echo"]}));
    assert_eq!(status, 404, "a deleted VM: {body}");
}

/// A WebSocket request for `query` on VM `id`, with the daemon's key and
/// (or not) the subprotocol.
fn ws_request(
    d: &Daemon,
    id: &str,
    query: &str,
    subprotocol: bool,
    key: bool,
) -> tungstenite::handshake::client::Request {
    let url = format!(
        "{}/v1/vms/{id}/exec/ws?{query}",
        d.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    if subprotocol {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            exec_channel::SUBPROTOCOL.parse().unwrap(),
        );
    }
    if key {
        req.headers_mut()
            .insert("X-API-Key", d.key.parse().unwrap());
    }
    req
}

fn http_status(result: Result<impl Sized, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("upgraded"),
    }
}

#[test]
fn websocket_speaks_the_kubernetes_exec_channels() {
    if !common::can_run_vms("websocket_speaks_the_kubernetes_exec_channels") {
        return;
    }
    let d = Daemon::start();
    let id = running_vm(&d);

    let req = ws_request(&d, &id, "command=cat", true, true);
    let (mut ws, resp) = tungstenite::connect(req).unwrap();
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        exec_channel::SUBPROTOCOL
    );
    let send = |ws: &mut tungstenite::WebSocket<_>, channel: u8, bytes: &[u8]| {
        let mut m = vec![channel];
        m.extend_from_slice(bytes);
        ws.send(tungstenite::Message::Binary(m.into())).unwrap();
    };
    send(&mut ws, STDIN, b"ping");
    send(&mut ws, CLOSE, &[STDIN]);
    let (mut out, mut status) = (Vec::new(), Value::Null);
    while status.is_null() {
        match ws.read().unwrap() {
            tungstenite::Message::Binary(m) => match m.split_first() {
                Some((&STDOUT, rest)) => out.extend_from_slice(rest),
                Some((&STATUS, rest)) => status = serde_json::from_slice(rest).unwrap(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(out, b"ping");
    assert_eq!(status["status"], "Success", "{status}");
    let _: &mut TcpStream = match ws.get_mut() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!(),
    };

    // Arguments repeat; the query is checked before the upgrade.
    let req = ws_request(&d, &id, "command=echo&command=a&command=b", true, true);
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    match ws.read().unwrap() {
        tungstenite::Message::Binary(m) => assert_eq!(&m[..], b"\x01a b\n"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        http_status(tungstenite::connect(ws_request(
            &d,
            &id,
            "command=cat",
            false,
            true
        ))),
        400
    );
    assert_eq!(
        http_status(tungstenite::connect(ws_request(
            &d,
            &id,
            "command=cat",
            true,
            false
        ))),
        401
    );
    assert_eq!(
        http_status(tungstenite::connect(ws_request(
            &d,
            &id,
            "tty=maybe&command=x",
            true,
            true
        ))),
        400
    );
    assert_eq!(
        http_status(tungstenite::connect(ws_request(&d, &id, "", true, true))),
        400
    );
    let other = "6f1c2d3e-0000-4000-8000-000000000000";
    assert_eq!(
        http_status(tungstenite::connect(ws_request(
            &d,
            other,
            "command=x",
            true,
            true
        ))),
        404
    );
}

#[test]
fn fastvmd_exec_streams_and_exits_with_the_commands_status() {
    if !common::can_run_vms("fastvmd_exec_streams_and_exits_with_the_commands_status") {
        return;
    }
    let d = Daemon::start();
    let id = running_vm(&d);
    let exec = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(common::fastvmd_bin())
            .arg("exec")
            .arg("--socket")
            .arg(d.data_dir.join("fastvmd.sock"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let prefix = &id[..8];
    let out = exec(&[prefix, "--", "echo", "hi", "there"], b"");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"hi there\n");
    let out = exec(&[prefix, "--", "exit", "7"], b"");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = exec(&[prefix, "-i", "--", "cat"], b"from stdin");
    assert_eq!(out.stdout, b"from stdin", "{out:?}");
    // Without -i stdin is closed at once: cat ends with nothing.
    let out = exec(&[prefix, "--", "cat"], b"ignored");
    assert_eq!(
        (out.status.code(), out.stdout.len()),
        (Some(0), 0),
        "{out:?}"
    );
    let out = exec(&["nosuchvm", "--", "echo"], b"");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuchvm"),
        "{out:?}"
    );
}
