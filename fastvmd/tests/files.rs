//! Files into and out of a VM end to end against a live daemon (the test
//! guest's file store): `PUT|GET /v1/vms/{id}/files`, the socket's
//! `writeFile` / `readFile` and `fastvmd cp`, with the errors that say
//! what is wrong.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::daemon::Daemon;
use common::socket::Conn;
use fastvm_proto::exec_channel::{self, CLOSE, MessageDecoder, STATUS, STDIN, STDOUT};
use serde_json::{Value, json};

fn running_vm(d: &Daemon) -> String {
    let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    assert_eq!(status, 201, "{vm}");
    vm["id"].as_str().unwrap().to_string()
}

/// Bytes that are not all alike (a failed chunk order shows).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// An HTTP request with the daemon's key and a raw body; (status, body).
fn http(d: &Daemon, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let addr = d.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        d.key,
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    let mut body = answer[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[test]
fn http_puts_and_gets_files_streamed() {
    if !common::can_run_vms("http_puts_and_gets_files_streamed") {
        return;
    }
    let d = Daemon::start();
    let id = running_vm(&d);
    let data = pattern(3 << 20);
    let (status, body) = http(
        &d,
        "PUT",
        &format!("/v1/vms/{id}/files?path=/data/big.bin&mode=0600"),
        &data,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let moved: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(moved, json!({"path": "/data/big.bin", "bytes": data.len()}));
    let (status, body) = http(
        &d,
        "GET",
        &format!("/v1/vms/{id}/files?path=/data/big.bin"),
        b"",
    );
    assert_eq!(status, 200);
    assert!(body == data, "{} bytes back of {}", body.len(), data.len());

    // A replaced file is whole: the new bytes, never a mix.
    let (status, _) = http(
        &d,
        "PUT",
        &format!("/v1/vms/{id}/files?path=/data/big.bin"),
        b"small",
    );
    assert_eq!(status, 200);
    let (_, body) = http(
        &d,
        "GET",
        &format!("/v1/vms/{id}/files?path=/data/big.bin"),
        b"",
    );
    assert_eq!(body, b"small");

    let error = |status_body: (u16, Vec<u8>)| {
        let v: Value = serde_json::from_slice(&status_body.1).unwrap_or(Value::Null);
        (
            status_body.0,
            v["error"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (status, msg) = error(http(
        &d,
        "GET",
        &format!("/v1/vms/{id}/files?path=/nope"),
        b"",
    ));
    assert_eq!(status, 404, "{msg}");
    let (status, msg) = error(http(
        &d,
        "PUT",
        &format!("/v1/vms/{id}/files?path=relative"),
        b"x",
    ));
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("absolute"), "{msg}");
    let (status, msg) = error(http(&d, "GET", &format!("/v1/vms/{id}/files"), b""));
    assert_eq!(status, 400, "{msg}");
    let (status, msg) = error(http(
        &d,
        "PUT",
        &format!("/v1/vms/{id}/files?path=/a&mode=rw"),
        b"x",
    ));
    assert_eq!(status, 400, "{msg}");
    let other = "6f1c2d3e-0000-4000-8000-000000000000";
    let (status, _) = error(http(
        &d,
        "GET",
        &format!("/v1/vms/{other}/files?path=/a"),
        b"",
    ));
    assert_eq!(status, 404);
}

/// Sends `frame`, expects 101; the connection and the 101's body.
fn accepted(d: &Daemon, frame: Value) -> (Conn, Value) {
    let mut conn = Conn::open(d, Duration::from_secs(30));
    let (status, body) = conn.call(frame);
    assert_eq!(status, 101, "{body}");
    (conn, body)
}

/// Data messages and the closing status of a transfer.
fn to_status(conn: &mut Conn) -> (Vec<u8>, Value) {
    let mut decoder = MessageDecoder::default();
    let mut data = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        while let Some((channel, bytes)) = decoder.next_message().unwrap() {
            match channel {
                STDOUT => data.extend_from_slice(&bytes),
                STATUS => return (data, serde_json::from_slice(&bytes).unwrap()),
                other => panic!("channel {other}"),
            }
        }
        let n = conn.reader.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the status");
        decoder.push(&buf[..n]);
    }
}

#[test]
fn the_socket_writes_and_reads_files() {
    if !common::can_run_vms("the_socket_writes_and_reads_files") {
        return;
    }
    let d = Daemon::start();
    let id = running_vm(&d);
    let data = pattern(1 << 20);
    let (mut conn, _) = accepted(
        &d,
        json!({"op": "writeFile", "params": {"id": id}, "body": {"path": "/s/x", "mode": 0o640}}),
    );
    for chunk in data.chunks(100_000) {
        conn.writer
            .write_all(&exec_channel::frame(STDIN, chunk))
            .unwrap();
    }
    conn.writer
        .write_all(&exec_channel::frame(CLOSE, &[STDIN]))
        .unwrap();
    let (_, status) = to_status(&mut conn);
    assert_eq!(
        status,
        json!({"status": 200, "body": {"path": "/s/x", "bytes": data.len()}})
    );

    let (mut conn, info) = accepted(
        &d,
        json!({"op": "readFile", "params": {"id": id}, "body": {"path": "/s/x"}}),
    );
    assert_eq!(info, json!({"size": data.len(), "mode": 0o640}));
    let (back, status) = to_status(&mut conn);
    assert_eq!(status["status"], 200, "{status}");
    assert!(back == data);

    // Errors before anything streams are answered like any request's.
    let mut conn = Conn::open(&d, Duration::from_secs(30));
    let (status, body) =
        conn.call(json!({"op": "readFile", "params": {"id": id}, "body": {"path": "/missing"}}));
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        conn.call(json!({"op": "writeFile", "params": {"id": id}, "body": {"path": "x"}}));
    assert_eq!(status, 400, "{body}");

    // A writer that goes away before the end leaves nothing behind.
    let (mut conn, _) = accepted(
        &d,
        json!({"op": "writeFile", "params": {"id": id}, "body": {"path": "/s/cut"}}),
    );
    conn.writer
        .write_all(&exec_channel::frame(STDIN, b"part"))
        .unwrap();
    drop(conn);
    std::thread::sleep(Duration::from_millis(300));
    let mut conn = Conn::open(&d, Duration::from_secs(30));
    let (status, body) =
        conn.call(json!({"op": "readFile", "params": {"id": id}, "body": {"path": "/s/cut"}}));
    assert_eq!(status, 404, "{body}");
}

#[test]
fn fastvmd_cp_copies_both_ways() {
    if !common::can_run_vms("fastvmd_cp_copies_both_ways") {
        return;
    }
    let d = Daemon::start();
    let (status, vm) = d.call(
        "POST",
        "/v1/vms",
        Some(&json!({"machineType": "c1m2", "name": "box"})),
    );
    assert_eq!(status, 201, "{vm}");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("in.bin");
    let data = pattern(2 << 20);
    std::fs::write(&local, &data).unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o751)).unwrap();
    let cp = |a: &str, b: &str| {
        Command::new(common::fastvmd_bin())
            .args(["cp", "--socket"])
            .arg(d.data_dir.join("fastvmd.sock"))
            .args([a, b])
            .output()
            .unwrap()
    };
    let out = cp(local.to_str().unwrap(), "box:/opt/in.bin");
    assert!(out.status.success(), "{out:?}");
    let out = cp("box:/opt/in.bin", tmp.path().to_str().unwrap());
    assert!(out.status.success(), "{out:?}");
    let back = tmp.path().join("in.bin");
    assert!(std::fs::read(&back).unwrap() == data);
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o7777,
        0o751
    );
    let out = cp("box:/opt/in.bin", "-");
    assert!(out.stdout == data);

    let out = cp("box:/opt/none", tmp.path().join("none").to_str().unwrap());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    assert!(!tmp.path().join("none").exists());
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial"))
    );
    let out = cp("a", "b");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
