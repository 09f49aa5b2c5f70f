//! The Linux guest through `fastvmd serve` with its default guest: boots
//! the built image and runs exec and the console where the host has
//! hardware KVM; everywhere, a daemon without a bootable image refuses
//! createVM with 503 and says why at start.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fastvmd::image::{self, Image};
use fastvmd::vmm::host::{self, HostKind};
use serde_json::{Value, json};

/// A `fastvmd serve` with the default guest and a given image cache.
struct Serve {
    child: Child,
    base: String,
    key: String,
    stderr: mpsc::Receiver<String>,
    data_dir: PathBuf,
    _tmp: tempfile::TempDir,
    http: ureq::Agent,
}

impl Serve {
    fn start(image_cache: &Path) -> Serve {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fastvmd"))
            // No NAT table on the host: it would outlive this killed daemon.
            .args(["serve", "--listen", "127.0.0.1:0", "--ipv4-range", "off"])
            .arg("--data-dir")
            .arg(&data_dir)
            .env(image::CACHE_ENV, image_cache)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fastvmd serve");
        let (tx, stderr) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                eprintln!("serve: {line}");
                let _ = tx.send(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut key = None;
        let base = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("daemon exited before listening: {:?}", child.wait());
            };
            if let Some(k) = line.strip_prefix("api-key: ") {
                key = Some(k.to_string());
            }
            if let Some(url) = line.strip_prefix("listening: ") {
                break url.to_string();
            }
        };
        Serve {
            child,
            base,
            key: key.expect("an API key on first start"),
            stderr,
            data_dir,
            _tmp: tmp,
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(120)))
                .build()
                .into(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("X-API-Key", &self.key)
            .header("Content-Type", "application/json")
            .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
            .unwrap();
        let mut resp = self
            .http
            .run(req)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The first stderr line containing `needle`, within a few seconds.
    fn stderr_line(&self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(entries) = std::fs::read_dir(self.data_dir.join("vms")) {
            for pid in entries
                .flatten()
                .filter_map(|e| fastvmd::supervisor::monitor_pid(&e.path()))
            {
                // SAFETY: kills a monitor process this test's daemon started.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn without_a_bootable_image_create_vm_is_503_with_the_reason() {
    let empty_cache = tempfile::tempdir().unwrap();
    let d = Serve::start(empty_cache.path());
    let said = d
        .stderr_line("VMs cannot be created")
        .expect("the daemon says at start why VMs cannot be created");
    let (status, body) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    assert_eq!(status, 503, "{body}");
    let reason = body["error"].as_str().unwrap_or_default().to_string();
    match host::detect() {
        HostKind::Hardware => assert!(reason.contains("fastvmd image build"), "{reason}"),
        HostKind::Pvm => assert!(reason.contains("cannot boot the Linux guest"), "{reason}"),
        HostKind::NoKvm(_) => assert!(reason.contains("KVM"), "{reason}"),
    }
    // The same reason, its host paths left to the daemon's own log.
    assert!(
        fastvmd::service::error::redact_paths(&said).contains(&reason),
        "start message {said:?} vs 503 {reason:?}"
    );
    assert!(
        !reason.contains("/tmp/"),
        "a host path in the answer: {reason}"
    );
    let (status, _) = d.call("GET", "/readyz", None);
    assert_eq!(status, 503);
}

/// Prints the skip line on stderr directly, so the harness does not capture it.
fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// The built image, or why this test cannot run here (printed as SKIP).
fn bootable_image(test: &str) -> Option<(PathBuf, Image)> {
    let kind = host::detect();
    if !kind.can_boot_linux() {
        let why = match kind {
            HostKind::Pvm => "host is PVM, cannot boot a Linux guest".to_string(),
            other => other.describe(),
        };
        skip(test, &why);
        return None;
    }
    let cache = image::cache_dir(&fastvmd::serve::default_data_dir());
    match Image::current(&cache) {
        Ok(img) => Some((cache, img)),
        Err(e) => {
            skip(test, &e.to_string());
            None
        }
    }
}

fn exec(d: &Serve, id: &str, body: Value) -> Value {
    let (status, out) = d.call("POST", &format!("/v1/vms/{id}/exec"), Some(&body));
    assert_eq!(status, 200, "{out}");
    out
}

#[test]
fn linux_guest_boots_through_serve_runs_exec_and_console() {
    let test = "linux_guest_boots_through_serve_runs_exec_and_console";
    let Some((cache, _image)) = bootable_image(test) else {
        return;
    };
    let d = Serve::start(&cache);
    let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    assert_eq!(status, 201, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, got) = d.call("GET", &format!("/v1/vms/{id}"), None);
        if got["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "never running: {got}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = exec(&d, &id, json!({"command": ["uname", "-s"]}));
    assert_eq!(out["stdout"], "Linux\n", "{out}");
    let out = exec(
        &d,
        &id,
        json!({"command": ["sh", "-c", "cat /proc/1/comm; hostname; echo err >&2; exit 7"]}),
    );
    assert_eq!(out["exitCode"], 7, "{out}");
    assert_eq!(out["stdout"], "init\nfastvm\n", "{out}");
    assert_eq!(out["stderr"], "err\n", "{out}");
    let out = exec(
        &d,
        &id,
        json!({"command": ["sh", "-c", "mount | grep -c -E ' on /(proc|sys|dev|tmp|run) '"]}),
    );
    assert_eq!(
        out["stdout"], "5\n",
        "PID 1 mounted proc, sys, dev, tmp, run: {out}"
    );
    let out = exec(&d, &id, json!({"command": ["date", "+%s"]}));
    let guest_now: i64 = out["stdout"].as_str().unwrap().trim().parse().unwrap();
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest_now - host_now).abs() < 5,
        "guest clock {guest_now}, host {host_now}"
    );
    let out = exec(
        &d,
        &id,
        json!({"command": ["sleep", "30"], "timeoutSec": 1}),
    );
    assert_eq!(out["timedOut"], true, "{out}");
    let out = exec(&d, &id, json!({"command": ["no-such-program"]}));
    assert_eq!(out["exitCode"], 127, "{out}");

    let (status, token) = d.call("POST", &format!("/v1/vms/{id}/console-token"), None);
    assert_eq!(status, 200, "{token}");
    let url = format!(
        "{}{}",
        d.base.replace("http://", "ws://"),
        token["websocketPath"].as_str().unwrap()
    );
    let (mut ws, _) = tungstenite::connect(&url).expect("websocket");
    ws.send(tungstenite::Message::Text("echo con$((40+2))sole\n".into()))
        .unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains("con42sole") && Instant::now() < deadline {
        if let Ok(tungstenite::Message::Binary(b)) = ws.read() {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
    }
    assert!(
        seen.contains("con42sole"),
        "the console shell answered: {seen}"
    );

    let (status, _) = d.call("DELETE", &format!("/v1/vms/{id}"), None);
    assert!(status == 200 || status == 202 || status == 204, "{status}");
}
