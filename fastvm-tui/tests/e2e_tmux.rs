//! End to end: the real `fastvm-tui` binary in a tmux pane (send-keys,
//! capture-pane) against a real `fastvmd serve` booting the test guest.
//!
//! Needs the `fastvmd` binary next to this test's directory (built by
//! `cargo test --workspace` or `cargo build -p fastvmd`), tmux and /dev/kvm;
//! without them the test prints `SKIP` and returns.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TUI: &str = env!("CARGO_BIN_EXE_fastvm-tui");

/// `fastvmd` in the target directory this test was built into.
fn fastvmd_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    let bin = dir.join("fastvmd");
    bin.is_file().then_some(bin)
}

/// The `fastvmd` binary when this host can run `test` (tmux, and /dev/kvm
/// when `kvm`); otherwise prints why the test skips.
fn prerequisites(test: &str, kvm: bool) -> Option<PathBuf> {
    let why = if Command::new("tmux").arg("-V").output().is_err() {
        "tmux is not installed"
    } else if kvm && !Path::new("/dev/kvm").exists() {
        "no /dev/kvm"
    } else if let Some(fastvmd) = fastvmd_bin() {
        return Some(fastvmd);
    } else {
        "no fastvmd binary next to the tests (run cargo test --workspace)"
    };
    eprintln!("SKIP {test}: {why}");
    None
}

/// A `fastvmd serve` on a temporary data dir; on drop, its VMs are deleted
/// and it is killed.
struct Daemon {
    child: Child,
    bin: PathBuf,
    socket: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Daemon {
    fn start(bin: &Path) -> Daemon {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (child, socket) = spawn(bin, &tmp.path().join("data"));
        Daemon {
            child,
            bin: bin.to_path_buf(),
            socket,
            _tmp: tmp,
        }
    }

    /// Kills the daemon (SIGKILL; its VMs keep running).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the daemon again on the same data dir.
    fn restart(&mut self) {
        self.kill();
        let (child, socket) = spawn(&self.bin, &self._tmp.path().join("data"));
        assert_eq!(socket, self.socket);
        self.child = child;
    }

    /// Runs `fastvmd call OP [JSON]`; the answer's stdout.
    fn call(&self, op: &str, json: Option<&str>) -> String {
        let out = Command::new(&self.bin)
            .arg("call")
            .arg(op)
            .args(json)
            .env("FASTVM_SOCKET", &self.socket)
            .output()
            .expect("fastvmd call");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let list: serde_json::Value =
            serde_json::from_str(&self.call("listVMs", None)).unwrap_or_default();
        for vm in list.as_array().into_iter().flatten() {
            if let Some(id) = vm["id"].as_str() {
                self.call("deleteVM", Some(&format!(r#"{{"id":"{id}"}}"#)));
            }
        }
        self.kill();
    }
}

/// Starts `fastvmd serve` on `data_dir`; the child and its socket path.
fn spawn(bin: &Path, data_dir: &Path) -> (Child, PathBuf) {
    let mut child = Command::new(bin)
        .args(["serve", "--guest", "test", "--listen", "127.0.0.1:0"])
        .args(["--ipv4-range", "off"])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fastvmd serve");
    let mut socket = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.expect("daemon stdout");
        if let Some(s) = line.strip_prefix("socket: ") {
            socket = Some(PathBuf::from(s));
        }
        if line.starts_with("listening: ") {
            break;
        }
    }
    let socket = socket.expect("the daemon prints its socket before listening");
    (child, socket)
}

/// A detached tmux session on its own server socket, running one command.
struct Tmux {
    server: String,
}

impl Tmux {
    fn start(cmd: &[&str], width: u16, height: u16) -> Tmux {
        // One tmux server per session: tests run in parallel.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let server = format!("fastvm-tui-e2e-{}-{n}", std::process::id());
        let status = Command::new("tmux")
            .args(["-L", &server, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", &width.to_string(), "-y", &height.to_string(), "--"])
            .args(cmd)
            .status()
            .expect("tmux new-session");
        assert!(status.success(), "tmux new-session failed");
        Tmux { server }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.server])
            .args(args)
            .output()
            .expect("tmux")
    }

    /// Sends tmux key names (`Enter`, `C-]`, `c`...).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend(keys);
        self.tmux(&args);
        std::thread::sleep(Duration::from_millis(150));
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "0", "-l", text]);
        std::thread::sleep(Duration::from_millis(150));
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "0"]).stdout).into_owned()
    }

    /// Waits until `pred` holds for the screen; panics with the screen after
    /// `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen was:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

/// A shell command running the dashboard; after it exits, the shell shows
/// its exit status and whether the terminal is back in canonical (cooked)
/// mode (`icanon`, not `-icanon`).
fn wrapped(socket: &str) -> String {
    format!(
        "'{TUI}' --socket '{socket}'; echo \"tui-exited-$?\"; \
         stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\{{0,1\\}}icanon'; sleep 60"
    )
}

/// Asserts the dashboard exited with status 0 and left the terminal restored.
fn assert_restored(tui: &Tmux) {
    let t = Duration::from_secs(20);
    let screen = tui.wait_for("the dashboard to exit", t, |s| s.contains("tui-exited-"));
    assert!(screen.contains("tui-exited-0"), "{screen}");
    assert!(
        !screen.contains("● live"),
        "the alternate screen is still shown:\n{screen}"
    );
    let mode = tui.wait_for("the terminal mode", t, |s| s.contains("icanon"));
    assert!(
        mode.lines().any(|l| l.trim() == "icanon"),
        "the terminal is left in raw mode:\n{mode}"
    );
}

/// A child process of `parent`, from /proc.
fn child_of(parent: i32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: i32 = stat[stat.rfind(')')? + 2..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == parent).then_some(pid)
    })
}

/// The table row naming `name`, if shown.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.starts_with('│') && l[3..].trim_start().starts_with(name))
}

#[test]
fn create_exec_console_delete_in_tmux() {
    let test = "create_exec_console_delete_in_tmux";
    let Some(fastvmd) = prerequisites(test, true) else {
        return;
    };
    let mut daemon = Daemon::start(&fastvmd);
    let socket = daemon.socket.to_str().unwrap().to_string();
    let tui = Tmux::start(&["sh", "-c", &wrapped(&socket)], 140, 40);
    let t = Duration::from_secs(20);
    tui.wait_for("the live dashboard", t, |s| {
        s.contains("● live") && s.contains("VMs (0)")
    });

    // Create a VM through the form and see it reach running.
    tui.keys(&["c"]);
    tui.wait_for("the create form", t, |s| s.contains("Create VM"));
    tui.type_text("e2e-vm");
    tui.keys(&["Enter"]);
    let screen = tui.wait_for("the VM to be listed", t, |s| {
        row(s, "e2e-vm").is_some() || s.contains("error 503")
    });
    if screen.contains("error 503") {
        eprintln!("SKIP {test}: the daemon cannot run VMs on this host (503)");
        return;
    }
    tui.wait_for("the VM to run", t, |s| {
        row(s, "e2e-vm").is_some_and(|r| r.contains("running"))
    });

    // Exec: the output pane shows stdout and the exit code.
    tui.keys(&["e"]);
    tui.wait_for("the exec prompt", t, |s| s.contains("exec in e2e-vm"));
    tui.type_text("echo hello-from-exec");
    tui.keys(&["Enter"]);
    let screen = tui.wait_for("the exec output", t, |s| s.contains("exit 0"));
    assert!(
        screen.lines().any(|l| l.contains("│hello-from-exec")),
        "stdout line missing:\n{screen}"
    );
    tui.keys(&["Escape"]);
    tui.wait_for("the exec pane to close", t, |s| !s.contains("exit 0"));

    // Streaming: `tick 1` shows while the command still runs, before `tick 3`.
    tui.keys(&["e"]);
    tui.wait_for("the exec prompt", t, |s| s.contains("exec in e2e-vm"));
    tui.type_text("tick 3 1000");
    tui.keys(&["Enter"]);
    let screen = tui.wait_for("the first tick", t, |s| s.contains("│tick 1"));
    assert!(
        !screen.contains("│tick 3") && !screen.contains("exit 0"),
        "tick 1 arrived only with the end:\n{screen}"
    );
    assert!(screen.contains("running"), "{screen}");
    tui.wait_for("the last tick and the exit code", t, |s| {
        s.contains("│tick 2") && s.contains("│tick 3") && s.contains("exit 0")
    });
    tui.keys(&["Escape"]);
    tui.wait_for("the exec pane to close", t, |s| !s.contains("exit 0"));

    // Ctrl-C sends SIGINT to the command: interrupted, then exit 130.
    tui.keys(&["e"]);
    tui.wait_for("the exec prompt", t, |s| s.contains("exec in e2e-vm"));
    tui.type_text("sleep 60000");
    tui.keys(&["Enter"]);
    tui.wait_for("the command to run", t, |s| s.contains("running..."));
    tui.keys(&["C-c"]);
    tui.wait_for("exit 130", t, |s| {
        s.contains("exit 130") && s.contains("interrupted")
    });
    tui.keys(&["Escape"]);
    tui.wait_for("the exec pane to close", t, |s| !s.contains("exit 130"));

    // Console: recent output is replayed, typed text is echoed, Ctrl-] leaves.
    tui.keys(&["o"]);
    tui.wait_for("the console pane", t, |s| {
        s.contains("Ctrl-] leaves — console e2e-vm")
    });
    tui.wait_for("the replayed boot output", t, |s| {
        s.contains("fastvm-test-guest ready")
    });
    tui.type_text("typed-into-console-42");
    tui.keys(&["Enter"]);
    tui.wait_for("the console echo", t, |s| {
        s.contains("typed-into-console-42")
    });
    tui.keys(&["C-]"]);
    tui.wait_for("the console to close", t, |s| !s.contains("console e2e-vm"));

    // Delete with confirmation and see the VM go.
    tui.keys(&["d"]);
    tui.wait_for("the confirmation", t, |s| s.contains("Delete VM e2e-vm"));
    tui.keys(&["y"]);
    tui.wait_for("the VM to go", t, |s| {
        row(s, "e2e-vm").is_none() && s.contains("VMs (0)")
    });

    // A daemon restart: the dashboard says the daemon is down, then
    // reconnects and re-lists by itself.
    daemon.kill();
    tui.wait_for("the daemon-down notice", t, |s| {
        s.contains("daemon down") && s.contains("daemon unreachable at")
    });
    daemon.restart();
    tui.wait_for("the reconnection", t, |s| {
        s.contains("● live") && s.contains("VMs (0)")
    });

    // q quits; the terminal is restored (main screen, cooked mode).
    tui.keys(&["q"]);
    assert_restored(&tui);
    drop(daemon);
}

/// Bytes that are not all alike (a reordered chunk shows).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Opens the copy form on the selected VM, switched to a download when
/// `out`; the local path field has the focus after it.
fn open_copy_form(tui: &Tmux, vm: &str, out: bool) {
    let t = Duration::from_secs(20);
    tui.keys(&["t"]);
    tui.wait_for("the copy form", t, |s| {
        s.contains(&format!("Copy a file — {vm}"))
    });
    if out {
        tui.keys(&["Up", "Space"]);
        tui.wait_for("the download direction", t, |s| s.contains("out of the VM"));
        tui.keys(&["Tab"]);
    }
}

#[test]
fn copy_a_file_in_and_out_in_tmux() {
    let test = "copy_a_file_in_and_out_in_tmux";
    let Some(fastvmd) = prerequisites(test, true) else {
        return;
    };
    let daemon = Daemon::start(&fastvmd);
    let socket = daemon.socket.to_str().unwrap().to_string();
    let work = tempfile::tempdir().unwrap();
    let data = pattern(3 << 20);
    let source = work.path().join("payload.bin");
    std::fs::write(&source, &data).unwrap();
    let out_dir = work.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let tui = Tmux::start(&["sh", "-c", &wrapped(&socket)], 160, 40);
    let t = Duration::from_secs(20);
    tui.wait_for("the live dashboard", t, |s| {
        s.contains("● live") && s.contains("VMs (0)")
    });
    tui.keys(&["c"]);
    tui.wait_for("the create form", t, |s| s.contains("Create VM"));
    tui.type_text("cp-vm");
    tui.keys(&["Enter"]);
    let screen = tui.wait_for("the VM to be listed", t, |s| {
        row(s, "cp-vm").is_some() || s.contains("error 503")
    });
    if screen.contains("error 503") {
        eprintln!("SKIP {test}: the daemon cannot run VMs on this host (503)");
        return;
    }
    tui.wait_for("the VM to run", t, |s| {
        row(s, "cp-vm").is_some_and(|r| r.contains("running"))
    });

    // A relative VM path is refused in the form, with why.
    open_copy_form(&tui, "cp-vm", false);
    tui.type_text(source.to_str().unwrap());
    tui.keys(&["Tab"]);
    tui.type_text("tmp/payload.bin");
    tui.keys(&["Enter"]);
    tui.wait_for("the form's error", t, |s| {
        s.contains("is not absolute; it must start with /")
    });

    // Into the VM: the guest holds every byte.
    tui.keys(&["C-a"]);
    tui.type_text("/");
    tui.keys(&["Enter"]);
    let done = format!("copied {} into cp-vm:/tmp/payload.bin", source.display());
    let screen = tui.wait_for("the upload's success", t, |s| {
        s.contains(&done) || s.contains("failed")
    });
    assert!(screen.contains("(3145728 bytes) in "), "{screen}");
    tui.keys(&["e"]);
    tui.wait_for("the exec prompt", t, |s| s.contains("exec in cp-vm"));
    tui.type_text("file-size /tmp/payload.bin");
    tui.keys(&["Enter"]);
    let screen = tui.wait_for("the guest's file size", t, |s| s.contains("exit "));
    assert!(
        screen.contains("│3145728") && screen.contains("exit 0"),
        "the guest does not hold the file:\n{screen}"
    );
    tui.keys(&["Escape"]);
    tui.wait_for("the exec pane to close", t, |s| !s.contains("exit 0"));

    // Out of the VM into a directory: the file takes its name in the VM.
    open_copy_form(&tui, "cp-vm", true);
    tui.type_text(out_dir.to_str().unwrap());
    tui.keys(&["Tab"]);
    tui.type_text("/tmp/payload.bin");
    tui.keys(&["Enter"]);
    let copied = out_dir.join("payload.bin");
    let done = format!(
        "copied out of cp-vm:/tmp/payload.bin to {}",
        copied.display()
    );
    let screen = tui.wait_for("the download's success", t, |s| {
        s.contains(&done) || s.contains("failed")
    });
    assert!(screen.contains("(3145728 bytes) in "), "{screen}");
    let back = std::fs::read(&copied).expect("the downloaded file");
    assert!(
        back == data,
        "the bytes copied out differ from those copied in"
    );

    // A missing file: the daemon's error, and nothing written here.
    open_copy_form(&tui, "cp-vm", true);
    tui.type_text(out_dir.to_str().unwrap());
    tui.keys(&["Tab"]);
    tui.type_text("/tmp/missing.bin");
    tui.keys(&["Enter"]);
    tui.wait_for("the daemon's error", t, |s| {
        s.contains("copy out of cp-vm:/tmp/missing.bin failed: error 404")
    });
    let left: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["payload.bin"], "files left behind");

    tui.keys(&["q"]);
    assert_restored(&tui);
    drop(daemon);
}

#[test]
fn sigterm_restores_the_terminal() {
    let Some(fastvmd) = prerequisites("sigterm_restores_the_terminal", false) else {
        return;
    };
    let daemon = Daemon::start(&fastvmd);
    let tui = Tmux::start(
        &["sh", "-c", &wrapped(daemon.socket.to_str().unwrap())],
        100,
        30,
    );
    tui.wait_for("the live dashboard", Duration::from_secs(20), |s| {
        s.contains("● live")
    });
    let shell = tui.tmux(&["display-message", "-p", "-t", "0", "#{pane_pid}"]);
    let shell = String::from_utf8_lossy(&shell.stdout).trim().to_string();
    let shell: i32 = shell.parse().expect("pane pid");
    let pid = child_of(shell).expect("the dashboard process under the pane's shell");
    // SAFETY: sends SIGTERM to the dashboard process this test started.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    assert_restored(&tui);
}

#[test]
fn no_daemon_gives_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing.sock");
    let out = Command::new(TUI)
        .arg("--socket")
        .arg(&missing)
        .stdin(Stdio::null())
        .output()
        .expect("run fastvm-tui");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(
        err.contains("fastvmd serve") && err.contains("--socket"),
        "{err}"
    );
}
