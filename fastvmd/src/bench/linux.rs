//! `fastvmd bench --linux`: the Linux guest image — boot to agent ready
//! (start of the monitor to the agent's first `Pong`), exec round trip,
//! snapshot, restore to an answered exec — on hosts that can boot it; on
//! others, the same inside nested L1 ([`super::nested`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::agent::AgentConn;
use crate::image::{self, Image};

use super::boot::{Row, exec_round_trips};
use super::snapshot::{restore_to_exec, snapshot};
use super::{BenchArgs, Monitor, median, ms, p99};

/// Boots the image once; returns the time to the first `Pong` and the
/// connection.
fn boot_to_ready(image: &Image, memory_mib: u64) -> Result<(Duration, Monitor, AgentConn), String> {
    let (vmlinux, rootfs) = (image.vmlinux.clone(), image.rootfs.clone());
    let (mut m, started) = Monitor::spawn(move |tmp| {
        let disk = tmp.join("disk");
        crate::vmm::snapshot::disk::clone_disk(&rootfs, &disk).map_err(|e| e.to_string())?;
        let mut args = super::one_vcpu(&vmlinux, memory_mib);
        args.extend([
            "--cmdline".into(),
            image::LINUX_CMDLINE.into(),
            "--disk".into(),
            disk.display().to_string(),
            "--vsock-cid".into(),
            "3".into(),
        ]);
        Ok(args)
    })?;
    let deadline = started + Duration::from_secs(30);
    drop(
        m.connect("vsock.sock", deadline)
            .map_err(|e| m.explain(e))?,
    );
    let mut conn = AgentConn::connect_when_ready(&m.dir.join("vsock.sock"), deadline)
        .map_err(|e| m.explain(e))?;
    conn.ping(Duration::from_secs(5))
        .map_err(|e| m.explain(e))?;
    Ok((started.elapsed(), m, conn))
}

/// Measures the Linux image found in the image cache.
pub fn measure(args: &BenchArgs) -> Result<Vec<Row>, String> {
    let host = crate::vmm::host::detect();
    if !host.can_boot_linux() {
        eprintln!(
            "this host cannot boot the Linux guest ({}): measuring inside nested L1",
            host.describe()
        );
        return super::nested::measure(args);
    }
    let cache: PathBuf = image::cache_dir(&crate::serve::default_data_dir());
    let image = Image::current(&cache).map_err(|e| e.to_string())?;
    let mut ready = Vec::with_capacity(args.boots);
    let mut last = None;
    for _ in 0..args.boots.max(1) {
        let (t, m, conn) = boot_to_ready(&image, args.memory_mib)?;
        ready.push(t);
        last = Some((m, conn));
    }
    let (monitor, conn) = last.ok_or("no boot")?;
    let execs = exec_round_trips(conn, args.execs.min(200))?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let snap = work.path().join("snap");
    let info = snapshot(&monitor, snap.clone())?;
    drop(monitor);
    let restores = (0..args.boots.clamp(1, 10))
        .map(|_| restore_to_exec(&snap))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![
        (
            format!("Linux boot to agent ready, median of {}", ready.len()),
            ms(median(ready.clone())),
            "≤ 150 ms".into(),
        ),
        (
            "Linux boot to agent ready, p99".into(),
            ms(p99(ready)),
            "".into(),
        ),
        (
            "Linux exec round trip (echo), median".into(),
            ms(median(execs)),
            "".into(),
        ),
        (
            format!("Linux snapshot ({} MiB guest)", args.memory_mib),
            ms(Duration::from_micros(info.duration_us)),
            "".into(),
        ),
        (
            format!(
                "Linux restore to exec answered, median of {}",
                restores.len()
            ),
            ms(median(restores)),
            "≤ 10 ms".into(),
        ),
    ])
}
