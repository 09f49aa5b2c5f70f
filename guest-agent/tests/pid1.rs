//! The agent as a real PID 1: started with `unshare` in new PID, mount,
//! UTS and network namespaces (root only), serving on a Unix socket and
//! keeping its console shell on a pseudo-terminal. Checks what it does as
//! init: the mounts, the hostname, `lo` up, orphans reaped by PID 1, the
//! console shell answering and coming back after `exit`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fastvm_proto::agent::{Decoder, ExecRequest, ExecResult, Frame, encode};

fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// A pseudo-terminal: the master end, and the slave kept open for the child.
struct Pty {
    master: std::fs::File,
    slave: OwnedFd,
}

fn open_pty() -> Pty {
    // SAFETY: plain libc calls on descriptors owned here; ptsname's result is
    // copied before any other pty call.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let name = std::ffi::CStr::from_ptr(libc::ptsname(m)).to_owned();
        // No O_CLOEXEC: the agent inherits it and opens /proc/self/fd/N.
        let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(s >= 0);
        Pty {
            master: std::fs::File::from_raw_fd(m),
            slave: OwnedFd::from_raw_fd(s),
        }
    }
}

struct Init {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    pty: Pty,
}

impl Drop for Init {
    fn drop(&mut self) {
        // Killing PID 1 of the namespace (unshare's child) ends every
        // process in it; then unshare itself.
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for init in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kills the namespace init this test started.
            unsafe { libc::kill(init, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(test: &str) -> Option<Init> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "needs root to create PID and mount namespaces");
        return None;
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        skip(test, "unshare (util-linux) is not installed");
        return None;
    }
    // Under /tmp on purpose when the checkout is there: the agent binds its
    // socket before PID 1 mounts a fresh tmpfs over /tmp.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let socket = dir.path().join("agent.sock");
    let pty = open_pty();
    let console = format!("/proc/self/fd/{}", pty.slave.as_raw_fd());
    let child = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--uts",
            "--net",
            "--propagation",
            "private",
        ])
        .arg(env!("CARGO_BIN_EXE_guest-agent"))
        .arg("--unix")
        .arg(&socket)
        .args(["--console", &console])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "PID 1 never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(Init {
        child,
        socket,
        _dir: dir,
        pty,
    })
}

fn exec(socket: &Path, argv: &[&str]) -> ExecResult {
    match call(socket, &Frame::Exec(ExecRequest::new(argv.iter().copied()))) {
        Frame::ExecResult(r) => r,
        other => panic!("{other:?}"),
    }
}

fn sh(socket: &Path, script: &str) -> ExecResult {
    exec(socket, &["sh", "-c", script])
}

#[test]
fn as_pid_1_it_mounts_names_brings_up_lo_and_reaps() {
    let Some(init) = start("as_pid_1_it_mounts_names_brings_up_lo_and_reaps") else {
        return;
    };
    let s = &init.socket;
    let r = sh(s, "echo $PPID; cat /proc/1/cmdline | tr '\\0' ' '");
    assert!(
        r.stdout.starts_with("1\n"),
        "commands are children of PID 1: {r:?}"
    );
    assert!(r.stdout.contains("--unix"), "{r:?}");

    let mounts = sh(s, "cat /proc/mounts").stdout;
    for (fstype, target) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("devtmpfs", "/dev"),
        ("devpts", "/dev/pts"),
        ("tmpfs", "/tmp"),
        ("tmpfs", "/run"),
    ] {
        assert!(
            mounts
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(target)
                    && l.split_whitespace().nth(2) == Some(fstype)),
            "{fstype} on {target} missing:\n{mounts}"
        );
    }

    let expected = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fastvm".into());
    assert_eq!(
        sh(s, "cat /proc/sys/kernel/hostname").stdout.trim(),
        expected
    );

    // IFF_UP is bit 0 of the interface flags.
    let flags = sh(s, "cat /sys/class/net/lo/flags").stdout;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is up (flags {flags:#x})");

    // An orphan is re-parented to PID 1 and reaped when it ends.
    let orphan = sh(s, "sleep 0.3 >/dev/null 2>&1 & echo $!").stdout;
    let orphan = orphan.trim();
    let stat = sh(s, &format!("cat /proc/{orphan}/stat")).stdout;
    let ppid = stat.rsplit(')').next().unwrap().split_whitespace().nth(1);
    assert_eq!(ppid, Some("1"), "orphan adopted by PID 1: {stat}");
    std::thread::sleep(Duration::from_millis(800));
    let after = sh(
        s,
        &format!("cat /proc/{orphan}/stat 2>/dev/null || echo gone"),
    );
    assert_eq!(after.stdout.trim(), "gone", "orphan left behind: {after:?}");
}

/// Reads from the console until `needle` appears.
fn read_until(master: &mut std::fs::File, needle: &str) -> String {
    let fd = master.as_raw_fd();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "console never showed {needle:?}: {seen:?}");
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) } <= 0 {
            continue;
        }
        let n = master.read(&mut buf).unwrap_or(0);
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

#[test]
fn as_pid_1_it_keeps_a_shell_on_the_console() {
    let Some(mut init) = start("as_pid_1_it_keeps_a_shell_on_the_console") else {
        return;
    };
    let master = &mut init.pty.master;
    master.write_all(b"echo con$((40+2))sole\n").unwrap();
    read_until(master, "con42sole");
    master.write_all(b"exit\n").unwrap();
    // A new shell comes up (after a short pause) and answers again.
    std::thread::sleep(Duration::from_millis(1500));
    master.write_all(b"echo again$((1+1))\n").unwrap();
    read_until(master, "again2");
}

/// Sends one frame on a fresh connection and returns the answer after `Ready`.
fn call(socket: &Path, frame: &Frame) -> Frame {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(&encode(frame).unwrap()).unwrap();
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    let mut replies = Vec::new();
    while replies.len() < 2 {
        match dec.next_frame().unwrap() {
            Some(f) => replies.push(f),
            None => {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "agent closed");
                dec.push(&buf[..n]);
            }
        }
    }
    replies.pop().unwrap()
}

#[test]
fn as_pid_1_it_applies_the_network_the_host_sends() {
    let Some(init) = start("as_pid_1_it_applies_the_network_the_host_sends") else {
        return;
    };
    let s = &init.socket;
    // The namespace has no NIC: one end of a veth pair stands in for
    // virtio-net's eth0.
    let made = sh(
        s,
        "ip link add eth0 type veth peer name eth1 && ip link set eth1 up",
    );
    if made.exit_code != 0 {
        skip(
            "as_pid_1_it_applies_the_network_the_host_sends",
            &format!("cannot create a veth pair: {}", made.stderr.trim()),
        );
        return;
    }
    let set = |mac: &str, ip6: &str| {
        call(
            s,
            &Frame::SetNetwork {
                nonce: 9,
                mac: mac.into(),
                ip6: ip6.into(),
                gw6: "fe80::1".into(),
                ip4: None,
                gw4: None,
            },
        )
    };
    assert_eq!(
        set("02:00:00:00:00:01", "fd00:5::ff:fe00:1/128"),
        Frame::Pong { nonce: 9 }
    );
    let link = sh(s, "ip link show dev eth0").stdout;
    assert!(link.contains("02:00:00:00:00:01"), "{link}");
    let addrs = sh(s, "ip -6 addr show dev eth0 scope global").stdout;
    assert!(addrs.contains("fd00:5::ff:fe00:1/128"), "{addrs}");
    let route = sh(s, "ip -6 route show default").stdout;
    assert!(route.contains("via fe80::1 dev eth0"), "{route}");

    // A clone's new identity replaces the old address.
    assert_eq!(
        set("02:00:00:00:00:02", "fd00:5::ff:fe00:2/128"),
        Frame::Pong { nonce: 9 }
    );
    let addrs = sh(s, "ip -6 addr show dev eth0 scope global").stdout;
    assert!(
        addrs.contains("fd00:5::ff:fe00:2/128") && !addrs.contains("fd00:5::ff:fe00:1/128"),
        "{addrs}"
    );
    // Bad values are refused with the reason, nothing applied.
    match set("02:00:00:00:00:03", "not-an-address") {
        Frame::Error { message } => assert!(message.contains("ip6"), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
}
