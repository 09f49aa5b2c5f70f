//! The scenario's stream steps against a Linux VM: a streaming exec whose
//! output arrives live, a shell on a terminal that follows a resize, a
//! 100 MiB file into the guest and back out with its SHA-256 checked on
//! both sides (`fastvmd cp`), and a port forward to a `busybox httpd` the
//! guest serves on its loopback only.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use fastvm_proto::exec_channel::{self, MessageDecoder, RESIZE, STATUS, STDIN};
use fastvm_proto::socket::SocketRequest;
use serde_json::{Value, json};
use sha2::Digest;

use super::vm::sh;
use super::{Daemon, FASTVMD};

/// The file carried in and out.
const FILE_MIB: usize = 100;

/// An `execStream` on the daemon's socket, past its 101.
struct Stream {
    conn: UnixStream,
    reader: BufReader<UnixStream>,
    decoder: MessageDecoder,
}

impl Stream {
    fn start(d: &Daemon, vm: &str, body: Value) -> Result<Stream, String> {
        let req = SocketRequest::new(1, "execStream")
            .param("id", vm)
            .body(body);
        let (_, conn, reader, _) = fastvmd::call::open_switched(&d.socket_path(), &req)
            .map_err(|e| format!("execStream: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        Ok(Stream {
            conn,
            reader,
            decoder: MessageDecoder::default(),
        })
    }

    fn send(&self, channel: u8, bytes: &[u8]) -> Result<(), String> {
        (&self.conn)
            .write_all(&exec_channel::frame(channel, bytes))
            .map_err(|e| e.to_string())
    }

    fn next(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut buf = [0u8; 16 << 10];
        loop {
            if let Some(m) = self.decoder.next_message().map_err(|e| e.to_string())? {
                return Ok(m);
            }
            match self.reader.read(&mut buf) {
                Ok(0) => return Err("the stream closed without a status".into()),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) => return Err(format!("reading the stream: {e}")),
            }
        }
    }

    /// Output until `needle` shows in it (or the status comes first).
    fn until(&mut self, needle: &str) -> Result<String, String> {
        let mut out = String::new();
        while !out.contains(needle) {
            match self.next()? {
                (STATUS, b) => {
                    return Err(format!(
                        "ended before {needle:?}: {out:?}, {}",
                        String::from_utf8_lossy(&b)
                    ));
                }
                (_, b) => out.push_str(&String::from_utf8_lossy(&b)),
            }
        }
        Ok(out)
    }

    /// The exit code of the status, past any further output.
    fn exit_code(&mut self) -> Result<i32, String> {
        loop {
            if let (STATUS, b) = self.next()? {
                let status: Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
                return exec_channel::exit_code_of(&status).ok_or(format!("status {status}"));
            }
        }
    }
}

/// Output arrives as it is made: the first line a good while before the end.
pub fn live_output(d: &Daemon, vm: &str) -> Result<(), String> {
    let started = Instant::now();
    let script = "echo one; sleep 3; echo two";
    let mut s = Stream::start(d, vm, json!({"command": ["sh", "-c", script]}))?;
    s.until("one")?;
    let first = started.elapsed();
    s.until("two")?;
    let code = s.exit_code()?;
    let total = started.elapsed();
    println!("info: live output: first line at {first:?}, end at {total:?}");
    if code != 0 || total - first < Duration::from_secs(2) {
        return Err(format!(
            "exit {code}, first line at {first:?}, end at {total:?}"
        ));
    }
    Ok(())
}

/// A client that goes away ends its command: the guest's process is gone
/// within seconds of the connection closing.
pub fn disconnect_kills(d: &Daemon, vm: &str) -> Result<(), String> {
    let body = json!({"command": ["sh", "-c", "echo pid $$; exec sleep 600"]});
    let mut s = Stream::start(d, vm, body)?;
    let out = s.until("\n")?;
    let pid: u32 = out
        .trim()
        .strip_prefix("pid ")
        .and_then(|p| p.parse().ok())
        .ok_or(format!("no pid in {out:?}"))?;
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alive = sh(
            d,
            vm,
            &format!("kill -0 {pid} 2>/dev/null && echo alive || echo gone"),
        )?;
        if alive.trim() == "gone" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "process {pid} still alive 20 s after its client left"
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The daemon's peak resident memory so far (VmHWM), in KiB.
fn peak_kib(d: &Daemon) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid()?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `sh` on a terminal: its size, a resize, its tty, its exit status.
pub fn tty_shell(d: &Daemon, vm: &str) -> Result<(), String> {
    let body = json!({"command": ["sh"], "tty": true, "cols": 80, "rows": 24});
    let mut s = Stream::start(d, vm, body)?;
    s.send(STDIN, b"stty size; tty\n")?;
    s.until("24 80")?;
    s.until("/dev/pts/")?;
    s.send(RESIZE, br#"{"Width":100,"Height":30}"#)?;
    s.send(STDIN, b"stty size\n")?;
    s.until("30 100")?;
    s.send(STDIN, b"exit 3\n")?;
    let code = s.exit_code()?;
    if code != 3 {
        return Err(format!("the shell exited {code}, not 3"));
    }
    Ok(())
}

fn fastvmd(args: &[&str]) -> Result<String, String> {
    let out = Command::new(FASTVMD)
        .args(args)
        .output()
        .map_err(|e| format!("fastvmd {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "fastvmd {args:?}: {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 100 MiB into the guest and back out, the same bytes on all three sides.
pub fn file_round_trip(d: &Daemon, vm: &str, name: &str) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let local = tmp.path().join("big.bin");
    // xorshift64: bytes that are not all alike, made cheaply.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..(FILE_MIB << 20) / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    std::fs::write(&local, &data).map_err(|e| e.to_string())?;
    let want = sha256_hex(&data);
    let socket = d.socket_path();
    let socket = socket.to_str().unwrap_or_default();
    let peak_before = peak_kib(d);
    let started = Instant::now();
    fastvmd(&[
        "cp",
        "--socket",
        socket,
        local.to_str().unwrap_or_default(),
        &format!("{name}:/root/big.bin"),
    ])?;
    let into = started.elapsed();
    let in_guest = sh(d, vm, "sha256sum /root/big.bin")?;
    if !in_guest.starts_with(&want) {
        return Err(format!("sha256 in the guest {in_guest:?}, sent {want}"));
    }
    let back = tmp.path().join("back.bin");
    let started = Instant::now();
    fastvmd(&[
        "cp",
        "--socket",
        socket,
        &format!("{name}:/root/big.bin"),
        back.to_str().unwrap_or_default(),
    ])?;
    let out_of = started.elapsed();
    let got = sha256_hex(&std::fs::read(&back).map_err(|e| e.to_string())?);
    if got != want {
        return Err(format!("sha256 back {got}, sent {want}"));
    }
    // The file streamed through the daemon: its peak memory barely moved.
    if let (Some(before), Some(after)) = (peak_before, peak_kib(d)) {
        println!("info: daemon peak RSS {before} KiB before the copies, {after} KiB after");
        if after > before + 32 * 1024 {
            return Err(format!(
                "the daemon's peak RSS grew from {before} to {after} KiB"
            ));
        }
    }
    let mib = FILE_MIB as f64;
    println!(
        "info: {FILE_MIB} MiB in {into:?} ({:.1} MiB/s), out {out_of:?} ({:.1} MiB/s), sha256 {want}",
        mib / into.as_secs_f64(),
        mib / out_of.as_secs_f64()
    );
    sh(d, vm, "rm /root/big.bin").map(|_| ())
}

/// A forward to `busybox httpd` on the guest's loopback.
pub fn forward(d: &Daemon, vm: &str) -> Result<(), String> {
    sh(
        d,
        vm,
        "mkdir -p /root/www && echo forwarded-page > /root/www/index.html && \
         busybox httpd -p 127.0.0.1:8080 -h /root/www",
    )?;
    let req = SocketRequest::new(1, "forwardPort")
        .param("id", vm)
        .body(json!({"guestPort": 8080}));
    let answer = fastvmd::call::request(&d.socket_path(), &req).map_err(|e| e.to_string())?;
    let addr = answer.body["hostAddress"]
        .as_str()
        .ok_or(format!(
            "forwardPort answered {} {}",
            answer.status, answer.body
        ))?
        .to_string();
    let mut tcp = std::net::TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut page = String::new();
    tcp.read_to_string(&mut page)
        .map_err(|e| format!("{addr}: {e}"))?;
    if !page.starts_with("HTTP/1.") || !page.contains("forwarded-page") {
        return Err(format!("through {addr}: {page:?}"));
    }
    sh(d, vm, "pkill -f 'busybox httpd' || killall httpd || true").map(|_| ())
}
