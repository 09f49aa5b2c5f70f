//! The agent binary served over a Unix socket (`guest-agent --unix`): the
//! same session and exec code that serves vsock inside the guest.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fastvm_proto::agent::{Decoder, ExecRequest, ExecResult, Frame, HEADER_LEN, encode};

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
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "the agent never listened");
            std::thread::sleep(Duration::from_millis(5));
        }
        Agent {
            child,
            socket,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn connect(&self) -> Client {
        // The socket file appears at bind, a moment before the agent listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(&self.socket) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < deadline => {
                    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("the agent never accepted: {e}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut client = Client {
            stream,
            decoder: Decoder::new(),
        };
        match client.recv() {
            Frame::Ready(ready) => assert!(ready.agent.starts_with("guest-agent ")),
            other => panic!("expected ready, got {other:?}"),
        }
        client
    }

    fn exec(&self, req: ExecRequest) -> ExecResult {
        let mut client = self.connect();
        client.send(&Frame::Exec(req));
        match client.recv() {
            Frame::ExecResult(r) => r,
            other => panic!("expected a result, got {other:?}"),
        }
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

    fn recv(&mut self) -> Frame {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(frame) = self.decoder.next_frame().unwrap() {
                return frame;
            }
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "the agent closed the connection");
            self.decoder.push(&buf[..n]);
        }
    }
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

/// Fields of /proc/PID/stat after the command name: (state, ppid).
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
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

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn ready_and_ping() {
    let agent = Agent::start();
    let mut client = agent.connect();
    client.send(&Frame::Ping { nonce: 42 });
    assert_eq!(client.recv(), Frame::Pong { nonce: 42 });
    client.send(&Frame::Pong { nonce: 1 });
    assert!(matches!(client.recv(), Frame::Error { .. }));
    // Outside the guest the agent never touches the host's clock.
    client.send(&Frame::SetClock {
        nonce: 3,
        unix_ms: 0,
    });
    match client.recv() {
        Frame::Error { message } => assert!(message.contains("clock"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(std::time::SystemTime::now() > std::time::UNIX_EPOCH + Duration::from_secs(1 << 30));
}

#[test]
fn a_frame_of_an_unknown_type_is_answered_with_an_error_and_the_connection_goes_on() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let json = br#"{"type":"fromTheFuture","nonce":1}"#;
    let mut frame = encode(&Frame::Ping { nonce: 0 }).unwrap()[..HEADER_LEN].to_vec();
    frame[8..12].copy_from_slice(&(json.len() as u32).to_le_bytes());
    frame.extend_from_slice(json);
    client.stream.write_all(&frame).unwrap();
    match client.recv() {
        Frame::Error { message } => assert!(message.contains("fromTheFuture"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    client.send(&Frame::Ping { nonce: 9 });
    assert_eq!(client.recv(), Frame::Pong { nonce: 9 });
}

#[test]
fn exit_codes_and_separate_streams() {
    let agent = Agent::start();
    let r = agent.exec(sh("echo out; echo err >&2; exit 3"));
    assert_eq!(r.exit_code, 3);
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    assert!(!r.timed_out && !r.stdout_truncated && !r.stderr_truncated);
    let r = agent.exec(sh("kill -9 $$"));
    assert_eq!(r.exit_code, 128 + 9);
    let r = agent.exec(ExecRequest::new(["true"]));
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stdout, "");
}

#[test]
fn several_commands_on_one_connection() {
    let agent = Agent::start();
    let mut client = agent.connect();
    for i in 0..3 {
        client.send(&Frame::Exec(sh(&format!("echo {i}"))));
        match client.recv() {
            Frame::ExecResult(r) => assert_eq!(r.stdout, format!("{i}\n")),
            other => panic!("{other:?}"),
        }
    }
}

/// `req` with exec id `id`.
fn with_id(mut req: ExecRequest, id: u64) -> ExecRequest {
    req.id = id;
    req
}

#[test]
fn execs_on_one_connection_run_at_once_and_answer_by_id() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let start = Instant::now();
    client.send(&Frame::Exec(with_id(sh("sleep 1; echo slow"), 7)));
    client.send(&Frame::Exec(with_id(sh("echo fast"), 8)));
    // Frames are answered while both run.
    client.send(&Frame::Ping { nonce: 3 });
    let mut order = Vec::new();
    for _ in 0..3 {
        match client.recv() {
            Frame::ExecResult(r) => order.push(format!("{} {}", r.id, r.stdout.trim())),
            Frame::Pong { nonce } => order.push(format!("pong {nonce}")),
            other => panic!("{other:?}"),
        }
    }
    let (early, last) = order.split_at(2);
    assert!(early.contains(&"8 fast".to_string()), "{order:?}");
    assert!(early.contains(&"pong 3".to_string()), "{order:?}");
    assert_eq!(last, ["7 slow"]);
    // Side by side, not one after the other: both took the slow one's second.
    assert!(
        start.elapsed() < Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_connection_runs_at_most_its_cap_of_commands_at_once() {
    let agent = Agent::start();
    let mut client = agent.connect();
    let cap = guest_agent::session::MAX_RUNNING_EXECS as u64;
    for id in 0..cap {
        client.send(&Frame::Exec(with_id(sh("sleep 2"), id)));
    }
    client.send(&Frame::Exec(with_id(sh("echo one too many"), cap)));
    match client.recv() {
        Frame::ExecResult(r) => {
            assert_eq!((r.id, r.exit_code), (cap, 126), "{r:?}");
            assert!(r.stderr.contains("already running"), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
    let mut ended = 0;
    while ended < cap {
        match client.recv() {
            Frame::ExecResult(r) => {
                assert_eq!(r.exit_code, 0, "{r:?}");
                ended += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    // Room again once they ended.
    client.send(&Frame::Exec(with_id(sh("echo again"), cap + 1)));
    match client.recv() {
        Frame::ExecResult(r) => assert_eq!((r.id, r.stdout.as_str()), (cap + 1, "again\n")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn timeout_kills_children_and_grandchildren() {
    let agent = Agent::start();
    let mut req = sh("sleep 60 & echo $!; (sleep 60 & echo $!); sleep 60");
    req.timeout_ms = Some(500);
    let start = Instant::now();
    let r = agent.exec(req);
    assert!(r.timed_out);
    assert_eq!(r.exit_code, 124);
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(r.duration_ms >= 500, "{}", r.duration_ms);
    let pids: Vec<u32> = r.stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{r:?}");
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "process {pid} survived the timeout: {:?}",
            proc_state(pid)
        );
    }
}

#[test]
fn a_host_that_hangs_up_kills_every_command_of_the_connection() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let mut client = agent.connect();
    let pidfiles: Vec<_> = (0..2).map(|i| dir.path().join(format!("pid{i}"))).collect();
    for (id, pidfile) in pidfiles.iter().enumerate() {
        let script = format!("echo $$ > {}; sleep 60", pidfile.display());
        client.send(&Frame::Exec(with_id(sh(&script), id as u64)));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids: Vec<u32> = pidfiles
        .iter()
        .map(|pidfile| {
            loop {
                if let Some(pid) = std::fs::read_to_string(pidfile)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                {
                    break pid;
                }
                assert!(Instant::now() < deadline, "a command never started");
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .collect();
    drop(client);
    for pid in pids {
        assert!(wait_gone(pid, Duration::from_secs(5)), "{pid} still there");
    }
}

#[test]
fn a_gibibyte_of_output_is_capped_without_growing_memory() {
    let agent = Agent::start();
    let before = peak_rss_kib(agent.pid());
    let mut req = ExecRequest::new(["head", "-c", "1073741824", "/dev/zero"]);
    req.max_stdout = 1 << 20;
    let r = agent.exec(req);
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    assert!(r.stdout_truncated);
    assert_eq!(r.stdout.len(), 1 << 20);
    assert!(r.stdout.bytes().all(|b| b == 0));
    let after = peak_rss_kib(agent.pid());
    // The kept MiB, its JSON (6 bytes per NUL) and read buffers: far below
    // what buffering 1 GiB would take.
    assert!(
        after < before + 64 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn stderr_cap_is_separate() {
    let agent = Agent::start();
    let mut req = sh("echo 0123456789 >&2; echo ok");
    req.max_stderr = 4;
    let r = agent.exec(req);
    assert_eq!(r.stderr, "0123");
    assert!(r.stderr_truncated);
    assert_eq!(r.stdout, "ok\n");
    assert!(!r.stdout_truncated);
}

#[test]
fn non_utf8_output_is_carried_with_replacement_characters() {
    let agent = Agent::start();
    let r = agent.exec(sh(r"printf 'a\377\376b\303\251'"));
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stdout, "a\u{FFFD}\u{FFFD}bé");
}

#[test]
fn a_missing_binary_is_exit_127() {
    let agent = Agent::start();
    let r = agent.exec(ExecRequest::new(["/no/such/binary", "x"]));
    assert_eq!(r.exit_code, 127);
    assert!(r.stderr.contains("/no/such/binary"), "{}", r.stderr);
    let r = agent.exec(ExecRequest::new(["no-such-command-anywhere"]));
    assert_eq!(r.exit_code, 127);
    let mut req = ExecRequest::new(["true"]);
    req.argv.clear();
    assert_eq!(agent.exec(req).exit_code, 127);
    let r = agent.exec(ExecRequest::new(["", "x"]));
    assert_eq!(r.exit_code, 127);
    assert!(r.stderr.contains("program name is empty"), "{}", r.stderr);
}

#[test]
fn env_and_cwd_are_applied() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    let mut req = sh("echo \"$FOO $BAR\"; pwd");
    req.env.insert("FOO".into(), "foo value".into());
    req.env.insert("BAR".into(), "é".into());
    req.cwd = Some(cwd.display().to_string());
    let r = agent.exec(req);
    assert_eq!(r.stdout, format!("foo value é\n{}\n", cwd.display()));
    let mut req = ExecRequest::new(["true"]);
    req.cwd = Some("/no/such/dir".into());
    let r = agent.exec(req);
    assert_eq!(r.exit_code, 126);
    assert!(r.stderr.contains("/no/such/dir"), "{}", r.stderr);
}

#[test]
fn orphans_are_reaped() {
    let agent = Agent::start();
    // The shell exits at once; its background child becomes the agent's
    // (a subreaper, as PID 1 is in the guest) and must not stay a zombie.
    let r = agent.exec(sh("sleep 0.3 >/dev/null 2>&1 & echo $!"));
    assert_eq!(r.exit_code, 0);
    let orphan: u32 = r.stdout.trim().parse().unwrap();
    match proc_state(orphan) {
        Some((_, ppid)) => assert_eq!(ppid, agent.pid(), "not reparented to the agent"),
        None => panic!("the orphan ended before it could be checked"),
    }
    assert!(
        wait_gone(orphan, Duration::from_secs(5)),
        "orphan {orphan} left as {:?}",
        proc_state(orphan)
    );
}

#[test]
fn a_command_closing_stdout_early_still_reports_its_exit() {
    let agent = Agent::start();
    let r = agent.exec(sh("exec >&-; sleep 0.2; exit 5"));
    assert_eq!(r.exit_code, 5);
    assert!(r.duration_ms >= 200);
}

#[test]
fn a_command_runs_as_the_user_it_names() {
    let agent = Agent::start();
    let mut ghost = sh("true");
    ghost.user = Some("no-such-user-here".into());
    let r = agent.exec(ghost);
    assert_eq!(r.exit_code, 126, "{r:?}");
    assert!(r.stderr.contains("not in the image's /etc/passwd"), "{r:?}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP the uid switch: the agent runs unprivileged here (root can switch users)");
        return;
    }
    let mut req = sh("id -u; id -g; id -G");
    req.user = Some("65534:65534".into());
    let r = agent.exec(req);
    assert_eq!(
        (r.exit_code, r.stdout.as_str()),
        (0, "65534\n65534\n65534\n"),
        "{r:?}"
    );
}
