//! What the scenario checks of the monitors' jail inside L1: every thread
//! of every monitor confined, and no seccomp violation in L1's kernel log.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The confinement fields of every thread of the monitor holding `vm_dir`.
pub fn check_monitor(vm_dir: &Path) -> Result<(), String> {
    let lock = std::fs::read_to_string(vm_dir.join("monitor.lock"))
        .map_err(|e| format!("{}: {e}", vm_dir.display()))?;
    let pid = lock.trim();
    // It is the lean monitor program, as the daemon's process list sees it.
    let listed = super::vm::monitor_processes();
    if !listed.iter().any(|p| p.to_string() == pid) {
        return Err(format!(
            "monitor {pid} is not a running {} (monitors: {listed:?})",
            fastvmd::nested::L1_MONITOR
        ));
    }
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("monitor {pid}: {e}"))?;
    let mut threads = 0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        let name = field("Name:");
        let bad = [
            (field("Uid:").split(' ').any(|u| u == "0"), "uid 0"),
            (field("CapEff:") != "0000000000000000", "capabilities"),
            (field("CapBnd:") != "0000000000000000", "bounding set"),
            (field("NoNewPrivs:") != "1", "no no_new_privs"),
            (field("Seccomp:") != "2", "no seccomp filter"),
        ];
        if let Some((_, what)) = bad.iter().find(|(is_bad, _)| *is_bad) {
            return Err(format!("monitor {pid} thread {name}: {what}:\n{status}"));
        }
        threads += 1;
    }
    if threads < 3 {
        return Err(format!("monitor {pid}: only {threads} threads"));
    }
    check_cgroup(pid)
}

/// L1 mounts cgroup v2: the monitor is in its VM's group, which has memory
/// and pids limits.
fn check_cgroup(pid: &str) -> Result<(), String> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| format!("monitor {pid} cgroup: {e}"))?;
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| format!("monitor {pid} is in no v2 cgroup: {own}"))?;
    if !path.contains("/fastvm/") {
        return Err(format!("monitor {pid} is not in a VM cgroup: {path}"));
    }
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    for file in ["memory.max", "pids.max", "cpu.max"] {
        let value = std::fs::read_to_string(dir.join(file))
            .map_err(|e| format!("{}/{file}: {e}", dir.display()))?;
        if value.trim() == "max" || value.starts_with("max ") {
            return Err(format!("{}/{file} is unlimited", dir.display()));
        }
    }
    Ok(())
}

/// Seccomp records (audit type 1326) in L1's kernel log.
pub fn seccomp_records() -> Vec<String> {
    let Ok(mut kmsg) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return vec!["cannot read /dev/kmsg".into()];
    };
    let mut records = Vec::new();
    let mut buf = vec![0u8; 8192];
    // One record per read; EAGAIN at the end, EPIPE for one overwritten.
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let line = String::from_utf8_lossy(&buf[..n]);
                if line.contains("type=1326") {
                    records.push(line.trim().to_string());
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
    records
}
