//! Helpers on one VM of the scenario: waiting for a status, exec, the
//! console, its monitor process and what L1 sees of its network.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Daemon;

/// Waits until VM `id` is `running` (or anything but `provisioning`).
pub fn wait_running(d: &Daemon, id: &str, within: Duration) -> Result<Value, String> {
    let deadline = Instant::now() + within;
    loop {
        let vm = d.expect("GET", &format!("/v1/vms/{id}"), None, 200)?;
        match vm["status"].as_str() {
            Some("running") => return Ok(vm),
            Some("provisioning") if Instant::now() < deadline => {}
            _ => return Err(format!("VM {id} is not running: {vm}")),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// execVM; the response body (200 required).
pub fn exec(d: &Daemon, id: &str, body: Value) -> Result<Value, String> {
    d.expect("POST", &format!("/v1/vms/{id}/exec"), Some(&body), 200)
}

/// `sh -c script` in VM `id`; its stdout, requiring exit 0.
pub fn sh(d: &Daemon, id: &str, script: &str) -> Result<String, String> {
    let out = exec(
        d,
        id,
        json!({"command": ["sh", "-c", script], "timeoutSec": 60}),
    )?;
    if out["exitCode"] != 0 {
        return Err(format!("`{script}` in {id}: {out}"));
    }
    Ok(out["stdout"].as_str().unwrap_or_default().to_string())
}

/// The `--vsock-cid` the VM's monitor runs with.
pub fn monitor_cid(dir: &Path) -> Result<u32, String> {
    let pid = fastvmd::supervisor::monitor_pid(dir).ok_or("no monitor pid")?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| e.to_string())?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.iter()
        .position(|a| a == "--vsock-cid")
        .and_then(|i| args.get(i + 1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("monitor {pid} runs without --vsock-cid: {args:?}"))
}

/// Whether one ping6 from L1 to `addr` is answered within `secs`.
pub fn ping6(addr: &str, secs: u32) -> bool {
    std::process::Command::new("ping6")
        .args(["-c", "1", "-W", &secs.to_string(), addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pings until answered, up to `within` (the guest's address may still be
/// in duplicate address detection).
pub fn ping6_until(addr: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ping6(addr, 1) {
            return true;
        }
    }
    false
}

/// What a TCP connection to `[addr]:port` from L1 reads, or why none.
pub fn tcp_read(addr: &str, port: u16, timeout: Duration) -> Result<String, String> {
    let ip: std::net::Ipv6Addr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let sock = std::net::SocketAddr::from((ip, port));
    let stream = std::net::TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("connect {sock}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .take(64 << 10)
        .read_to_string(&mut text)
        .map_err(|e| format!("read {sock}: {e}"))?;
    Ok(text)
}

/// Every pid in L1's `/proc`.
fn pids() -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_string_lossy().parse::<u32>().ok())
        .collect()
}

/// Monitor processes (`fastvm-vmm`) running in L1.
pub fn monitor_processes() -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe == std::path::Path::new(fastvmd::nested::L1_MONITOR))
        })
        .collect()
}

/// Tap devices of the daemon in L1.
pub fn taps() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("fvm"))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes holding `/dev/net/tun` open, as "pid state cmdline", for a
/// failure report.
pub fn tun_holders() -> Vec<String> {
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.ends_with("tun")))
            })
        })
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            format!(
                "{pid} [{}] {cmdline}",
                stat.chars().take(40).collect::<String>()
            )
        })
        .collect()
}
