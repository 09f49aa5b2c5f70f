//! The HTTP front end against slow and numerous clients (a short form of
//! a slowloris attack): half-open connections are closed within the
//! header timeout and their descriptors given back, other clients are
//! answered meanwhile, past the connection cap a client gets a 503 that
//! says why, an idle keep-alive connection is closed, and a slow body is
//! answered 408.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::daemon::Daemon;

const HEADER_TIMEOUT_SECS: u64 = 5;
const CAP: usize = 100;

fn addr(d: &Daemon) -> String {
    d.base.trim_start_matches("http://").to_string()
}

fn open_fds(d: &Daemon) -> usize {
    let pid = d.child.as_ref().unwrap().id();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A connection that sends the start of a request and never finishes it.
fn half_open(d: &Daemon) -> TcpStream {
    let mut s = TcpStream::connect(addr(d)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    s
}

/// One whole request on a new connection: (status line, whole response).
fn request(d: &Daemon, text: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr(d)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).to_string();
    (out.lines().next().unwrap_or_default().to_string(), out)
}

fn healthz(d: &Daemon) -> String {
    request(
        d,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .0
}

/// True once the peer closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_and_numerous_clients_are_bounded_and_others_still_answered() {
    let d = Daemon::start_with(&[
        "--header-timeout",
        &HEADER_TIMEOUT_SECS.to_string(),
        "--body-timeout",
        "2",
        "--max-connections",
        &CAP.to_string(),
    ]);
    assert_eq!(healthz(&d), "HTTP/1.1 200 OK");
    let baseline = open_fds(&d);

    // Below the cap, the daemon holds the slow ones and answers the rest.
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..CAP - 20).map(|_| half_open(&d)).collect();
    assert_eq!(
        healthz(&d),
        "HTTP/1.1 200 OK",
        "answered beside slow clients"
    );
    // At the cap, a new connection is told why it is refused.
    slow.extend((0..20).map(|_| half_open(&d)));
    let (status, whole) = request(&d, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(HEADER_TIMEOUT_SECS),
        "setting up took longer than the header timeout: nothing to judge"
    );
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{whole}");
    assert!(whole.contains("--max-connections"), "{whole}");

    // Every slow connection is closed within the header timeout.
    for s in &mut slow {
        let left = (Duration::from_secs(HEADER_TIMEOUT_SECS + 3)).saturating_sub(started.elapsed());
        assert!(
            closed_within(s, left.max(Duration::from_millis(100))),
            "a half-open connection outlived the header timeout"
        );
    }
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds(&d) > baseline + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_fds(&d) <= baseline + 2,
        "descriptors back to the baseline: {} against {baseline}",
        open_fds(&d)
    );
    assert_eq!(
        healthz(&d),
        "HTTP/1.1 200 OK",
        "served again after the attack"
    );

    // A keep-alive connection left idle is closed after the same timeout.
    let mut idle = TcpStream::connect(addr(&d)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 64];
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(idle.read(&mut first).unwrap() > 0);
    assert!(
        closed_within(&mut idle, Duration::from_secs(HEADER_TIMEOUT_SECS + 3)),
        "an idle keep-alive connection stays open"
    );

    // A body that never arrives is answered 408.
    let mut s = TcpStream::connect(addr(&d)).unwrap();
    s.write_all(
        format!(
            "POST /v1/vms HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            d.key
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 408"),
        "a stalled body answered: {out:?}"
    );
}

/// A console WebSocket on a new one-time token of VM `id`.
fn console(
    d: &Daemon,
    id: &str,
) -> Result<
    tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    tungstenite::Error,
> {
    tungstenite::connect(d.console_url(id)).map(|(ws, _)| ws)
}

#[test]
fn console_sessions_per_vm_and_their_messages_are_capped() {
    if !common::can_run_vms("console_sessions_per_vm_and_their_messages_are_capped") {
        return;
    }
    let d = Daemon::start();
    let (status, vm) = d.call(
        "POST",
        "/v1/vms",
        Some(&serde_json::json!({"machineType": "c1m2"})),
    );
    assert_eq!(status, 201, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();

    let mut open: Vec<_> = (0..16)
        .map(|i| console(&d, &id).unwrap_or_else(|e| panic!("session {i}: {e}")))
        .collect();
    match console(&d, &id) {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("16 console sessions"), "{body}");
        }
        other => panic!("a 17th session: {:?}", other.map(|_| ())),
    }
    // One closed makes room for another.
    let mut first = open.remove(0);
    first.close(None).unwrap();
    while first.read().is_ok() {}
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        match console(&d, &id) {
            Ok(ws) => break ws,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("no room after a session ended: {e}"),
        }
    };
    // A message past the cap ends that session, not the daemon.
    let _ = again.send(tungstenite::Message::Binary(vec![b'x'; 1 << 20].into()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        match again.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => break true,
            Ok(_) if Instant::now() < deadline => continue,
            Ok(_) => break false,
        }
    };
    assert!(ended, "a 1 MiB console message was taken");
    assert_eq!(healthz(&d), "HTTP/1.1 200 OK");
    drop(open);
}

#[test]
fn a_connection_cap_past_the_open_file_limit_is_lowered_and_said() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIP a_connection_cap_past_the_open_file_limit_is_lowered_and_said: no prlimit");
        return;
    }
    let d = Daemon::start_via(
        &["prlimit", "--nofile=1200:1200"],
        &["--max-connections", "5000"],
        true,
    );
    assert_eq!(healthz(&d), "HTTP/1.1 200 OK");
    let said = std::fs::read_to_string(d.stderr_path()).unwrap();
    assert!(
        said.contains("HTTP connections capped at 176 instead of 5000"),
        "{said}"
    );
}

#[test]
fn console_websockets_count_among_the_connections() {
    if !common::can_run_vms("console_websockets_count_among_the_connections") {
        return;
    }
    // One pooled keep-alive connection of the test's client, four consoles.
    let d = Daemon::start_with(&["--max-connections", "5"]);
    let (status, vm) = d.call(
        "POST",
        "/v1/vms",
        Some(&serde_json::json!({"machineType": "c1m2"})),
    );
    assert_eq!(status, 201, "{vm}");
    let id = vm["id"].as_str().unwrap();
    let mut consoles: Vec<_> = (0..4)
        .map(|_| tungstenite::connect(d.console_url(id)).unwrap().0)
        .collect();
    let (status, whole) = request(&d, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{whole}");
    // A console that ends gives its place back.
    let mut first = consoles.remove(0);
    first.close(None).unwrap();
    while first.read().is_ok() {}
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while healthz(&d) != "HTTP/1.1 200 OK" {
        assert!(
            Instant::now() < deadline,
            "the ended console's place never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
