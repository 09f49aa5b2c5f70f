//! `fastvmd bench`: measures the monitor with the test guest and prints a
//! Markdown table: boot ([`boot`]), snapshot/restore ([`snapshot`]), the
//! daemon's API ([`api`]) and networking ([`net`]).

mod api;
mod boot;
mod linux;
mod nested;
mod net;
mod snapshot;
mod streams;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::socket_wait::SocketWatch;
use clap::Args;

/// Arguments of `fastvmd bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Boots (and restores) per start-time measurement.
    #[arg(long, default_value_t = 20)]
    pub boots: usize,
    /// Exec round trips measured.
    #[arg(long, default_value_t = 1000)]
    pub execs: usize,
    /// Guest memory in MiB for the boot and restore measurements.
    #[arg(long, default_value_t = 128)]
    pub memory_mib: u64,
    /// Guest memory in MiB of the VM whose snapshot time is measured.
    #[arg(long, default_value_t = 2048)]
    pub snapshot_memory_mib: u64,
    /// MiB the guest touches before that snapshot.
    #[arg(long, default_value_t = 64)]
    pub touch_mib: u64,
    /// Clones run at once for the memory-per-clone measurement.
    #[arg(long, default_value_t = 5)]
    pub clones: usize,
    /// Guest kernel (default: the test guest built with fastvmd).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Measure the Linux guest image instead (`fastvmd image build`): boot
    /// to agent ready, exec round trip, snapshot, restore to exec. Without
    /// hardware KVM it runs inside nested L1 (QEMU with emulated SVM,
    /// `qemu-system-x86` 10 or newer) and marks its rows `nested (TCG)`.
    #[arg(long, conflicts_with_all = ["kernel", "only"])]
    pub linux: bool,
    /// Measure only this part.
    #[arg(long, value_enum)]
    pub only: Option<BenchPart>,
    /// Run the monitors unconfined (`vmm --no-jail`), to see what the jail
    /// costs against a normal run.
    #[arg(long)]
    pub no_jail: bool,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchPart {
    Boot,
    Snapshot,
    Api,
    Net,
    /// Streaming exec, files and forwards.
    Streams,
}

/// Monitors run with `--no-jail` (bench `--no-jail`).
pub(crate) fn unconfined() -> bool {
    UNCONFINED.load(Ordering::Relaxed)
}

/// Set by `bench --no-jail`.
static UNCONFINED: AtomicBool = AtomicBool::new(false);

/// Where a benchmark monitor's stderr goes, beside its VM directory.
const MONITOR_LOG: &str = "monitor.log";

/// A monitor process in a temporary directory, killed on drop.
pub(crate) struct Monitor {
    pub child: Child,
    pub dir: PathBuf,
    /// Made before the monitor starts, so waiting for its sockets costs
    /// no CPU that the monitor could use.
    watch: SocketWatch,
    _tmp: tempfile::TempDir,
}

/// `vmm` arguments for a one-vCPU guest booting `kernel` with `memory_mib`.
pub(crate) fn one_vcpu(kernel: &Path, memory_mib: u64) -> Vec<String> {
    vec![
        "--kernel".into(),
        kernel.display().to_string(),
        "--vcpus".into(),
        "1".into(),
        "--memory-mib".into(),
        memory_mib.to_string(),
    ]
}

impl Monitor {
    /// Spawns `fastvmd vmm --dir <tmp>/vm ARGS`; `setup` prepares files in
    /// the temporary directory first and returns extra arguments.
    pub fn spawn(
        setup: impl FnOnce(&Path) -> Result<Vec<String>, String>,
    ) -> Result<(Monitor, Instant), String> {
        Monitor::spawn_as(setup, !UNCONFINED.load(Ordering::Relaxed))
    }

    /// [`Monitor::spawn`], jailed or not whatever `bench --no-jail` says.
    pub fn spawn_as(
        setup: impl FnOnce(&Path) -> Result<Vec<String>, String>,
        jailed: bool,
    ) -> Result<(Monitor, Instant), String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let dir = tmp.path().join("vm");
        let args = setup(tmp.path())?;
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let watch = SocketWatch::new(&dir).map_err(|e| format!("watch {}: {e}", dir.display()))?;
        let exe = crate::supervisor::monitor_program()?;
        let log = std::fs::File::create(tmp.path().join(MONITOR_LOG)).map_err(|e| e.to_string())?;
        // Jailed as the daemon jails: the shared network namespace handed
        // over as stdout.
        let netns = crate::supervisor::netns::shared()
            .and_then(|ns| ns.try_clone_to_owned().map_err(|e| e.to_string()))?;
        let started = Instant::now();
        let child = Command::new(exe)
            .arg("--dir")
            .arg(&dir)
            .args(&args)
            .args(["--netns-fd", "1"])
            .args((!jailed).then_some("--no-jail"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(netns))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn monitor: {e}"))?;
        Ok((
            Monitor {
                child,
                dir,
                watch,
                _tmp: tmp,
            },
            started,
        ))
    }

    /// Boots `kernel` with a 16 MiB disk and vsock.
    pub fn boot(kernel: &Path, memory_mib: u64) -> Result<(Monitor, Instant), String> {
        let kernel = kernel.to_path_buf();
        Monitor::spawn(move |tmp| {
            let disk = tmp.join("disk");
            std::fs::File::create(&disk)
                .and_then(|f| f.set_len(16 << 20))
                .map_err(|e| e.to_string())?;
            let mut args = one_vcpu(&kernel, memory_mib);
            args.extend([
                "--disk".into(),
                disk.display().to_string(),
                "--vsock-cid".into(),
                "3".into(),
            ]);
            Ok(args)
        })
    }

    /// Connects to a socket of the VM as soon as it exists.
    pub fn connect(&mut self, name: &str, deadline: Instant) -> Result<UnixStream, String> {
        let child = &mut self.child;
        self.watch
            .connect(name, deadline, || match child.try_wait() {
                Ok(Some(status)) => Some(format!("monitor exited early: {status}")),
                _ => None,
            })
    }

    /// `err` with the last lines the monitor wrote to its stderr.
    pub fn explain(&self, err: impl std::fmt::Display) -> String {
        let log = std::fs::read_to_string(self.dir.with_file_name(MONITOR_LOG)).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        let console = crate::vmm::console::history(&self.dir);
        let console: Vec<&str> = console.lines().collect();
        let console = console[console.len().saturating_sub(10)..].join(" | ");
        format!("{err} (monitor: {tail}; console: {console})")
    }

    /// A line of /proc/PID/FILE such as `VmHWM:` or `Pss:`, in KiB.
    pub fn proc_kib(&self, file: &str, key: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/{file}", self.child.id())).ok()?;
        let line = text.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// KiB of guest memory the guest has touched: the resident pages of the
    /// monitor's anonymous mappings exactly `memory_mib` MiB long (guest
    /// RAM below the 32-bit gap is one such mapping).
    pub fn guest_rss_kib(&self, memory_mib: u64) -> Option<u64> {
        let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", self.child.id())).ok()?;
        Some(guest_rss_in_smaps(&smaps, memory_mib << 20))
    }
}

/// Sum of `Rss:` over the anonymous mappings of `smaps` that are `len`
/// bytes long.
fn guest_rss_in_smaps(smaps: &str, len: u64) -> u64 {
    let mut total = 0;
    let mut in_guest = false;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        {
            // address perms offset dev inode [path]
            in_guest = end - start == len && words.nth(4).is_none();
        } else if in_guest && first == "Rss:" {
            total += words
                .next()
                .and_then(|k| k.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

pub(crate) fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Runs the benchmark and prints the table.
pub fn run(args: BenchArgs) -> Result<(), String> {
    UNCONFINED.store(args.no_jail, Ordering::Relaxed);
    let kernel = args
        .kernel
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::TEST_GUEST_PATH));
    let host = crate::vmm::host::detect();
    eprintln!("host: {}", host.describe());
    let wanted = |part: BenchPart| args.only.is_none_or(|only| only == part);
    let mut rows = Vec::new();
    if args.linux {
        rows.extend(linux::measure(&args)?);
    } else {
        if !host.can_run_test_guest() {
            return Err(host.describe());
        }
        if wanted(BenchPart::Boot) {
            rows.extend(boot::measure(&args, &kernel)?);
        }
        if wanted(BenchPart::Snapshot) {
            rows.extend(snapshot::measure(&args, &kernel)?);
        }
        if wanted(BenchPart::Api) {
            rows.extend(api::measure(&args)?);
        }
        if wanted(BenchPart::Net) {
            rows.extend(net::measure(&args, &kernel)?);
        }
        if wanted(BenchPart::Streams) {
            rows.extend(streams::measure()?);
        }
    }
    println!("| measurement | result | target |");
    println!("|---|---|---|");
    for (what, result, target) in rows {
        println!("| {what} | {result} | {target} |");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::guest_rss_in_smaps;

    #[test]
    fn guest_rss_counts_only_anonymous_mappings_of_the_guest_size() {
        let smaps = "\
7f0000000000-7f0008000000 rw-p 00000000 00:00 0 \n\
Size:             131072 kB\n\
Rss:                 488 kB\n\
7f0008000000-7f0010000000 rw-p 00000000 08:01 42   /var/lib/fastvm/snap/memory\n\
Rss:                 900 kB\n\
7f0010000000-7f0010200000 rw-p 00000000 00:00 0 \n\
Rss:                  12 kB\n";
        assert_eq!(guest_rss_in_smaps(smaps, 128 << 20), 488);
        assert_eq!(guest_rss_in_smaps(smaps, 64 << 20), 0);
    }
}
