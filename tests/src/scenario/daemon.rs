//! `fastvmd serve` inside L1: started, killed with SIGKILL and restarted on
//! one data directory, called over HTTP, its local socket and WebSockets.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The daemon's HTTP address inside L1.
pub const LISTEN: &str = "127.0.0.1:8080";

/// A running daemon and how to reach it.
pub struct Daemon {
    exe: PathBuf,
    pub data_dir: PathBuf,
    child: Option<Child>,
    pub key: String,
    http: ureq::Agent,
}

impl Daemon {
    /// Starts `exe serve` on `data_dir`; the first start prints the key.
    pub fn start(exe: &Path, data_dir: &Path) -> Result<Daemon, String> {
        let mut d = Daemon {
            exe: exe.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            child: None,
            key: String::new(),
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(300)))
                .build()
                .into(),
        };
        d.spawn()?;
        if d.key.is_empty() {
            return Err("the first start printed no API key".into());
        }
        Ok(d)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new(&self.exe)
            .args(["serve", "--listen", LISTEN, "--data-dir"])
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn fastvmd serve: {e}"))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        loop {
            let Some(Ok(line)) = lines.next() else {
                return Err(format!(
                    "fastvmd serve exited before listening: {:?}",
                    child.wait()
                ));
            };
            if let Some(k) = line.strip_prefix("api-key: ") {
                self.key = k.to_string();
            }
            if line.starts_with("listening: ") {
                break;
            }
        }
        // Keep draining stdout so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a crash would; the monitors live on.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same data directory.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill9();
        self.spawn()
    }

    /// An HTTP call with the API key; (status, JSON body or the text).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{LISTEN}{path}"))
            .header("X-API-Key", &self.key)
            .header("Content-Type", "application/json")
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let mut resp = self
            .http
            .run(req)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| format!("{method} {path}: body: {e}"))?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// An HTTP call that must answer `want`; its body.
    pub fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        want: u16,
    ) -> Result<Value, String> {
        let (status, got) = self.call(method, path, body)?;
        if status != want {
            return Err(format!("{method} {path}: {status} (wanted {want}): {got}"));
        }
        Ok(got)
    }

    /// The local socket's path.
    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn socket_path(&self) -> PathBuf {
        self.data_dir.join(fastvmd::socket::SOCKET_FILE)
    }

    /// One request on the local socket; the response frame.
    pub fn socket_call(&self, op: &str, body: Value) -> Result<Value, String> {
        let mut stream =
            UnixStream::connect(self.socket_path()).map_err(|e| format!("socket: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(|e| e.to_string())?;
        let req = json!({"id": 1, "op": op, "body": body});
        writeln!(stream, "{req}").map_err(|e| format!("socket: {e}"))?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .map_err(|e| format!("socket {op}: {e}"))?;
        serde_json::from_str(&line).map_err(|e| format!("socket {op}: {e}: {line}"))
    }

    /// The directory of VM `id`.
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("vms").join(id)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
