//! Dashboard speed with 200 VMs, printed as a table:
//!
//! 1. event -> frame: applying one live VM update to a 200-VM state and
//!    drawing the frame (ratatui diff + crossterm escape codes to a sink),
//!    against a 16.7 ms frame;
//! 2. idle CPU: the real `fastvm-tui` binary in a tmux pane, connected to a
//!    socket server that speaks the daemon's protocol and lists 200 VMs, then
//!    stays silent; utime+stime from /proc over 30 s.
//!
//! The server is a stand-in, so this needs no KVM and no daemon; the
//! dashboard cannot tell. `bench/real-daemon-200-vms.sh` measures the idle
//! CPU against a real daemon running 200 test-guest VMs.
//!
//! Run: `cargo build --release -p fastvm-tui --bins --examples &&
//! target/x86_64-unknown-linux-gnu/release/examples/tui_bench` (needs tmux for the idle row).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fastvm_proto::api::{
    FirewallPolicy, OrgQuotaUsage, OrgQuotaValues, Uuid, VmInstance, VmStatus,
};
use fastvm_proto::socket::{
    EventKind, EventOp, SocketEvent, SocketRequest, SocketResponse, encode_frame,
};
use fastvm_tui::app::App;
use fastvm_tui::client::{ClientEvent, Purpose};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};
use serde_json::json;

const VMS: usize = 200;

fn vms() -> Vec<VmInstance> {
    (0..VMS)
        .map(|i| VmInstance {
            id: Uuid::from_u128(0x1000 + i as u128),
            name: format!("vm-{i:03}"),
            org_id: "default".into(),
            machine_name: "c1m2".into(),
            source_name: Some("test".into()),
            firewall: FirewallPolicy::default(),
            cpu: 1,
            memory_mib: 2048,
            disk_gib: 10,
            public_ipv6: Some(format!("2001:db8::{i:x}")),
            status: VmStatus::Running,
            created_at: "2026-11-28T10:00:00Z".into(),
            deleted_at: None,
        })
        .collect()
}

fn quotas() -> OrgQuotaUsage {
    let v = OrgQuotaValues {
        vcpu: 400,
        memory_mib: 819_200,
        disk_gib: 4000,
        snapshot_count: 50,
    };
    OrgQuotaUsage {
        org_id: "default".into(),
        limits: v,
        usage: v,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Applies one update and draws, `n` times; sorted durations.
fn event_to_frame(n: usize) -> Vec<Duration> {
    let mut app = App::new("bench");
    app.on_client(ClientEvent::Connected);
    app.on_client(ClientEvent::Answer {
        purpose: Purpose::ListVms,
        response: SocketResponse::new(2, 200, &vms()).unwrap(),
    });
    let backend = CrosstermBackend::new(std::io::sink());
    let options = TerminalOptions {
        viewport: Viewport::Fixed(Rect::new(0, 0, 200, 60)),
    };
    let mut terminal = Terminal::with_options(backend, options).unwrap();
    app.size = (200, 60);
    let mut vm = vms()[0].clone();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        vm.status = if i % 2 == 0 {
            VmStatus::Stopped
        } else {
            VmStatus::Running
        };
        let event = SocketEvent {
            id: 1,
            event: EventKind::Vm,
            op: EventOp::Updated,
            data: serde_json::to_value(&vm).unwrap(),
        };
        let start = Instant::now();
        app.on_client(ClientEvent::Event(event));
        terminal
            .draw(|f| fastvm_tui::ui::draw(f, &mut app))
            .unwrap();
        times.push(start.elapsed());
    }
    times.sort();
    times
}

/// Serves the dashboard's opening requests with 200 VMs, then stays silent.
fn serve(listener: UnixListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || answer(stream));
    }
}

fn answer(stream: UnixStream) {
    let mut writer = stream.try_clone().unwrap();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let Ok(req) = serde_json::from_str::<SocketRequest>(&line) else {
            return;
        };
        let body = match req.op.as_str() {
            "watch" => json!({}),
            "listVMs" => json!(vms()),
            "listSnapshots" => json!([]),
            "getOrgQuotas" => json!(quotas()),
            _ => json!({"error": "not served by the benchmark"}),
        };
        let resp = SocketResponse {
            id: req.id,
            status: if body.get("error").is_some() {
                404
            } else {
                200
            },
            body,
        };
        if writer.write_all(&encode_frame(&resp).unwrap()).is_err() {
            return;
        }
    }
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn tmux(server: &str, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(["-L", server])
        .args(args)
        .output()
        .expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Idle CPU of the real binary over `secs`, as a percentage of one core.
fn idle_cpu(tui: &Path, secs: u64) -> Result<f64, String> {
    if Command::new("tmux").arg("-V").output().is_err() {
        return Err("tmux not installed".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let socket = dir.path().join("bench.sock");
    let listener = UnixListener::bind(&socket).map_err(|e| e.to_string())?;
    std::thread::spawn(move || serve(listener));
    let server = format!("fastvm-tui-bench-{}", std::process::id());
    let sock = socket.to_str().unwrap();
    tmux(
        &server,
        &[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "60",
            "--",
        ],
    );
    tmux(
        &server,
        &[
            "respawn-pane",
            "-k",
            "-t",
            "0",
            tui.to_str().unwrap(),
            "--socket",
            sock,
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tmux(&server, &["capture-pane", "-p"]).contains(&format!("VMs ({VMS})")) {
        if Instant::now() > deadline {
            tmux(&server, &["kill-server"]);
            return Err("the dashboard did not show the VMs".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid: u32 = tmux(&server, &["display-message", "-p", "#{pane_pid}"])
        .trim()
        .parse()
        .map_err(|_| "no pane pid".to_string())?;
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_ticks(pid).ok_or("no /proc stat")?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let after = cpu_ticks(pid).ok_or("no /proc stat")?;
    let wall = start.elapsed().as_secs_f64();
    tmux(&server, &["kill-server"]);
    // SAFETY: sysconf has no preconditions; it reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((after - before) as f64 / hz / wall * 100.0)
}

fn main() {
    let times = event_to_frame(2000);
    let tui: PathBuf = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("fastvm-tui");
    let idle = if tui.is_file() {
        idle_cpu(&tui, 30)
    } else {
        Err(format!("{} not built", tui.display()))
    };
    println!("| measurement ({VMS} VMs) | result | target |");
    println!("|---|---|---|");
    println!(
        "| live event → frame drawn (apply + draw 200x60, median of {}) | {:.0} µs (p99 {:.0} µs) | one frame (16.7 ms) |",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6
    );
    match idle {
        Ok(pct) => println!(
            "| idle CPU of fastvm-tui (utime+stime over 30 s) | {pct:.2}% of a core | < 2% |"
        ),
        Err(e) => println!("| idle CPU of fastvm-tui | not measured: {e} | < 2% |"),
    }
}
