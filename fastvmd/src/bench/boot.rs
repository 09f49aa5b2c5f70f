//! Boot measurements: start → first serial line, start → agent ping, exec
//! round trip, monitor peak RSS and the monitor's own memory.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::agent::AgentConn;
use fastvm_proto::agent::ExecRequest;

use super::{BenchArgs, Monitor, median, ms, p99};

/// One table row: what, result, target.
pub type Row = (String, String, String);

fn first_serial_line(kernel: &Path, memory_mib: u64) -> Result<Duration, String> {
    let (mut m, started) = Monitor::boot(kernel, memory_mib)?;
    let mut console = m.connect("console.sock", started + Duration::from_secs(20))?;
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
    let (mut m, started) = Monitor::boot(kernel, memory_mib)?;
    let deadline = started + Duration::from_secs(20);
    drop(m.connect("vsock.sock", deadline)?);
    let mut conn = AgentConn::connect_when_ready(&m.dir.join("vsock.sock"), deadline)
        .map_err(|e| e.to_string())?;
    conn.ping(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(started.elapsed())
}

/// Runs `n` execs of `echo` on one connection; returns their times.
pub fn exec_round_trips(conn: AgentConn, n: usize) -> Result<Vec<Duration>, String> {
    let request = ExecRequest::new(["echo", "bench"]);
    let mut conn = conn;
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
    Ok(times)
}

/// The boot rows of the table.
pub fn measure(args: &BenchArgs, kernel: &Path) -> Result<Vec<Row>, String> {
    let boots = args.boots.max(1);
    let mut serial = Vec::new();
    let mut ping = Vec::new();
    for i in 0..boots {
        eprint!("\rboot {}/{boots}", i + 1);
        serial.push(first_serial_line(kernel, args.memory_mib)?);
        ping.push(agent_ping(kernel, args.memory_mib)?);
    }
    eprintln!("\rexec round trips: {}", args.execs);
    let (mut m, started) = Monitor::boot(kernel, args.memory_mib)?;
    let deadline = started + Duration::from_secs(20);
    drop(m.connect("vsock.sock", deadline)?);
    let conn = AgentConn::connect_when_ready(&m.dir.join("vsock.sock"), deadline)
        .map_err(|e| e.to_string())?;
    let execs = exec_round_trips(conn, args.execs.max(1))?;
    let rss_kib = m
        .proc_kib("status", "VmHWM:")
        .ok_or("cannot read monitor RSS")?;
    let guest_kib = m
        .guest_rss_kib(args.memory_mib)
        .ok_or("cannot read the monitor's mappings")?;
    Ok(vec![
        (
            format!("monitor start → first serial line (median of {boots})"),
            format!("{} (p99 {})", ms(median(serial.clone())), ms(p99(serial))),
            "≤ 10 ms".into(),
        ),
        (
            format!("monitor start → agent answers ping (median of {boots})"),
            format!("{} (p99 {})", ms(median(ping.clone())), ms(p99(ping))),
            "≤ 20 ms".into(),
        ),
        (
            format!("exec round trip over vsock (median of {})", execs.len()),
            format!(
                "{:.0} µs (p99 {:.0} µs)",
                median(execs.clone()).as_secs_f64() * 1e6,
                p99(execs).as_secs_f64() * 1e6
            ),
            "≤ 300 µs".into(),
        ),
        (
            format!("monitor peak RSS, {} MiB guest", args.memory_mib),
            format!("{:.1} MiB", rss_kib as f64 / 1024.0),
            "≤ 8 MiB".into(),
        ),
        (
            "monitor's own memory (peak RSS − guest pages touched)".into(),
            format!(
                "{:.1} MiB ({:.1} MiB guest)",
                rss_kib.saturating_sub(guest_kib) as f64 / 1024.0,
                guest_kib as f64 / 1024.0
            ),
            "≤ 4 MiB".into(),
        ),
    ])
}
