//! The client against a scripted peer on a real Unix socket: the opening
//! requests, routing of answers and events, frames split across reads,
//! resync after a lost watch, and answers for requests cut off by it.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use fastvm_proto::socket::{Op, SocketRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

use super::*;

fn identity(e: ClientEvent) -> ClientEvent {
    e
}

/// Waits (without blocking the runtime) for the next report.
async fn next(rx: &mpsc::Receiver<ClientEvent>) -> ClientEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.try_recv() {
            Ok(e) => return e,
            Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("no report from the client: {e}"),
        }
    }
}

/// The peer's side of one connection.
struct Peer {
    lines: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Peer {
    async fn accept(listener: &UnixListener) -> Peer {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the client connects")
            .unwrap();
        let (read, write) = UnixStream::into_split(stream);
        Peer {
            lines: BufReader::new(read),
            write,
        }
    }

    async fn request(&mut self) -> SocketRequest {
        let mut line = String::new();
        self.lines.read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    async fn send(&mut self, frame: Value) {
        let mut bytes = serde_json::to_vec(&frame).unwrap();
        bytes.push(b'\n');
        self.write.write_all(&bytes).await.unwrap();
    }

    /// Reads the four opening requests; returns their ops.
    async fn opening(&mut self) -> Vec<String> {
        let mut ops = Vec::new();
        for _ in 0..4 {
            ops.push(self.request().await.op);
        }
        ops
    }
}

#[tokio::test]
async fn watch_lists_answers_events_and_resync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    let commands = spawn(path, tx, identity);

    let mut peer = Peer::accept(&listener).await;
    assert_eq!(next(&rx).await, ClientEvent::Connected);
    assert_eq!(
        peer.opening().await,
        ["watch", "listVMs", "listSnapshots", "getOrgQuotas"]
    );
    peer.send(json!({"id": 1, "status": 200, "body": {}})).await;
    peer.send(json!({"id": 2, "status": 200, "body": []})).await;
    assert!(matches!(
        next(&rx).await,
        ClientEvent::Answer {
            purpose: Purpose::Watch,
            ..
        }
    ));
    assert!(matches!(
        next(&rx).await,
        ClientEvent::Answer {
            purpose: Purpose::ListVms,
            ..
        }
    ));

    // An event frame split in two writes, with a command sent in between:
    // the half-read line must survive the select.
    let event = serde_json::to_vec(&json!({"id": 1, "event": "quota", "op": "updated",
        "data": {"orgId": "o", "limits": {"vcpu": 1, "memoryMiB": 1, "diskGiB": 1, "snapshotCount": 1},
                 "usage": {"vcpu": 0, "memoryMiB": 0, "diskGiB": 0, "snapshotCount": 0}}}))
    .unwrap();
    let (head, tail) = event.split_at(20);
    peer.write.write_all(head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    commands
        .send(Command::call(
            Purpose::Created,
            Op::CreateVm,
            None,
            Some(json!({})),
        ))
        .unwrap();
    let create = peer.request().await;
    assert_eq!(create.op, "createVM");
    peer.write.write_all(tail).await.unwrap();
    peer.write.write_all(b"\n").await.unwrap();
    let ClientEvent::Event(e) = next(&rx).await else {
        panic!("the split event was lost")
    };
    assert_eq!(e.data["orgId"], "o");

    // Answers are routed by id, in any order.
    commands
        .send(Command::call(
            Purpose::Exec,
            Op::ExecVm,
            Some("vm1".into()),
            None,
        ))
        .unwrap();
    let exec = peer.request().await;
    assert_eq!(
        (exec.op.as_str(), exec.param_str("id")),
        ("execVM", Some("vm1"))
    );
    peer.send(json!({"id": create.id, "status": 201, "body": {"x": 1}}))
        .await;
    let ClientEvent::Answer { purpose, response } = next(&rx).await else {
        panic!("no answer")
    };
    assert_eq!((purpose, response.status), (Purpose::Created, 201));

    // The watch ends (lagged): the unanswered exec gets an error answer and
    // the client reconnects and re-lists.
    peer.send(json!({"id": 1, "status": 410, "body": {"error": "lagged"}}))
        .await;
    let ClientEvent::Answer { purpose, response } = next(&rx).await else {
        panic!("no watch answer")
    };
    assert_eq!((purpose, response.status), (Purpose::Watch, 410));
    let ClientEvent::Answer { purpose, response } = next(&rx).await else {
        panic!("the cut-off exec got no answer")
    };
    assert_eq!((purpose, response.status), (Purpose::Exec, 503));
    let mut peer2 = Peer::accept(&listener).await;
    assert_eq!(next(&rx).await, ClientEvent::Connected);
    assert_eq!(peer2.opening().await[0], "watch");

    // The daemon goes away: reported, then retried.
    drop(peer2);
    drop(peer);
    let ClientEvent::Disconnected(why) = next(&rx).await else {
        panic!("no disconnect report")
    };
    assert!(why.contains("closed"), "{why}");
    let _peer3 = Peer::accept(&listener).await;
    assert_eq!(next(&rx).await, ClientEvent::Connected);
}

#[tokio::test]
async fn console_attach_copies_bytes_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    let commands = spawn(path, tx, identity);
    let mut main = Peer::accept(&listener).await;
    assert_eq!(next(&rx).await, ClientEvent::Connected);
    main.opening().await;

    commands.send(Command::AttachConsole("vm1".into())).unwrap();
    let mut console = Peer::accept(&listener).await;
    let attach = console.request().await;
    assert_eq!(
        (attach.op.as_str(), attach.param_str("id")),
        ("attachConsole", Some("vm1"))
    );
    // The 101 answer and the first console bytes arrive in one write.
    let mut bytes =
        serde_json::to_vec(&json!({"id": attach.id, "status": 101, "body": {}})).unwrap();
    bytes.extend_from_slice(b"\nreplayed output");
    console.write.write_all(&bytes).await.unwrap();
    assert_eq!(next(&rx).await, ClientEvent::ConsoleAttached);
    assert_eq!(
        next(&rx).await,
        ClientEvent::ConsoleOutput(b"replayed output".to_vec())
    );
    commands
        .send(Command::ConsoleInput(b"ls\r".to_vec()))
        .unwrap();
    let mut typed = [0u8; 3];
    tokio::io::AsyncReadExt::read_exact(&mut console.lines, &mut typed)
        .await
        .unwrap();
    assert_eq!(&typed, b"ls\r");
    drop(console);
    assert_eq!(next(&rx).await, ClientEvent::ConsoleClosed(None));

    // A refused attach reports the daemon's message.
    commands.send(Command::AttachConsole("vm2".into())).unwrap();
    let mut console = Peer::accept(&listener).await;
    let attach = console.request().await;
    console
        .send(json!({"id": attach.id, "status": 409, "body": {"error": "VM is not running"}}))
        .await;
    assert_eq!(
        next(&rx).await,
        ClientEvent::ConsoleClosed(Some("error 409: VM is not running".into()))
    );
}
