//! File copies against a scripted peer on a real Unix socket: the request
//! each direction sends, the bytes framed on the way, the status read at
//! the end, a download placed only once whole, the daemon's errors, and a
//! cancel closing the connection (removing a download's partial file).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fastvm_proto::exec_channel::{CLOSE, STATUS, STDIN, STDOUT, frame};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc::UnboundedSender;

use super::tests::{Peer, client, next};
use super::*;

/// Bytes that are not all alike (a reordered chunk shows).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn start(commands: &UnboundedSender<Command>, session: u64, request: CopyRequest) {
    commands
        .send(Command::StartCopy { session, request })
        .unwrap();
}

fn request(direction: CopyDirection, local: PathBuf, guest: &str) -> CopyRequest {
    CopyRequest {
        direction,
        vm_id: "vm1".into(),
        local,
        guest: guest.into(),
    }
}

/// The next report of copy `session` other than progress.
async fn milestone(rx: &mpsc::Receiver<ClientEvent>, session: u64) -> CopyEvent {
    loop {
        match next(rx).await {
            ClientEvent::Copy { session: s, event } if s == session => {
                if !matches!(event, CopyEvent::Progress { .. }) {
                    return event;
                }
            }
            other => panic!("not a report of copy {session}: {other:?}"),
        }
    }
}

/// Starts download `session` of `/big` (`size` bytes) into `target`: the
/// peer accepts it and sends its first 5 bytes.
async fn download_begun(
    listener: &UnixListener,
    commands: &UnboundedSender<Command>,
    session: u64,
    target: &Path,
    size: u64,
) -> Peer {
    start(
        commands,
        session,
        request(CopyDirection::Download, target.to_path_buf(), "/big"),
    );
    let mut peer = Peer::accept(listener).await;
    let req = peer.request().await;
    peer.send(json!({"id": req.id, "status": 101, "body": {"size": size, "mode": 420}}))
        .await;
    peer.write
        .write_all(&frame(STDOUT, b"12345"))
        .await
        .unwrap();
    peer
}

/// The next exec channel message from the client, within ten seconds.
async fn read_message(peer: &mut Peer) -> (u8, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(10), super::tests::read_message(peer))
        .await
        .expect("a message from the client")
}

async fn send_status(peer: &mut Peer, status: serde_json::Value) {
    let bytes = serde_json::to_vec(&status).unwrap();
    peer.write.write_all(&frame(STATUS, &bytes)).await.unwrap();
}

/// Waits until `pred` holds (the client works on its own tasks).
async fn eventually(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_upload_sends_the_files_bytes_and_mode_then_reads_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, commands, rx, _main) = client(dir.path()).await;
    let data = pattern(600 << 10);
    let local = dir.path().join("app.bin");
    std::fs::write(&local, &data).unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o640)).unwrap();

    start(
        &commands,
        3,
        request(CopyDirection::Upload, local, "/srv/app.bin"),
    );
    let mut peer = Peer::accept(&listener).await;
    let req = peer.request().await;
    assert_eq!(
        (req.op.as_str(), req.param_str("id"), req.body.as_ref()),
        (
            "writeFile",
            Some("vm1"),
            Some(&json!({"path": "/srv/app.bin", "mode": 0o640}))
        )
    );
    peer.send(json!({"id": req.id, "status": 101, "body": {}}))
        .await;
    let total = Some(data.len() as u64);
    assert_eq!(milestone(&rx, 3).await, CopyEvent::Started { total });
    let mut got = Vec::new();
    loop {
        match read_message(&mut peer).await {
            (STDIN, bytes) => {
                assert!(bytes.len() <= 256 << 10, "a message of {}", bytes.len());
                got.extend(bytes);
            }
            (CLOSE, bytes) => {
                assert_eq!(bytes, [STDIN]);
                break;
            }
            (channel, _) => panic!("channel {channel} in an upload"),
        }
    }
    assert!(got == data, "the bytes differ");
    let moved = json!({"path": "/srv/app.bin", "bytes": data.len()});
    send_status(&mut peer, json!({"status": 200, "body": moved})).await;
    let CopyEvent::Done { bytes, .. } = milestone(&rx, 3).await else {
        panic!("the upload did not finish")
    };
    assert_eq!(bytes, data.len() as u64);
}

#[tokio::test]
async fn an_upload_refused_or_failed_reports_the_daemons_message() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, commands, rx, _main) = client(dir.path()).await;
    let local = dir.path().join("a.bin");
    std::fs::write(&local, pattern(1000)).unwrap();

    start(
        &commands,
        1,
        request(CopyDirection::Upload, local.clone(), "/a"),
    );
    let mut peer = Peer::accept(&listener).await;
    let req = peer.request().await;
    peer.send(json!({"id": req.id, "status": 409, "body": {"error": "VM is not running"}}))
        .await;
    assert_eq!(
        milestone(&rx, 1).await,
        CopyEvent::Failed("error 409: VM is not running".into())
    );

    // Accepted, then the guest refuses the bytes: the status's error.
    start(&commands, 2, request(CopyDirection::Upload, local, "/a"));
    let mut peer = Peer::accept(&listener).await;
    let req = peer.request().await;
    peer.send(json!({"id": req.id, "status": 101, "body": {}}))
        .await;
    assert!(matches!(milestone(&rx, 2).await, CopyEvent::Started { .. }));
    assert_eq!(read_message(&mut peer).await.0, STDIN);
    let full = json!({"status": 507, "body": {"error": "the guest's file store is full"}});
    send_status(&mut peer, full).await;
    assert_eq!(
        milestone(&rx, 2).await,
        CopyEvent::Failed("error 507: the guest's file store is full".into())
    );
}

#[tokio::test]
async fn a_download_is_written_beside_its_target_and_renamed_once_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, commands, rx, _main) = client(dir.path()).await;
    let data = pattern(300 << 10);
    let target = dir.path().join("out.bin");
    let partial = partial_name(&target);
    assert_eq!(partial, dir.path().join(".out.bin.fastvm-partial"));

    start(
        &commands,
        5,
        request(CopyDirection::Download, target.clone(), "/srv/out.bin"),
    );
    let mut peer = Peer::accept(&listener).await;
    let req = peer.request().await;
    assert_eq!(
        (req.op.as_str(), req.param_str("id"), req.body.as_ref()),
        (
            "readFile",
            Some("vm1"),
            Some(&json!({"path": "/srv/out.bin"}))
        )
    );
    // The answer and the first bytes in one write.
    let info = json!({"size": data.len(), "mode": 0o600});
    let mut bytes =
        serde_json::to_vec(&json!({"id": req.id, "status": 101, "body": info})).unwrap();
    bytes.push(b'\n');
    bytes.extend(frame(STDOUT, &data[..1000]));
    peer.write.write_all(&bytes).await.unwrap();
    let total = Some(data.len() as u64);
    assert_eq!(milestone(&rx, 5).await, CopyEvent::Started { total });
    for chunk in data[1000..].chunks(64 << 10) {
        peer.write.write_all(&frame(STDOUT, chunk)).await.unwrap();
    }
    let wanted = data.len() as u64;
    eventually("the partial file to fill", || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() == wanted)
    })
    .await;
    assert!(!target.exists(), "the target exists before the status");
    let moved = json!({"path": "/srv/out.bin", "bytes": data.len()});
    send_status(&mut peer, json!({"status": 200, "body": moved})).await;
    let CopyEvent::Done { bytes, .. } = milestone(&rx, 5).await else {
        panic!("the download did not finish")
    };
    assert_eq!(bytes, wanted);
    assert!(std::fs::read(&target).unwrap() == data, "the bytes differ");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o600);
    assert!(!partial.exists(), "the partial file is left");
}

#[tokio::test]
async fn a_failed_download_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, commands, rx, _main) = client(dir.path()).await;
    let target = dir.path().join("x");

    // Refused before any byte: no file is created.
    start(
        &commands,
        1,
        request(CopyDirection::Download, target.clone(), "/missing"),
    );
    let mut peer = Peer::accept(&listener).await;
    let req = peer.request().await;
    peer.send(json!({"id": req.id, "status": 404, "body": {"error": "no file at /missing"}}))
        .await;
    assert_eq!(
        milestone(&rx, 1).await,
        CopyEvent::Failed("error 404: no file at /missing".into())
    );

    // Failed mid-way: the partial file goes, the target never appears.
    let mut peer = download_begun(&listener, &commands, 2, &target, 10).await;
    send_status(
        &mut peer,
        json!({"status": 502, "body": {"error": "the agent went away"}}),
    )
    .await;
    assert!(matches!(milestone(&rx, 2).await, CopyEvent::Started { .. }));
    assert_eq!(
        milestone(&rx, 2).await,
        CopyEvent::Failed("error 502: the agent went away".into())
    );

    // The connection ends before the status: a failure too.
    let peer = download_begun(&listener, &commands, 3, &target, 10).await;
    drop(peer);
    assert!(matches!(milestone(&rx, 3).await, CopyEvent::Started { .. }));
    let CopyEvent::Failed(why) = milestone(&rx, 3).await else {
        panic!("a cut-off download succeeded")
    };
    assert!(why.contains("closed the connection"), "{why}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["d.sock"], "files left behind");
}

#[tokio::test]
async fn cancel_closes_the_connection_and_removes_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, commands, rx, _main) = client(dir.path()).await;
    let target = dir.path().join("x");

    let mut peer = download_begun(&listener, &commands, 1, &target, 1000000).await;
    assert!(matches!(milestone(&rx, 1).await, CopyEvent::Started { .. }));
    let partial = partial_name(&target);
    eventually("the partial file", || {
        std::fs::metadata(&partial).is_ok_and(|m| m.len() == 5)
    })
    .await;
    commands.send(Command::CancelCopy).unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), peer.lines.read_to_end(&mut rest))
        .await
        .expect("the connection closes");
    assert_eq!(read.unwrap(), 0);
    eventually("the partial file to go", || !partial.exists()).await;
    assert!(!target.exists());

    // An upload cancelled mid-way never sends the close of channel 0.
    let local = dir.path().join("big.bin");
    std::fs::write(&local, pattern(8 << 20)).unwrap();
    start(&commands, 2, request(CopyDirection::Upload, local, "/big"));
    let mut peer = Peer::accept(&listener).await;
    let req = peer.request().await;
    peer.send(json!({"id": req.id, "status": 101, "body": {}}))
        .await;
    assert!(matches!(milestone(&rx, 2).await, CopyEvent::Started { .. }));
    // The peer reads nothing for a while: the client's writes block.
    tokio::time::sleep(Duration::from_millis(200)).await;
    commands.send(Command::CancelCopy).unwrap();
    let mut sent = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), peer.lines.read_to_end(&mut sent))
        .await
        .expect("the connection closes")
        .unwrap();
    let mut decoder = fastvm_proto::exec_channel::MessageDecoder::default();
    decoder.push(&sent);
    let mut data = 0;
    while let Ok(Some((channel, bytes))) = decoder.next_message() {
        assert_eq!(channel, STDIN, "a close was sent: the copy would be kept");
        data += bytes.len();
    }
    assert!(data < 8 << 20, "the whole file went before the cancel");
}
