//! The nested Linux scenario, run inside L1 by the `nested-scenario`
//! binary: `fastvmd serve` with the Linux image, driven through its HTTP
//! API, socket and WebSockets, every step checked and reported
//! ([`crate::report`]). The first failing step ends the run, with the tails
//! of every VM's console and monitor log as details.

mod daemon;
mod egress;
mod jail;
mod steps;
mod streams;
mod vm;
mod watch;

use std::path::Path;
use std::time::Instant;

use crate::report::{DETAIL, FAIL, PASS, STEP};
pub use daemon::Daemon;
pub use watch::Watch;

/// `fastvmd` inside L1.
pub const FASTVMD: &str = fastvmd::nested::L1_FASTVMD;
/// The daemon's data directory inside L1.
pub const DATA_DIR: &str = "/var/lib/fastvm";

/// Runs the steps in order until one fails; reports each. True when all
/// passed.
pub fn run() -> bool {
    let mut runner = Runner { failed: None };
    steps::run_all(&mut runner);
    match &runner.failed {
        None => println!("{PASS}"),
        Some(name) => println!("{FAIL}{name}"),
    }
    runner.failed.is_none()
}

/// Runs and reports steps; after a failure it runs none.
pub struct Runner {
    failed: Option<String>,
}

impl Runner {
    /// Runs step `name` unless one failed before; true when it passed.
    pub fn step(&mut self, name: &str, f: impl FnOnce() -> Result<(), String>) -> bool {
        if self.failed.is_some() {
            return false;
        }
        let started = Instant::now();
        match f() {
            Ok(()) => {
                println!("{STEP}{name} ok {}", started.elapsed().as_millis());
                true
            }
            Err(why) => {
                println!("{STEP}{name} FAIL {}", why.replace('\n', " / "));
                details(Path::new(DATA_DIR));
                self.failed = Some(name.to_string());
                false
            }
        }
    }
}

/// The console and monitor log tails of every VM under `data_dir`.
fn details(data_dir: &Path) {
    let Ok(vms) = std::fs::read_dir(data_dir.join("vms")) else {
        return;
    };
    for vm in vms.flatten() {
        let dir = vm.path();
        let id = vm.file_name().to_string_lossy().into_owned();
        println!("{DETAIL}== VM {id}: console (last lines)");
        for line in tail(&fastvmd::vmm::console::history(&dir), 40) {
            println!("{DETAIL}{line}");
        }
        println!("{DETAIL}== VM {id}: monitor.log (last lines)");
        let log = std::fs::read(dir.join(fastvmd::supervisor::MONITOR_LOG)).unwrap_or_default();
        for line in tail(&String::from_utf8_lossy(&log), 40) {
            println!("{DETAIL}{line}");
        }
    }
}

fn tail(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}
