//! The client against a scripted peer on a real Unix socket: the opening
//! requests, routing of answers and events, frames split across reads,
//! resync after a lost watch, answers for requests cut off by it, and the
//! console and exec connections.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use fastvm_proto::socket::{Op, SocketRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

use super::*;

pub(super) fn identity(e: ClientEvent) -> ClientEvent {
    e
}

/// Waits (without blocking the runtime) for the next report.
pub(super) async fn next(rx: &mpsc::Receiver<ClientEvent>) -> ClientEvent {
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
pub(super) struct Peer {
    pub(super) lines: BufReader<OwnedReadHalf>,
    pub(super) write: OwnedWriteHalf,
}

impl Peer {
    pub(super) async fn accept(listener: &UnixListener) -> Peer {
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

    pub(super) async fn request(&mut self) -> SocketRequest {
        let mut line = String::new();
        self.lines.read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    pub(super) async fn send(&mut self, frame: Value) {
        let mut bytes = serde_json::to_vec(&frame).unwrap();
        bytes.push(b'\n');
        self.write.write_all(&bytes).await.unwrap();
    }

    /// Reads the four opening requests; returns their ops.
    pub(super) async fn opening(&mut self) -> Vec<String> {
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
            Purpose::Action("ran".into()),
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

    // The watch ends (lagged): the unanswered call gets an error answer and
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
    assert_eq!(
        (purpose, response.status),
        (Purpose::Action("ran".into()), 503)
    );
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
    let (listener, commands, rx, _main) = client(dir.path()).await;

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

/// A report of exec session `session`.
fn exec_event(session: u64, event: ExecEvent) -> ClientEvent {
    ClientEvent::Exec { session, event }
}

/// A client with its main connection open; the listener, the commands,
/// the reports.
pub(super) async fn client(
    dir: &Path,
) -> (
    UnixListener,
    UnboundedSender<Command>,
    mpsc::Receiver<ClientEvent>,
    Peer,
) {
    let path = dir.join("d.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    let commands = spawn(path, tx, identity);
    let mut main = Peer::accept(&listener).await;
    assert_eq!(next(&rx).await, ClientEvent::Connected);
    main.opening().await;
    (listener, commands, rx, main)
}

/// Reads one exec channel message (channel, bytes) from the peer.
pub(super) async fn read_message(peer: &mut Peer) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    peer.lines.read_exact(&mut len).await.unwrap();
    let mut message = vec![0u8; u32::from_le_bytes(len) as usize];
    peer.lines.read_exact(&mut message).await.unwrap();
    (message[0], message[1..].to_vec())
}

#[tokio::test]
async fn exec_stream_relays_output_signals_and_the_status() {
    use fastvm_proto::exec_channel::{CLOSE, SIGNAL, STATUS, STDERR, STDIN, STDOUT, frame};
    let dir = tempfile::tempdir().unwrap();
    let (listener, commands, rx, _main) = client(dir.path()).await;

    let body = json!({"command": ["tick", "3", "1000"]});
    commands
        .send(Command::StartExec {
            session: 7,
            vm_id: "vm1".into(),
            body: body.clone(),
        })
        .unwrap();
    let mut exec = Peer::accept(&listener).await;
    let start = exec.request().await;
    assert_eq!(
        (
            start.op.as_str(),
            start.param_str("id"),
            start.body.as_ref()
        ),
        ("execStream", Some("vm1"), Some(&body))
    );
    // The 101 answer and the first message arrive in one write; the next
    // message is split across writes.
    let mut bytes =
        serde_json::to_vec(&json!({"id": start.id, "status": 101, "body": {}})).unwrap();
    bytes.push(b'\n');
    bytes.extend(frame(STDOUT, b"tick 1\n"));
    exec.write.write_all(&bytes).await.unwrap();
    assert_eq!(next(&rx).await, exec_event(7, ExecEvent::Started));
    assert_eq!(
        next(&rx).await,
        exec_event(
            7,
            ExecEvent::Output {
                stderr: false,
                bytes: b"tick 1\n".to_vec()
            }
        )
    );
    assert_eq!(read_message(&mut exec).await, (CLOSE, vec![STDIN]));
    let split = frame(STDERR, b"warn\n");
    exec.write.write_all(&split[..3]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    exec.write.write_all(&split[3..]).await.unwrap();
    assert_eq!(
        next(&rx).await,
        exec_event(
            7,
            ExecEvent::Output {
                stderr: true,
                bytes: b"warn\n".to_vec()
            }
        )
    );

    commands
        .send(Command::ExecMessage {
            channel: SIGNAL,
            bytes: br#"{"Signal":2}"#.to_vec(),
        })
        .unwrap();
    assert_eq!(
        read_message(&mut exec).await,
        (SIGNAL, br#"{"Signal":2}"#.to_vec())
    );
    let status = json!({"status": "Failure", "exitCode": 130, "timedOut": false});
    exec.write
        .write_all(&frame(STATUS, &serde_json::to_vec(&status).unwrap()))
        .await
        .unwrap();
    assert_eq!(next(&rx).await, exec_event(7, ExecEvent::Status(status)));

    // A refused start reports the daemon's answer.
    commands
        .send(Command::StartExec {
            session: 8,
            vm_id: "vm2".into(),
            body: json!({"command": ["x"]}),
        })
        .unwrap();
    let mut exec = Peer::accept(&listener).await;
    let start = exec.request().await;
    exec.send(json!({"id": start.id, "status": 409, "body": {"error": "VM is not running"}}))
        .await;
    let ClientEvent::Exec {
        session: 8,
        event: ExecEvent::Refused(response),
    } = next(&rx).await
    else {
        panic!("no refusal")
    };
    assert_eq!(response.status, 409);

    // Closing the session closes its connection.
    commands
        .send(Command::StartExec {
            session: 9,
            vm_id: "vm1".into(),
            body: json!({"command": ["sleep", "60000"]}),
        })
        .unwrap();
    let mut exec = Peer::accept(&listener).await;
    let start = exec.request().await;
    exec.send(json!({"id": start.id, "status": 101, "body": {}}))
        .await;
    assert_eq!(next(&rx).await, exec_event(9, ExecEvent::Started));
    assert_eq!(read_message(&mut exec).await, (CLOSE, vec![STDIN]));
    commands.send(Command::CloseExec).unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut exec.lines, &mut rest),
    )
    .await
    .expect("the connection closes");
    assert_eq!(read.unwrap(), 0);
}
