//! [`wait`] against a fake agent on a real Unix socket: the monitor's
//! `CONNECT` handshake, the `ready` frame, then each setting answered,
//! refused, left unanswered or cut off, as each test asks.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fastvm_proto::agent::{self, Decoder, Frame, Ready};

use super::*;

/// How the fake agent answers one kind of frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Pong,
    Refuse,
    /// Says nothing and keeps the connection open.
    Hang,
    /// Closes the connection.
    Close,
}

/// What the fake agent does with a clock and a network frame.
#[derive(Debug, Clone, Copy)]
struct Fake {
    clock: Reply,
    network: Reply,
}

const WAIT: Duration = Duration::from_millis(300);

fn send(stream: &mut UnixStream, frame: &Frame) {
    stream.write_all(&agent::encode(frame).unwrap()).unwrap();
}

/// Serves one connection, noting each setting it is sent in `seen`.
fn serve(stream: UnixStream, fake: Fake, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || !line.starts_with("CONNECT ") {
        return;
    }
    let mut stream = stream;
    stream.write_all(b"OK 1024\n").unwrap();
    send(
        &mut stream,
        &Frame::Ready(Ready {
            version: agent::PROTOCOL_VERSION,
            agent: "fake".into(),
        }),
    );
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(frame) = decoder.next_frame().unwrap() {
            let (nonce, reply) = match frame {
                Frame::Ping { nonce } => (nonce, Reply::Pong),
                Frame::SetClock { nonce, .. } => {
                    seen.lock().unwrap().push("clock".into());
                    (nonce, fake.clock)
                }
                Frame::SetNetwork {
                    nonce, mac, ip6, ..
                } => {
                    seen.lock().unwrap().push(format!("network {mac} {ip6}"));
                    (nonce, fake.network)
                }
                other => panic!("unexpected {other:?}"),
            };
            match reply {
                Reply::Pong => send(&mut stream, &Frame::Pong { nonce }),
                Reply::Refuse => send(
                    &mut stream,
                    &Frame::Error {
                        message: "cannot here".into(),
                    },
                ),
                Reply::Hang => {}
                Reply::Close => return,
            }
        }
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => decoder.push(&buf[..n]),
        }
    }
}

/// Runs [`wait`] against `fake`; returns what it found and the settings
/// the fake was sent.
fn run(fake: Fake, nic: Option<&NicSpec>) -> (Readiness, Vec<String>) {
    // The agent here is a fake in a plain directory, not behind a monitor.
    super::super::peer::ACCEPT_FAKE_MONITORS.store(true, std::sync::atomic::Ordering::Relaxed);
    let tmp = tempfile::tempdir().unwrap();
    let path: PathBuf = tmp.path().join("vsock.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let seen = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let readiness = std::thread::scope(|s| {
        let (seen, done) = (&seen, &done);
        s.spawn(move || {
            while !done.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        // Ends when `wait` drops its side.
                        s.spawn(move || serve(stream, fake, seen));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        let readiness = block_on(wait(&path, WAIT, nic));
        done.store(true, Ordering::Relaxed);
        readiness
    });
    (readiness, seen.into_inner().unwrap())
}

/// Runs `future` to its end on a runtime of its own.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn nic() -> NicSpec {
    NicSpec {
        ipv4: None,
        tap: "fvtest0".into(),
        mac: "02:00:00:00:00:01".parse().unwrap(),
        addr: "fd00::1".parse().unwrap(),
    }
}

fn problems(r: &Readiness) -> Vec<SetupProblem> {
    match r {
        Readiness::ReadyWithProblems(p) => p.clone(),
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn an_agent_that_takes_everything_is_ready() {
    let fake = Fake {
        clock: Reply::Pong,
        network: Reply::Pong,
    };
    let (r, seen) = run(fake, Some(&nic()));
    assert_eq!(r, Readiness::Ready);
    assert_eq!(seen, ["clock", "network 02:00:00:00:00:01 fd00::1/128"]);
}

#[test]
fn without_a_nic_no_network_is_sent() {
    let fake = Fake {
        clock: Reply::Pong,
        network: Reply::Close,
    };
    let (r, seen) = run(fake, None);
    assert_eq!(r, Readiness::Ready);
    assert_eq!(seen, ["clock"]);
}

#[test]
fn a_refused_clock_is_a_problem_that_is_not_fatal() {
    let fake = Fake {
        clock: Reply::Refuse,
        network: Reply::Pong,
    };
    let (r, _) = run(fake, Some(&nic()));
    let p = problems(&r);
    assert!(
        matches!(&p[..], [SetupProblem::Clock(why)] if why.contains("cannot here")),
        "{p:?}"
    );
    assert!(!p[0].is_fatal());
}

#[test]
fn an_unanswered_clock_still_lets_the_network_through() {
    let fake = Fake {
        clock: Reply::Hang,
        network: Reply::Pong,
    };
    let (r, seen) = run(fake, Some(&nic()));
    let p = problems(&r);
    assert!(matches!(&p[..], [SetupProblem::Clock(_)]), "{p:?}");
    assert!(seen.iter().any(|s| s.starts_with("network")), "{seen:?}");
}

#[test]
fn a_refused_network_is_reported_in_the_agents_words() {
    let fake = Fake {
        clock: Reply::Pong,
        network: Reply::Refuse,
    };
    let (r, _) = run(fake, Some(&nic()));
    let p = problems(&r);
    assert_eq!(p, [SetupProblem::NetworkRefused("cannot here".into())]);
    assert!(!p[0].is_fatal());
}

#[test]
fn a_network_cut_off_is_fatal() {
    let fake = Fake {
        clock: Reply::Pong,
        network: Reply::Close,
    };
    let (r, _) = run(fake, Some(&nic()));
    let p = problems(&r);
    assert!(matches!(&p[..], [SetupProblem::NetworkFailed(_)]), "{p:?}");
    assert!(p[0].is_fatal());
}

#[test]
fn a_network_not_confirmed_in_time_is_not_ready_yet() {
    let fake = Fake {
        clock: Reply::Pong,
        network: Reply::Hang,
    };
    let (r, seen) = run(fake, Some(&nic()));
    assert!(
        matches!(&r, Readiness::NotReady(why) if why.contains("not applied yet")),
        "{r:?}"
    );
    assert!(seen.iter().any(|s| s.starts_with("network")), "{seen:?}");
}

#[test]
fn no_agent_is_not_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let r = block_on(wait(&tmp.path().join("vsock.sock"), WAIT, Some(&nic())));
    assert!(matches!(r, Readiness::NotReady(_)), "{r:?}");
}
