//! Snapshot and restore measurements: snapshot time and size of a large VM,
//! restore → guest running, restore → exec answered, memory per clone.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::agent::AgentConn;
use crate::supervisor::control_client::ControlClient;
use crate::vmm::control::SnapshotInfo;
use fastvm_proto::agent::ExecRequest;

use super::boot::{Row, exec_round_trips};
use super::{BenchArgs, Monitor, median, mib, ms, p99};

fn agent(m: &mut Monitor, started: Instant) -> Result<AgentConn, String> {
    let deadline = started + Duration::from_secs(20);
    drop(
        m.connect("vsock.sock", deadline)
            .map_err(|e| m.explain(e))?,
    );
    AgentConn::connect_when_ready(&m.dir.join("vsock.sock"), deadline).map_err(|e| m.explain(e))
}

fn exec(conn: AgentConn, argv: &[&str]) -> Result<AgentConn, String> {
    let (result, next) = conn
        .exec(
            &ExecRequest::new(argv.iter().copied()),
            Duration::from_secs(30),
        )
        .map_err(|e| e.to_string())?;
    if result.exit_code != 0 {
        return Err(format!("{argv:?} failed: {result:?}"));
    }
    next.ok_or_else(|| format!("{argv:?} timed out"))
}

pub(super) fn snapshot(m: &Monitor, dir: PathBuf) -> Result<SnapshotInfo, String> {
    ControlClient::connect(&m.dir.join("control.sock"))
        .and_then(|mut c| c.snapshot_into(&m.dir, &dir, true))
        .map_err(|e| e.to_string())
}

/// Bytes the files of `dir` take on disk.
fn allocated(dir: &Path) -> Result<u64, String> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let meta = entry
            .map_err(|e| e.to_string())?
            .metadata()
            .map_err(|e| e.to_string())?;
        total += meta.blocks() * 512;
    }
    Ok(total)
}

fn restore(snap: &Path) -> Result<(Monitor, Instant), String> {
    restore_as(snap, !super::unconfined())
}

fn restore_as(snap: &Path, jailed: bool) -> Result<(Monitor, Instant), String> {
    let snap = snap.display().to_string();
    Monitor::spawn_as(move |_| Ok(vec!["--restore".into(), snap]), jailed)
}

/// Restore → the guest echoes a console byte; also what the jail's steps
/// cost inside the monitor.
fn restore_to_running(snap: &Path, jailed: bool) -> Result<(Duration, Option<Duration>), String> {
    let (mut m, started) = restore_as(snap, jailed)?;
    let mut console = m.connect("console.sock", started + Duration::from_secs(20))?;
    console.write_all(b"#").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    loop {
        let n = console.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("console closed".into());
        }
        if buf[..n].contains(&b'#') {
            let running = started.elapsed();
            let jail = ControlClient::connect(&m.dir.join("control.sock"))
                .and_then(|mut c| c.call(&crate::vmm::control::Request::Status))
                .map_err(|e| e.to_string())?
                .jail_us
                .map(Duration::from_micros);
            return Ok((running, jail));
        }
    }
}

/// Restore → an exec is answered.
pub(super) fn restore_to_exec(snap: &Path) -> Result<Duration, String> {
    let (mut m, started) = restore(snap)?;
    exec(agent(&mut m, started)?, &["echo", "up"])?;
    Ok(started.elapsed())
}

/// The snapshot and restore rows of the table.
pub fn measure(args: &BenchArgs, kernel: &Path) -> Result<Vec<Row>, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();

    eprintln!(
        "snapshot of a {} MiB VM with {} MiB touched",
        args.snapshot_memory_mib, args.touch_mib
    );
    let (mut big, started) = Monitor::boot(kernel, args.snapshot_memory_mib)?;
    let conn = exec(
        agent(&mut big, started)?,
        &["mem-fill", "bench", &args.touch_mib.to_string()],
    )?;
    drop(conn);
    let touched_kib = big.proc_kib("status", "RssAnon:").unwrap_or(0);
    let mut infos = Vec::new();
    for i in 0..5 {
        infos.push(snapshot(&big, work.path().join(format!("big{i}")))?);
    }
    let big_snap = work.path().join("big0");
    let size = allocated(&big_snap)?;
    let mut total: Vec<Duration> = infos
        .iter()
        .map(|i| Duration::from_micros(i.duration_us))
        .collect();
    let paused: Vec<Duration> = infos
        .iter()
        .map(|i| Duration::from_micros(i.paused_us))
        .collect();
    total.sort_unstable();
    rows.push((
        format!(
            "snapshot, {} MiB VM with {} MiB touched (median of {})",
            args.snapshot_memory_mib,
            args.touch_mib,
            infos.len()
        ),
        format!("{} (VM paused {})", ms(median(total)), ms(median(paused))),
        "≤ 150 ms".into(),
    ));
    rows.push((
        "snapshot directory on disk".into(),
        format!(
            "{} (memory written {}, disk {}; monitor anonymous RSS {})",
            mib(size),
            mib(infos[0].memory_bytes),
            infos[0].disk_copy,
            mib(touched_kib << 10)
        ),
        "touched memory + disk data + ≤ 10%".into(),
    ));
    drop(big);

    eprintln!("restores: {}", args.boots);
    let (mut small, started) = Monitor::boot(kernel, args.memory_mib)?;
    drop(exec(agent(&mut small, started)?, &["mem-set", "k", "v"])?);
    let small_snap = work.path().join("small");
    snapshot(&small, small_snap.clone())?;
    drop(small);
    let mut answered = Vec::new();
    let mut running = Vec::new();
    let mut steps = Vec::new();
    let mut unconfined = Vec::new();
    let jailed = !super::unconfined();
    for _ in 0..args.boots.max(1) {
        let (to_running, jail_steps) = restore_to_running(&small_snap, jailed)?;
        running.push(to_running);
        steps.extend(jail_steps);
        if jailed {
            // Interleaved, so both see the same machine.
            unconfined.push(restore_to_running(&small_snap, false)?.0);
        }
        answered.push(restore_to_exec(&small_snap)?);
    }
    rows.push(jail_row(&running, &unconfined, steps));
    rows.push((
        format!(
            "restore start → guest running (median of {})",
            running.len()
        ),
        format!("{} (p99 {})", ms(median(running.clone())), ms(p99(running))),
        "≤ 5 ms".into(),
    ));
    rows.push((
        format!(
            "restore start → exec answered (median of {})",
            answered.len()
        ),
        format!(
            "{} (p99 {})",
            ms(median(answered.clone())),
            ms(p99(answered))
        ),
        "≤ 10 ms".into(),
    ));

    eprintln!(
        "{} clones of the {} MiB snapshot",
        args.clones, args.snapshot_memory_mib
    );
    let mut clones = Vec::new();
    for _ in 0..args.clones.max(1) {
        let (mut clone, started) = restore(&big_snap)?;
        let conn = agent(&mut clone, started)?;
        exec_round_trips(conn, 10)?;
        clones.push(clone);
    }
    let pss: Vec<u64> = clones
        .iter()
        .filter_map(|c| c.proc_kib("smaps_rollup", "Pss:"))
        .collect();
    let dirty: Vec<u64> = clones
        .iter()
        .filter_map(|c| c.proc_kib("smaps_rollup", "Private_Dirty:"))
        .collect();
    if pss.len() != clones.len() || dirty.len() != clones.len() {
        return Err("cannot read clone memory from /proc".into());
    }
    let avg = |v: &[u64]| (v.iter().sum::<u64>() / v.len() as u64) << 10;
    rows.push((
        format!("memory per running clone ({} clones, PSS)", clones.len()),
        format!(
            "{} PSS, of which {} private dirty (guest touched {} in the snapshot)",
            mib(avg(&pss)),
            mib(avg(&dirty)),
            mib(touched_kib << 10)
        ),
        "only the pages the clone changes".into(),
    ));
    Ok(rows)
}

/// The jail's row: what it adds to restore → guest running (jailed minus
/// unconfined medians), and the work of its steps inside the monitor
/// (namespaces, root, ids, every thread's seccomp filter).
fn jail_row(jailed: &[Duration], unconfined: &[Duration], steps: Vec<Duration>) -> Row {
    if unconfined.is_empty() || steps.is_empty() {
        return (
            "jail's cost on a restore".into(),
            "not measured: the monitors ran unconfined (`--no-jail`)".into(),
            "≤ 1 ms".into(),
        );
    }
    let (with, without) = (median(jailed.to_vec()), median(unconfined.to_vec()));
    (
        format!(
            "jail's cost on a restore: guest running, jailed − unconfined (medians of {})",
            jailed.len()
        ),
        format!(
            "{} ({} − {}; its steps: {} of work, median)",
            ms(with.saturating_sub(without)),
            ms(with),
            ms(without),
            ms(median(steps))
        ),
        "≤ 1 ms".into(),
    )
}
