//! Stream measurements on a live `fastvmd serve` with the test guest, over
//! the local socket: a streaming exec's first output byte, files into and
//! out of the guest, and TCP through a port forward (the guest's echo
//! service on port 7).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use fastvm_proto::exec_channel::{self, CLOSE, MessageDecoder, STATUS, STDIN, STDOUT};
use fastvm_proto::socket::SocketRequest;
use serde_json::{Value, json};

use super::api::Daemon;
use super::boot::Row;
use super::{median, p99};

/// Streaming execs whose first byte is timed.
const FIRST_BYTES: usize = 100;
/// Bytes copied each way (the test guest's file store holds 16 MiB).
const FILE_BYTES: usize = 12 << 20;
/// Bytes sent through the forward (and echoed back).
const FORWARD_BYTES: usize = 32 << 20;

/// Sends `op` on VM `id` with `body` on a new socket connection
/// ([`crate::call::open_switched`]); the connection once answered 101.
fn open(
    socket: &Path,
    op: &str,
    id: &str,
    body: Value,
) -> Result<(UnixStream, BufReader<UnixStream>), String> {
    let req = SocketRequest::new(1, op).param("id", id).body(body);
    let (_, conn, reader, _) =
        crate::call::open_switched(socket, &req).map_err(|e| format!("{op}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    Ok((conn, reader))
}

/// Messages until the status: (bytes on STDOUT, the status).
fn drain(reader: &mut impl Read, mut first: impl FnMut()) -> Result<(usize, Value), String> {
    let mut decoder = MessageDecoder::default();
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0;
    loop {
        while let Some((channel, bytes)) = decoder.next_message().map_err(|e| e.to_string())? {
            match channel {
                STDOUT => {
                    if got == 0 {
                        first();
                    }
                    got += bytes.len();
                }
                STATUS => {
                    let status = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                    return Ok((got, status));
                }
                _ => {}
            }
        }
        match reader.read(&mut buf) {
            Ok(0) => return Err("closed before the status".into()),
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64()
}

/// The stream rows of the table.
pub fn measure() -> Result<Vec<Row>, String> {
    let d = Daemon::start()?;
    let id = d.create_vm()?;
    let socket = d.socket();

    eprintln!("streaming exec first byte: {FIRST_BYTES}");
    let mut firsts = Vec::new();
    for _ in 0..FIRST_BYTES {
        let t = Instant::now();
        let body = json!({"command": ["echo", "bench"]});
        let (_conn, mut reader) = open(&socket, "execStream", &id, body)?;
        let mut first = None;
        drain(&mut reader, || first = Some(t.elapsed()))?;
        firsts.push(first.ok_or("no output")?);
    }

    eprintln!("files: {} MiB each way", FILE_BYTES >> 20);
    let data: Vec<u8> = (0..FILE_BYTES).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    let (conn, mut reader) = open(&socket, "writeFile", &id, json!({"path": "/bench.bin"}))?;
    for chunk in data.chunks(256 << 10) {
        (&conn)
            .write_all(&exec_channel::frame(STDIN, chunk))
            .map_err(|e| e.to_string())?;
    }
    (&conn)
        .write_all(&exec_channel::frame(CLOSE, &[STDIN]))
        .map_err(|e| e.to_string())?;
    let (_, status) = drain(&mut reader, || {})?;
    let into = t.elapsed();
    if status["status"] != 200 {
        return Err(format!("writeFile: {status}"));
    }
    let t = Instant::now();
    let (_conn, mut reader) = open(&socket, "readFile", &id, json!({"path": "/bench.bin"}))?;
    let (got, status) = drain(&mut reader, || {})?;
    let out_of = t.elapsed();
    if status["status"] != 200 || got != FILE_BYTES {
        return Err(format!("readFile: {got} bytes, {status}"));
    }

    eprintln!("forward: {} MiB echoed", FORWARD_BYTES >> 20);
    let req = SocketRequest::new(1, "forwardPort")
        .param("id", id.as_str())
        .body(json!({"guestPort": 7}));
    let answer = crate::call::request(&socket, &req).map_err(|e| e.to_string())?;
    let addr = answer.body["hostAddress"]
        .as_str()
        .ok_or(format!("forwardPort: {} {}", answer.status, answer.body))?
        .to_string();
    let mut tcp = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
    let mut writer = tcp.try_clone().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let sender = std::thread::spawn(move || {
        let chunk = vec![7u8; 64 << 10];
        for _ in 0..FORWARD_BYTES / chunk.len() {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 256 << 10];
    let mut echoed = 0;
    while echoed < FORWARD_BYTES {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => echoed += n,
        }
    }
    let forwarded = t.elapsed();
    let _ = sender.join();
    if echoed < FORWARD_BYTES {
        return Err(format!(
            "the forward echoed {echoed} of {FORWARD_BYTES} bytes"
        ));
    }
    Ok(vec![
        (
            format!(
                "streaming exec (socket execStream), request → first output byte (median of {})",
                firsts.len()
            ),
            format!(
                "{:.0} µs (p99 {:.0} µs)",
                median(firsts.clone()).as_secs_f64() * 1e6,
                p99(firsts).as_secs_f64() * 1e6
            ),
            "-".into(),
        ),
        (
            format!(
                "file copy host → guest / guest → host ({} MiB, writeFile / readFile)",
                FILE_BYTES >> 20
            ),
            format!(
                "{:.1} / {:.1} MiB/s",
                mib_per_s(FILE_BYTES, into),
                mib_per_s(FILE_BYTES, out_of)
            ),
            "-".into(),
        ),
        (
            format!(
                "forwarded TCP (forwardPort to the guest's echo, {} MiB each way)",
                FORWARD_BYTES >> 20
            ),
            format!("{:.1} MiB/s", mib_per_s(FORWARD_BYTES, forwarded)),
            "-".into(),
        ),
    ])
}
