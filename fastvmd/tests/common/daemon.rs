//! A real `fastvmd serve` on a temporary data dir, and a small HTTP client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running daemon; killed (with its VMs) on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub base: String,
    pub key: String,
    pub data_dir: PathBuf,
    pub tmp: Option<tempfile::TempDir>,
    agent: ureq::Agent,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn spawn(
    launcher: &[&str],
    data_dir: &Path,
    extra: &[&str],
    stderr: Stdio,
) -> (Child, String, Option<String>) {
    let fastvmd = env!("CARGO_BIN_EXE_fastvmd");
    let mut cmd = match launcher.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(fastvmd);
            c
        }
        None => Command::new(fastvmd),
    };
    // Its own image cache (`<data dir>/images`), whatever the test's
    // environment points at: the tests never share or change one.
    cmd.env_remove(fastvmd::image::CACHE_ENV);
    // No NAT table on the host unless a test asks for IPv4.
    let ipv4: &[&str] = if extra.contains(&"--ipv4-range") {
        &[]
    } else {
        &["--ipv4-range", "off"]
    };
    let mut child = cmd
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--guest",
            "test",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(ipv4)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn fastvmd serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = None;
    loop {
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait();
            panic!("daemon exited before listening: {status:?}");
        };
        if let Some(k) = line.strip_prefix("api-key: ") {
            key = Some(k.to_string());
        }
        if let Some(url) = line.strip_prefix("listening: ") {
            return (child, url.to_string(), key);
        }
    }
}

impl Daemon {
    /// Where [`Daemon::start_via`] with `log_stderr` writes the daemon's stderr.
    pub fn stderr_path(&self) -> PathBuf {
        self.tmp
            .as_ref()
            .expect("the daemon's directory")
            .path()
            .join("serve.err")
    }

    /// Starts a daemon on a new data dir.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// Starts a daemon on a new data dir with extra `serve` arguments.
    pub fn start_with(extra: &[&str]) -> Daemon {
        Daemon::start_via(&[], extra, false)
    }

    /// Starts a daemon through `launcher` (a command that runs the rest of
    /// its arguments, e.g. `setpriv ...`); with `log_stderr` its stderr goes
    /// to [`Daemon::stderr_path`] instead of the test's.
    pub fn start_via(launcher: &[&str], extra: &[&str], log_stderr: bool) -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let stderr = if log_stderr {
            Stdio::from(std::fs::File::create(tmp.path().join("serve.err")).unwrap())
        } else {
            Stdio::inherit()
        };
        let (child, base, key) = spawn(launcher, &data_dir, extra, stderr);
        Daemon {
            child: Some(child),
            base,
            key: key.expect("first start prints an API key"),
            data_dir,
            tmp: Some(tmp),
            agent: agent(),
        }
    }

    /// Kills the daemon with SIGKILL (its VMs keep running).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same data dir.
    pub fn restart(&mut self) {
        self.kill9();
        let (child, base, key) = spawn(&[], &self.data_dir, &[], Stdio::inherit());
        assert!(key.is_none(), "no new key on a restart");
        self.child = Some(child);
        self.base = base;
    }

    /// Sends a request with this daemon's API key (or `key` when given).
    pub fn call_with(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let key = key.unwrap_or(&self.key);
        let mut headers = vec![("X-API-Key", key)];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let result = self.send(method, path, &headers, bytes);
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// Like [`Daemon::call`], but a failed connection is `None` (for
    /// requests racing a daemon that is being killed).
    pub fn try_call(&self, method: &str, path: &str, body: Option<&Value>) -> Option<u16> {
        let headers = [
            ("X-API-Key", self.key.as_str()),
            ("Content-Type", "application/json"),
        ];
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.send(method, path, &headers, bytes)
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// The WebSocket URL of a new one-time console token of VM `id`.
    pub fn console_url(&self, id: &str) -> String {
        let (status, token) = self.call("POST", &format!("/v1/vms/{id}/console-token"), None);
        assert_eq!(status, 200, "{token}");
        let path = token["websocketPath"].as_str().expect("websocketPath");
        format!("{}{path}", self.base.replace("http://", "ws://"))
    }

    /// Sends a request with the daemon's API key.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call_with(None, method, path, body)
    }

    /// A raw request: any headers, any body.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, String, Value) {
        let mut response = self
            .send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let ctype = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            ctype,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.agent.run(req.body(body).expect("request"))
    }

    /// Pids of the monitors in the data dir.
    pub fn monitor_pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.data_dir.join("vms")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| fastvmd::supervisor::monitor_pid(&e.path()))
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        for pid in self.monitor_pids() {
            // SAFETY: kills a monitor process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}
