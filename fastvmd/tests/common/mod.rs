//! Helpers shared by the integration tests: find the built binaries, decide
//! whether this host can run VMs, and drive a `fastvmd vmm` process.

#![allow(dead_code)]

pub mod daemon;
pub mod netns;
pub mod schema;
pub mod socket;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fastvm_proto::agent::{ExecRequest, ExecResult};
use fastvmd::agent::AgentConn;
use fastvmd::supervisor::control_client::ControlClient;
use fastvmd::vmm::control::{Request, SnapshotInfo, Status};
use fastvmd::vmm::host;

/// The `fastvmd` binary cargo built for these tests.
pub fn fastvmd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fastvmd"))
}

/// The monitor program the daemon starts (`fastvm-vmm`).
pub fn monitor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fastvm-vmm"))
}

/// The test guest ELF built by fastvmd's build script.
pub fn test_guest() -> PathBuf {
    PathBuf::from(fastvmd::TEST_GUEST_PATH)
}

/// True when VMs can run here; otherwise says why the test is skipped, on
/// stderr directly so the harness does not capture it.
pub fn can_run_vms(test: &str) -> bool {
    let kind = host::detect();
    if kind.can_run_test_guest() {
        true
    } else {
        let _ = writeln!(std::io::stderr(), "SKIP {test}: {}", kind.describe());
        false
    }
}

/// A monitor process with the test guest, in a temporary directory.
pub struct TestVm {
    pub child: Child,
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub vcpus: u8,
    pub memory_mib: u64,
}

/// Options for [`TestVm::start`].
#[derive(Clone)]
pub struct VmOpts {
    pub vcpus: u8,
    pub memory_mib: u64,
    pub disk_mib: u64,
    pub cid: u64,
    /// The monitor's stderr goes to this file instead of a pipe.
    pub log_file: Option<PathBuf>,
    /// More `vmm` arguments.
    pub extra: Vec<String>,
    /// `RUST_LOG` for the monitor.
    pub rust_log: Option<String>,
}

impl Default for VmOpts {
    fn default() -> Self {
        VmOpts {
            vcpus: 2,
            memory_mib: 128,
            disk_mib: 64,
            cid: 3,
            log_file: None,
            extra: Vec::new(),
            rust_log: None,
        }
    }
}

impl TestVm {
    /// Starts a monitor and waits until its sockets exist.
    pub fn start(opts: VmOpts) -> TestVm {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("vm");
        let disk = tmp.path().join("disk.img");
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(opts.disk_mib << 20))
            .expect("disk image");
        let stderr = match &opts.log_file {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::piped(),
        };
        let mut cmd = Command::new(monitor_bin());
        if let Some(filter) = &opts.rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd
            .arg("--dir")
            .arg(&dir)
            .arg("--kernel")
            .arg(test_guest())
            .args(["--vcpus", &opts.vcpus.to_string()])
            .args(["--memory-mib", &opts.memory_mib.to_string()])
            .arg("--disk")
            .arg(&disk)
            .args(["--vsock-cid", &opts.cid.to_string()])
            .args(&opts.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn fastvm-vmm");
        let mut vm = TestVm {
            child,
            tmp,
            dir,
            disk,
            vcpus: opts.vcpus,
            memory_mib: opts.memory_mib,
        };
        vm.wait_for_socket("console.sock");
        vm.wait_for_socket("control.sock");
        vm
    }

    /// Starts a clone from `snapshot` with extra `vmm` arguments.
    pub fn restore(snapshot: &Path, extra: &[&str]) -> TestVm {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("vm");
        let child = Command::new(monitor_bin())
            .arg("--restore")
            .arg(snapshot)
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fastvm-vmm --restore");
        let mut vm = TestVm {
            child,
            disk: dir.join("disk"),
            dir,
            tmp,
            vcpus: 0,
            memory_mib: 0,
        };
        vm.wait_for_socket("console.sock");
        vm.wait_for_socket("control.sock");
        vm
    }

    /// Takes a snapshot (written in the VM directory, then moved to `dir`).
    pub fn snapshot(&self, dir: &Path, resume: bool) -> Result<SnapshotInfo, String> {
        let mut client =
            ControlClient::connect(&self.dir.join("control.sock")).map_err(|e| e.to_string())?;
        client
            .snapshot_into(&self.dir, dir, resume)
            .map_err(|e| e.to_string())
    }

    fn wait_for_socket(&mut self, name: &str) {
        let path = self.dir.join(name);
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&path).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("monitor exited ({status}) before {name} appeared: {err}");
            }
            assert!(Instant::now() < deadline, "{name} did not appear");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A new console connection.
    pub fn console(&self) -> UnixStream {
        let s = UnixStream::connect(self.dir.join("console.sock")).expect("console.sock");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s
    }

    /// Reads the console until `needle` appears; returns everything read.
    pub fn read_until(stream: &mut UnixStream, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            if String::from_utf8_lossy(&seen).contains(needle) {
                break;
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// Waits for the test guest's ready line and returns the console text.
    pub fn wait_ready(&self) -> String {
        let mut console = self.console();
        let text = Self::read_until(
            &mut console,
            "fastvm-test-guest ready",
            Duration::from_secs(20),
        );
        assert!(
            text.contains("fastvm-test-guest ready"),
            "no ready line; console said:\n{text}"
        );
        text
    }

    /// Sends a control request.
    pub fn control(&self, request: Request) -> Result<Status, String> {
        let mut client =
            ControlClient::connect(&self.dir.join("control.sock")).map_err(|e| e.to_string())?;
        client.call(&request).map_err(|e| e.to_string())
    }

    /// Connects to the agent, waiting for it to listen.
    pub fn agent(&self) -> AgentConn {
        AgentConn::connect_when_ready(
            &self.dir.join("vsock.sock"),
            Instant::now() + Duration::from_secs(20),
        )
        .expect("agent connection")
    }

    /// Runs a built-in command with a generous timeout.
    pub fn exec(&self, argv: &[&str]) -> ExecResult {
        self.exec_timeout(argv, Duration::from_secs(20))
    }

    /// Runs a built-in command with `timeout`.
    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> ExecResult {
        let conn = self.agent();
        let (result, _) = conn
            .exec(&ExecRequest::new(argv.iter().copied()), timeout)
            .expect("exec");
        result
    }

    /// Waits for the monitor to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (status, err);
            }
            assert!(
                Instant::now() < deadline,
                "monitor did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: sends a signal to our own child process by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `fastvmd ARGS` to completion.
pub fn run_fastvmd(args: &[&str]) -> (ExitStatus, String, Duration) {
    let start = Instant::now();
    let out = Command::new(fastvmd_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run fastvmd");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

/// Writes `text` to a console stream.
pub fn type_into(stream: &mut UnixStream, text: &str) {
    stream.write_all(text.as_bytes()).expect("console write");
}
