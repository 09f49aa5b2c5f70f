//! API measurements on a live `fastvmd serve`: createVM → running, execVM
//! over HTTP, and `GET /v1/vms` with 200 VMs under `wrk`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::store::{NewVm, QuotaValues, Store, VmStatus};

use super::boot::Row;
use super::{BenchArgs, median, ms, p99};

pub(super) struct Daemon {
    child: Child,
    url: String,
    key: String,
    data: tempfile::TempDir,
    agent: ureq::Agent,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(entries) = std::fs::read_dir(self.data.path().join("home/vms")) {
            for entry in entries.flatten() {
                if let Some(pid) = crate::supervisor::monitor_pid(&entry.path()) {
                    // SAFETY: kills a monitor this benchmark started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
    }
}

impl Daemon {
    pub(super) fn start() -> Result<Daemon, String> {
        let data = tempfile::tempdir().map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--guest",
                "test",
                "--ipv4-range",
                "off",
                "--data-dir",
            ])
            .arg(data.path().join("home"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn daemon: {e}"))?;
        let stdout = child.stdout.take().ok_or("no daemon stdout")?;
        let (mut url, mut key) = (String::new(), String::new());
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if let Some(k) = line.strip_prefix("api-key: ") {
                key = k.into();
            }
            if let Some(u) = line.strip_prefix("listening: ") {
                url = u.into();
                break;
            }
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let daemon = Daemon {
            child,
            url,
            key,
            data,
            agent,
        };
        if daemon.url.is_empty() || daemon.key.is_empty() {
            return Err("the daemon did not start".into());
        }
        Ok(daemon)
    }

    /// The daemon's local socket.
    pub(super) fn socket(&self) -> std::path::PathBuf {
        self.data
            .path()
            .join("home")
            .join(crate::socket::SOCKET_FILE)
    }

    fn store(&self) -> Result<Store, String> {
        Store::open(self.data.path().join("home/fastvm.db")).map_err(|e| e.to_string())
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("X-API-Key", &self.key);
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(body.unwrap_or("").as_bytes().to_vec())
            .map_err(|e| e.to_string())?;
        let mut resp = self.agent.run(req).map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok((status, text))
    }

    pub(super) fn create_vm(&self) -> Result<String, String> {
        let (status, body) = self.request("POST", "/v1/vms", Some(r#"{"machineType":"c1m2"}"#))?;
        let vm: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        if status != 201 || vm["status"] != "running" {
            return Err(format!("createVM answered {status}: {body}"));
        }
        vm["id"].as_str().map(str::to_string).ok_or("no id".into())
    }
}

/// Runs `wrk` for `GET path`; (requests/s, p99 latency text), or `None`
/// when `wrk` is not installed (the row then says so instead of the whole
/// table being lost).
fn wrk(url: &str, key: &str) -> Result<Option<(String, String)>, String> {
    let out = match Command::new("wrk")
        .args(["-t2", "-c8", "-d5s", "--latency", "-H"])
        .arg(format!("X-API-Key: {key}"))
        .arg(url)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("wrk: {e}")),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("unexpected wrk output: {text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "?".into());
    if text.contains("Non-2xx") {
        return Err(format!("wrk saw errors: {text}"));
    }
    Ok(Some((rps, p99)))
}

/// The API rows of the table.
pub fn measure(args: &BenchArgs) -> Result<Vec<Row>, String> {
    let d = Daemon::start()?;
    let store = d.store()?;
    let org = store
        .default_org()
        .map_err(|e| e.to_string())?
        .ok_or("no default org")?;
    store
        .set_quota_limits(
            &org.id,
            QuotaValues {
                vcpu: 100_000,
                memory_mib: 1 << 40,
                disk_gib: 1 << 40,
                snapshot_count: 1000,
            },
        )
        .map_err(|e| e.to_string())?;

    eprintln!("createVM → running: {}", args.boots);
    let mut creates = Vec::new();
    for _ in 0..args.boots.max(1) {
        let t = Instant::now();
        let id = d.create_vm()?;
        creates.push(t.elapsed());
        d.request("DELETE", &format!("/v1/vms/{id}"), None)?;
    }

    eprintln!("execVM over HTTP: {}", args.execs);
    let id = d.create_vm()?;
    let body = r#"{"command":["echo","bench"]}"#;
    let mut execs = Vec::new();
    for _ in 0..args.execs.max(1) {
        let t = Instant::now();
        let (status, out) = d.request("POST", &format!("/v1/vms/{id}/exec"), Some(body))?;
        execs.push(t.elapsed());
        if status != 200 {
            return Err(format!("execVM answered {status}: {out}"));
        }
    }
    d.request("DELETE", &format!("/v1/vms/{id}"), None)?;

    eprintln!("GET /v1/vms with 200 VMs (wrk, 5 s)");
    for i in 0..200 {
        store
            .create_vm_within_quota(NewVm {
                org_id: org.id.clone(),
                name: format!("listed-{i}"),
                machine_name: "c1m2".into(),
                source_name: None,
                source_snapshot_id: None,
                vcpus: 1,
                memory_mib: 2048,
                disk_gib: 10,
                status: VmStatus::Stopped,
                run_json: "{}".into(),
                firewall_json: r#"{"mode":"restricted","ingress":[]}"#.into(),
                public_ipv6: None,
            })
            .map_err(|e| e.to_string())?;
    }
    let (status, list) = d.request("GET", "/v1/vms", None)?;
    let count = serde_json::from_str::<serde_json::Value>(&list)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len));
    if status != 200 || count != Some(200) {
        return Err(format!("listVMs answered {status} with {count:?} VMs"));
    }
    let listed = match wrk(&format!("{}/v1/vms", d.url), &d.key)? {
        Some((rps, latency)) => format!("{rps} requests/s, p99 {latency}"),
        None => "not measured: `wrk` is not installed (apt-get install wrk)".into(),
    };
    Ok(vec![
        (
            format!("createVM → running over HTTP (median of {})", creates.len()),
            format!("{} (p99 {})", ms(median(creates.clone())), ms(p99(creates))),
            "-".into(),
        ),
        (
            format!("execVM over HTTP (median of {})", execs.len()),
            format!(
                "{:.0} µs (p99 {:.0} µs)",
                median(execs.clone()).as_secs_f64() * 1e6,
                p99(execs).as_secs_f64() * 1e6
            ),
            "-".into(),
        ),
        (
            "GET /v1/vms with 200 VMs (wrk, 2 threads, 8 connections, 5 s)".into(),
            listed,
            "-".into(),
        ),
    ])
}
