//! `fastvmd bench`: measures the monitor with the test guest and prints a
//! Markdown table (start → first serial line, start → agent ping, exec round
//! trip, monitor peak RSS).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use fastvm_proto::agent::ExecRequest;
use fastvmd::agent::AgentConn;

/// Arguments of `fastvmd bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Boots per start-time measurement.
    #[arg(long, default_value_t = 20)]
    pub boots: usize,
    /// Exec round trips measured.
    #[arg(long, default_value_t = 1000)]
    pub execs: usize,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128)]
    pub memory_mib: u64,
    /// Guest kernel (default: the test guest built with fastvmd).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
}

struct Monitor {
    child: Child,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Monitor {
    fn start(kernel: &Path, memory_mib: u64) -> Result<(Monitor, Instant), String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = tmp.path().join("vm");
        let disk = tmp.path().join("disk");
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(16 << 20))
            .map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let started = Instant::now();
        let child = Command::new(exe)
            .arg("vmm")
            .arg("--dir")
            .arg(&dir)
            .arg("--kernel")
            .arg(kernel)
            .args(["--vcpus", "1", "--memory-mib", &memory_mib.to_string()])
            .arg("--disk")
            .arg(&disk)
            .args(["--vsock-cid", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn monitor: {e}"))?;
        Ok((
            Monitor {
                child,
                dir,
                _tmp: tmp,
            },
            started,
        ))
    }

    fn connect(&mut self, name: &str, deadline: Instant) -> Result<UnixStream, String> {
        loop {
            if let Ok(s) = UnixStream::connect(self.dir.join(name)) {
                return Ok(s);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("monitor exited early: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{name} did not appear"));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn first_serial_line(kernel: &Path, memory_mib: u64) -> Result<Duration, String> {
    let (mut m, started) = Monitor::start(kernel, memory_mib)?;
    let deadline = started + Duration::from_secs(20);
    let mut console = m.connect("console.sock", deadline)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = console.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("console closed".into());
        }
        if buf[..n].contains(&b'\n') {
            return Ok(started.elapsed());
        }
    }
}

fn agent_ping(kernel: &Path, memory_mib: u64) -> Result<Duration, String> {
    let (mut m, started) = Monitor::start(kernel, memory_mib)?;
    let deadline = started + Duration::from_secs(20);
    drop(m.connect("vsock.sock", deadline)?);
    let mut conn = AgentConn::connect_when_ready(&m.dir.join("vsock.sock"), deadline)
        .map_err(|e| e.to_string())?;
    conn.ping(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

fn exec_round_trips(
    kernel: &Path,
    memory_mib: u64,
    n: usize,
) -> Result<(Vec<Duration>, u64), String> {
    let (mut m, started) = Monitor::start(kernel, memory_mib)?;
    let deadline = started + Duration::from_secs(20);
    drop(m.connect("vsock.sock", deadline)?);
    let mut conn = AgentConn::connect_when_ready(&m.dir.join("vsock.sock"), deadline)
        .map_err(|e| e.to_string())?;
    let request = ExecRequest::new(["echo", "bench"]);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (result, next) = conn
            .exec(&request, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        if result.stdout != "bench\n" {
            return Err(format!("unexpected exec result {result:?}"));
        }
        conn = next.ok_or("exec timed out")?;
    }
    let rss = m.peak_rss_kib().ok_or("cannot read monitor RSS")?;
    Ok((times, rss))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Runs the benchmark and prints the table.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let kernel = args
        .kernel
        .unwrap_or_else(|| PathBuf::from(fastvmd::TEST_GUEST_PATH));
    let host = fastvmd::vmm::host::detect();
    if !host.can_run_test_guest() {
        return Err(host.describe());
    }
    eprintln!("host: {}", host.describe());
    let boots = args.boots.max(1);
    let mut serial = Vec::new();
    let mut ping = Vec::new();
    for i in 0..boots {
        eprint!("\rboot {}/{boots}", i + 1);
        serial.push(first_serial_line(&kernel, args.memory_mib)?);
        ping.push(agent_ping(&kernel, args.memory_mib)?);
    }
    eprintln!("\rexec round trips: {}", args.execs);
    let (execs, rss_kib) = exec_round_trips(&kernel, args.memory_mib, args.execs.max(1))?;
    println!("| measurement | result | target |");
    println!("|---|---|---|");
    println!(
        "| monitor start → first serial line (median of {boots}) | {} (p99 {}) | ≤ 10 ms |",
        ms(median(serial.clone())),
        ms(p99(serial))
    );
    println!(
        "| monitor start → agent answers ping (median of {boots}) | {} (p99 {}) | ≤ 20 ms |",
        ms(median(ping.clone())),
        ms(p99(ping))
    );
    println!(
        "| exec round trip over vsock (median of {}) | {:.0} µs (p99 {:.0} µs) | ≤ 300 µs |",
        execs.len(),
        median(execs.clone()).as_secs_f64() * 1e6,
        p99(execs).as_secs_f64() * 1e6
    );
    println!(
        "| monitor peak RSS, {} MiB guest | {:.1} MiB | ≤ 8 MiB |",
        args.memory_mib,
        rss_kib as f64 / 1024.0
    );
    Ok(())
}
