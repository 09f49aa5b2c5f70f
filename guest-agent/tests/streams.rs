//! Streams (`fastvm_proto::agent_stream`) against the agent binary served
//! over a Unix socket (`guest-agent --unix`): execs with live output, stdin,
//! a terminal, signals and timeouts; files written in and read out; TCP
//! forwards to the loopback. Real processes, real sockets.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fastvm_proto::agent::{
    DATA_CHUNK, Data, Decoder, ExecExit, ExecStart, Frame, STREAMS_VERSION, StreamError,
    StreamErrorKind, WindowSize, encode,
};

/// A running `guest-agent --unix` in its own temp dir.
struct Agent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_guest-agent"))
            .arg("--unix")
            .arg(&socket)
            .spawn()
            .unwrap();
        Agent {
            child,
            socket,
            _dir: dir,
        }
    }

    fn connect(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(&self.socket) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("the agent never accepted: {e}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut client = Client {
            stream,
            decoder: Decoder::new(),
        };
        match client.recv() {
            Frame::Ready(ready) => assert_eq!(ready.version, STREAMS_VERSION, "{ready:?}"),
            other => panic!("expected ready, got {other:?}"),
        }
        client
    }

    /// Whether the agent, still running, has no child process left within
    /// `within`.
    fn childless_within(&self, within: Duration) -> bool {
        let pid = self.child.id();
        let deadline = Instant::now() + within;
        let mut empty_scans = 0;
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next();
            assert_ne!(state, Some('Z'), "the agent died");
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
            let children: String = tasks
                .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("children")).ok())
                .collect();
            // Twice in a row: a child moving between threads is not missed.
            empty_scans = if children.trim().is_empty() {
                empty_scans + 1
            } else {
                0
            };
            if empty_scans == 2 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    stream: UnixStream,
    decoder: Decoder,
}

impl Client {
    fn send(&mut self, frame: &Frame) {
        self.stream.write_all(&encode(frame).unwrap()).unwrap();
    }

    fn data(&mut self, id: u64, bytes: &[u8]) {
        self.send(&Frame::Data(Data {
            id,
            channel: 0,
            bytes: bytes.to_vec(),
        }));
    }

    fn end(&mut self, id: u64) {
        self.send(&Frame::StreamEnd { id, channel: 0 });
    }

    /// A second handle on the connection, for a thread that sends.
    fn sender(&self) -> UnixStream {
        self.stream.try_clone().unwrap()
    }

    fn recv(&mut self) -> Frame {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return frame;
            }
            let n = self
                .stream
                .read(&mut buf)
                .expect("no frame from the agent in time");
            assert!(n > 0, "the agent closed the connection");
            self.decoder.push(&buf[..n]);
        }
    }

    /// Frames of exec `id` until its exit: (stdout, stderr, exit).
    fn exec_output(&mut self, id: u64) -> (Vec<u8>, Vec<u8>, ExecExit) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.recv() {
                Frame::Data(d) if d.id == id && d.channel == 1 => out.extend(d.bytes),
                Frame::Data(d) if d.id == id && d.channel == 2 => err.extend(d.bytes),
                Frame::ExecExit(exit) if exit.id == id => return (out, err, exit),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Output of exec `id` until `needle` shows up in it.
    fn output_until(&mut self, id: u64, needle: &str) -> String {
        let mut out = Vec::new();
        loop {
            match self.recv() {
                Frame::Data(d) if d.id == id => {
                    assert!(d.bytes.len() <= DATA_CHUNK);
                    out.extend(d.bytes);
                    let text = String::from_utf8_lossy(&out).into_owned();
                    if text.contains(needle) {
                        return text;
                    }
                }
                other => panic!(
                    "unexpected {other:?} before {needle:?} in {:?}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
    }

    /// Output of exec `id` until `marker` and a whole number after it: the number.
    fn number_after(&mut self, id: u64, marker: &str) -> u32 {
        let mut out = Vec::new();
        loop {
            match self.recv() {
                Frame::Data(d) if d.id == id => out.extend(d.bytes),
                other => panic!("unexpected {other:?} before {marker:?}"),
            }
            let text = String::from_utf8_lossy(&out);
            if let Some(at) = text.find(marker) {
                let rest = &text[at + marker.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if !digits.is_empty() && rest.len() > digits.len() {
                    return digits.parse().unwrap();
                }
            }
        }
    }

    fn stream_error(&mut self, id: u64) -> StreamError {
        match self.recv() {
            Frame::StreamError(e) if e.id == id => e,
            other => panic!("expected the error of stream {id}, got {other:?}"),
        }
    }
}

fn exec(id: u64, argv: &[&str]) -> ExecStart {
    ExecStart {
        id,
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: BTreeMap::new(),
        cwd: None,
        user: None,
        tty: None,
        timeout_ms: None,
    }
}

fn sh(id: u64, script: &str) -> ExecStart {
    exec(id, &["sh", "-c", script])
}

fn on_tty(mut start: ExecStart, cols: u16, rows: u16) -> ExecStart {
    start.tty = Some(WindowSize { cols, rows });
    start
}

/// Waits until `pid` no longer exists at all (neither running nor a zombie).
fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn output_arrives_live_before_the_command_ends() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let start = Instant::now();
    client.send(&Frame::ExecStart(sh(
        1,
        "echo one; echo err >&2; sleep 2; echo two",
    )));
    let (mut first_out, mut exit_at, mut out, mut err) = (None, None, Vec::new(), Vec::new());
    while exit_at.is_none() {
        match client.recv() {
            Frame::Data(d) if d.channel == 1 => {
                first_out.get_or_insert(start.elapsed());
                out.extend(d.bytes);
            }
            Frame::Data(d) if d.channel == 2 => err.extend(d.bytes),
            Frame::ExecExit(exit) => {
                assert_eq!((exit.id, exit.exit_code, exit.timed_out), (1, 0, false));
                assert!(exit.duration_ms >= 2000, "{exit:?}");
                exit_at = Some(start.elapsed());
            }
            other => panic!("{other:?}"),
        }
    }
    let (first, exit) = (first_out.unwrap(), exit_at.unwrap());
    assert!(
        first + Duration::from_millis(1500) < exit,
        "\"one\" came at {first:?}, the exit at {exit:?}"
    );
    assert_eq!(out, b"one\ntwo\n");
    assert_eq!(err, b"err\n");
}

#[test]
fn stdin_goes_through_cat_and_back() {
    let agent = Agent::start();
    let mut client = agent.connect();
    client.send(&Frame::ExecStart(exec(4, &["cat"])));
    let input: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // Sent from another thread while the output is read here: cat answers
    // as it reads, and neither side may wait for the other.
    let mut sender = client.sender();
    let to_send = input.clone();
    let feeder = std::thread::spawn(move || {
        for chunk in to_send.chunks(10_000) {
            let frame = Frame::Data(Data {
                id: 4,
                channel: 0,
                bytes: chunk.to_vec(),
            });
            sender.write_all(&encode(&frame).unwrap()).unwrap();
        }
        let end = Frame::StreamEnd { id: 4, channel: 0 };
        sender.write_all(&encode(&end).unwrap()).unwrap();
    });
    let (out, err, exit) = client.exec_output(4);
    feeder.join().unwrap();
    assert_eq!(exit.exit_code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(out.len(), input.len());
    assert!(out == input, "cat gave back other bytes");
}

#[test]
fn a_tty_has_its_size_and_follows_resizes() {
    let agent = Agent::start();
    let mut client = agent.connect();
    client.send(&Frame::ExecStart(on_tty(exec(2, &["sh"]), 80, 24)));
    client.data(2, b"stty size; tty\n");
    let text = client.output_until(2, "/dev/pts/");
    assert!(text.contains("24 80"), "{text:?}");
    client.send(&Frame::Resize {
        id: 2,
        cols: 100,
        rows: 30,
    });
    client.data(2, b"stty size\n");
    client.output_until(2, "30 100");
    // Ctrl-C goes to the foreground job, as the key would: the shell stays.
    client.data(2, b"sleep 100\n");
    std::thread::sleep(Duration::from_millis(500));
    client.send(&Frame::Signal { id: 2, signal: 2 });
    client.data(2, b"echo status=$?\n");
    client.output_until(2, "status=130");
    client.data(2, b"exit 7\n");
    let (_, err, exit) = client.exec_output(2);
    assert!(err.is_empty(), "a terminal has everything on channel 1");
    assert_eq!((exit.exit_code, exit.timed_out), (7, false));
}

#[test]
fn stream_end_on_a_tty_types_the_eof_character() {
    let agent = Agent::start();
    let mut client = agent.connect();
    client.send(&Frame::ExecStart(on_tty(exec(3, &["cat"]), 80, 24)));
    client.data(3, b"hello\n");
    client.output_until(3, "hello\r\nhello\r\n");
    client.end(3);
    let (_, _, exit) = client.exec_output(3);
    assert_eq!(exit.exit_code, 0);
}

#[test]
fn a_signal_interrupts_the_command() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let start = Instant::now();
    client.send(&Frame::ExecStart(exec(5, &["sleep", "100"])));
    client.send(&Frame::Signal { id: 5, signal: 2 });
    let (_, _, exit) = client.exec_output(5);
    assert_eq!((exit.exit_code, exit.timed_out), (130, false));
    assert!(start.elapsed() < Duration::from_secs(10));
    // A number that is no signal is an error, not a crash; the connection goes on.
    client.send(&Frame::ExecStart(exec(6, &["sleep", "100"])));
    client.send(&Frame::Signal { id: 6, signal: 999 });
    match client.recv() {
        Frame::Error { message } => assert!(message.contains("999"), "{message}"),
        other => panic!("{other:?}"),
    }
    client.send(&Frame::Signal { id: 6, signal: 9 });
    assert_eq!(client.exec_output(6).2.exit_code, 137);
}

#[test]
fn a_signal_still_works_while_stdin_is_full() {
    let agent = Agent::start();
    let mut client = agent.connect();
    // sleep never reads its stdin: the pipe, then the stream's queue fill up.
    client.send(&Frame::ExecStart(exec(8, &["sleep", "100"])));
    for _ in 0..(600 << 10) / DATA_CHUNK {
        client.data(8, &vec![b'x'; DATA_CHUNK]);
    }
    client.send(&Frame::Ping { nonce: 77 });
    assert_eq!(client.recv(), Frame::Pong { nonce: 77 });
    client.send(&Frame::Signal { id: 8, signal: 15 });
    let (_, _, exit) = client.exec_output(8);
    assert_eq!(exit.exit_code, 128 + 15);
    // The connection still serves after the stall.
    client.send(&Frame::ExecStart(sh(9, "echo after")));
    assert_eq!(client.exec_output(9).0, b"after\n");
}

#[test]
fn a_timeout_kills_and_answers_124() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let mut start = sh(10, "echo started; sleep 100");
    start.timeout_ms = Some(300);
    let begun = Instant::now();
    client.send(&Frame::ExecStart(start));
    let (out, _, exit) = client.exec_output(10);
    assert_eq!(out, b"started\n");
    assert_eq!((exit.exit_code, exit.timed_out), (124, true));
    assert!(exit.duration_ms >= 300, "{exit:?}");
    assert!(begun.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_missing_program_exits_127_with_the_reason() {
    let agent = Agent::start();
    let mut client = agent.connect();
    client.send(&Frame::ExecStart(exec(11, &["/no/such/program", "x"])));
    let (out, err, exit) = client.exec_output(11);
    assert_eq!(exit.exit_code, 127);
    assert!(out.is_empty());
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("/no/such/program"), "{err}");
    // On a terminal the reason comes on channel 1.
    client.send(&Frame::ExecStart(on_tty(
        exec(12, &["no-such-command-anywhere"]),
        80,
        24,
    )));
    let (out, err, exit) = client.exec_output(12);
    assert_eq!(exit.exit_code, 127);
    assert!(err.is_empty());
    assert!(String::from_utf8_lossy(&out).contains("no-such-command-anywhere"));
    // Not executable: 126.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    client.send(&Frame::ExecStart(exec(13, &[script.to_str().unwrap()])));
    assert_eq!(client.exec_output(13).2.exit_code, 126);
}

#[test]
fn hanging_up_kills_the_process_groups() {
    let agent = Agent::start();
    let mut client = agent.connect();
    client.send(&Frame::ExecStart(sh(20, "sleep 100 & echo pid=$!; wait")));
    let piped = client.number_after(20, "pid=");
    // A job-control shell on a terminal puts its jobs in groups of their
    // own: the whole session goes. (The quotes keep the echo of the typed
    // line from matching.)
    client.send(&Frame::ExecStart(on_tty(exec(21, &["sh"]), 80, 24)));
    client.data(21, b"sleep 100 & echo p''id=$!\n");
    let job = client.number_after(21, "pid=");
    assert!(Path::new(&format!("/proc/{piped}")).exists());
    assert!(Path::new(&format!("/proc/{job}")).exists());
    drop(client);
    for pid in [piped, job] {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "{pid} survived the hang-up"
        );
    }
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The data of file-read stream `id` until its end, in frames of at most
/// `DATA_CHUNK`.
fn read_stream(client: &mut Client, id: u64) -> Vec<u8> {
    let mut read = Vec::new();
    loop {
        match client.recv() {
            Frame::Data(d) if d.id == id && d.channel == 1 => {
                assert!(d.bytes.len() <= DATA_CHUNK);
                read.extend(d.bytes);
            }
            Frame::StreamEnd {
                id: end,
                channel: 1,
            } if end == id => return read,
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_file_written_in_chunks_reads_back_equal() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/file.bin");
    let content: Vec<u8> = (0..10u32 << 20).map(|i| (i ^ (i >> 11)) as u8).collect();
    let before = agent.peak_rss_kib();
    client.send(&Frame::FileWrite {
        id: 30,
        path: path.display().to_string(),
        mode: Some(0o640),
    });
    for chunk in content.chunks(DATA_CHUNK) {
        client.data(30, chunk);
    }
    client.end(30);
    assert_eq!(
        client.recv(),
        Frame::FileDone {
            id: 30,
            bytes: content.len() as u64
        }
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(
        names(path.parent().unwrap()),
        ["file.bin"],
        "a temporary file is left"
    );
    let made = std::fs::metadata(dir.path().join("a/b")).unwrap();
    assert!(made.is_dir());
    assert_eq!(made.permissions().mode() & 0o777, 0o755);

    client.send(&Frame::FileRead {
        id: 31,
        path: path.display().to_string(),
    });
    assert_eq!(
        client.recv(),
        Frame::FileInfo {
            id: 31,
            size: content.len() as u64,
            mode: 0o640
        }
    );
    let read = read_stream(&mut client, 31);
    assert!(read == content, "the file read back differs");
    let after = agent.peak_rss_kib();
    assert!(
        after < before + 6 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB: the file was held whole"
    );
    // Written again without a mode: replaced whole, 0644.
    client.send(&Frame::FileWrite {
        id: 30,
        path: path.display().to_string(),
        mode: None,
    });
    client.data(30, b"short");
    client.end(30);
    assert_eq!(client.recv(), Frame::FileDone { id: 30, bytes: 5 });
    assert_eq!(std::fs::read(&path).unwrap(), b"short");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o644);
}

#[test]
fn a_file_that_grows_while_read_comes_out_as_it_was_when_opened() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let content: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    client.send(&Frame::FileRead {
        id: 50,
        path: path.display().to_string(),
    });
    let size = match client.recv() {
        Frame::FileInfo { id: 50, size, .. } => size,
        other => panic!("{other:?}"),
    };
    assert_eq!(size, content.len() as u64);
    // The agent waits on the socket long before it has read 8 MiB; the
    // file grows meanwhile.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    log.write_all(&vec![b'+'; 1 << 20]).unwrap();
    let read = read_stream(&mut client, 50);
    assert_eq!(read.len(), content.len(), "not the size announced");
    assert!(
        read == content,
        "the bytes read differ from the file at open"
    );
}

#[test]
fn a_pseudo_file_is_refused_with_a_hint() {
    let agent = Agent::start();
    let mut client = agent.connect();
    client.send(&Frame::FileRead {
        id: 51,
        path: "/proc/self/status".into(),
    });
    let e = client.stream_error(51);
    assert_eq!(e.kind, StreamErrorKind::Invalid, "{e:?}");
    assert!(e.message.contains("cat /proc/self/status"), "{e:?}");
    // An empty regular file is read as one.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    client.send(&Frame::FileRead {
        id: 52,
        path: empty.display().to_string(),
    });
    assert!(matches!(
        client.recv(),
        Frame::FileInfo {
            id: 52,
            size: 0,
            ..
        }
    ));
    assert!(read_stream(&mut client, 52).is_empty());
}

#[test]
fn bad_file_paths_are_refused_by_kind() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    client.send(&Frame::FileRead {
        id: 40,
        path: missing.display().to_string(),
    });
    let e = client.stream_error(40);
    assert_eq!(e.kind, StreamErrorKind::NotFound, "{e:?}");
    assert!(e.message.contains("missing"), "{e:?}");
    client.send(&Frame::FileRead {
        id: 41,
        path: "relative/file".into(),
    });
    assert_eq!(client.stream_error(41).kind, StreamErrorKind::Invalid);
    client.send(&Frame::FileWrite {
        id: 42,
        path: "relative/file".into(),
        mode: None,
    });
    assert_eq!(client.stream_error(42).kind, StreamErrorKind::Invalid);
    client.send(&Frame::FileRead {
        id: 43,
        path: dir.path().display().to_string(),
    });
    assert_eq!(client.stream_error(43).kind, StreamErrorKind::Invalid);
    client.send(&Frame::FileWrite {
        id: 44,
        path: dir.path().display().to_string(),
        mode: None,
    });
    assert_eq!(client.stream_error(44).kind, StreamErrorKind::Invalid);
    // A parent that is a file.
    std::fs::write(dir.path().join("plain"), "x").unwrap();
    client.send(&Frame::FileWrite {
        id: 45,
        path: dir.path().join("plain/sub/f").display().to_string(),
        mode: None,
    });
    assert_eq!(client.stream_error(45).kind, StreamErrorKind::Invalid);
    // Bytes for the refused streams are ignored quietly.
    client.data(45, b"ignored");
    client.end(45);
    client.send(&Frame::Ping { nonce: 1 });
    assert_eq!(client.recv(), Frame::Pong { nonce: 1 });
}

#[test]
fn a_connection_closed_mid_write_leaves_no_file() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("target.bin");
    client.send(&Frame::FileWrite {
        id: 50,
        path: path.display().to_string(),
        mode: None,
    });
    client.data(50, &vec![1; DATA_CHUNK]);
    // The temporary file is there while the stream is open...
    let deadline = Instant::now() + Duration::from_secs(10);
    while names(dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "no temporary file appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    let temp = names(dir.path()).remove(0);
    assert!(temp.starts_with(".target.bin.fastvm-50"), "{temp}");
    client.data(50, &vec![2; DATA_CHUNK]);
    drop(client);
    // ...and gone with the connection, the target never made.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !names(dir.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            names(dir.path())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!path.exists());
}

/// An echo server on 127.0.0.1 for one connection: it sends back what it
/// reads, then closes once it has read EOF. Returns its port.
fn echo_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            conn.write_all(&buf[..n]).unwrap();
        }
        conn.write_all(b"bye").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
    });
    (port, server)
}

#[test]
fn a_forward_carries_bytes_both_ways_and_their_ends() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let (port, server) = echo_server();
    client.send(&Frame::Connect { id: 60, port });
    assert_eq!(client.recv(), Frame::Connected { id: 60 });
    client.data(60, b"hello over vsock");
    let mut back = Vec::new();
    while back.len() < 16 {
        match client.recv() {
            Frame::Data(d) if d.id == 60 && d.channel == 1 => back.extend(d.bytes),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(back, b"hello over vsock");
    // The host's end reaches the service as EOF; the service's end comes back.
    client.end(60);
    let mut tail = Vec::new();
    loop {
        match client.recv() {
            Frame::Data(d) if d.id == 60 && d.channel == 1 => tail.extend(d.bytes),
            Frame::StreamEnd { id: 60, channel: 1 } => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(tail, b"bye");
    server.join().unwrap();
    // Both directions ended: the stream is over and its id free again.
    let (port, server) = echo_server();
    client.send(&Frame::Connect { id: 60, port });
    assert_eq!(client.recv(), Frame::Connected { id: 60 });
    client.end(60);
    loop {
        match client.recv() {
            Frame::Data(d) if d.id == 60 => assert_eq!(d.bytes, b"bye"),
            Frame::StreamEnd { id: 60, channel: 1 } => break,
            other => panic!("{other:?}"),
        }
    }
    server.join().unwrap();
}

#[test]
fn a_forward_to_a_closed_port_is_invalid() {
    let agent = Agent::start();
    let mut client = agent.connect();
    // A port just freed: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    client.send(&Frame::Connect { id: 61, port });
    let e = client.stream_error(61);
    assert_eq!(e.kind, StreamErrorKind::Invalid, "{e:?}");
    assert_eq!(
        e.message,
        format!("connection refused: nothing listens on port {port} in the guest")
    );
}

#[test]
fn duplicate_ids_and_streams_past_the_cap_are_refused() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let cap = guest_agent::streams::MAX_STREAMS as u64;
    for id in 0..cap {
        client.send(&Frame::ExecStart(exec(id, &["sleep", "100"])));
    }
    client.send(&Frame::ExecStart(exec(3, &["true"])));
    let e = client.stream_error(3);
    assert_eq!(e.kind, StreamErrorKind::Invalid, "{e:?}");
    client.send(&Frame::FileRead {
        id: cap,
        path: "/etc/hostname".into(),
    });
    let e = client.stream_error(cap);
    assert_eq!(e.kind, StreamErrorKind::Busy, "{e:?}");
    // Frames for streams that are not open are ignored quietly.
    client.send(&Frame::Signal { id: 999, signal: 9 });
    client.send(&Frame::Resize {
        id: 999,
        cols: 1,
        rows: 1,
    });
    client.data(999, b"nobody");
    client.send(&Frame::Ping { nonce: 5 });
    assert_eq!(client.recv(), Frame::Pong { nonce: 5 });
    // One ends: room again.
    client.send(&Frame::Signal { id: 0, signal: 9 });
    assert_eq!(client.exec_output(0).2.exit_code, 137);
    client.send(&Frame::ExecStart(sh(cap, "echo room")));
    assert_eq!(client.exec_output(cap).0, b"room\n");
    // The host hangs up: every command it left running goes.
    drop(client);
    assert!(agent.childless_within(Duration::from_secs(5)));
}
