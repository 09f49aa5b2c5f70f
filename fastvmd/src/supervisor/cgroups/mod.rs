//! A cgroup per VM, made by the daemon (the jailed monitor has no right
//! to): memory (the guest's plus the monitor's own overhead), pids and CPU
//! (the VM's vCPUs, each at most a core). cgroup v1 (one hierarchy per
//! controller) and v2 (one unified hierarchy) are both supported; VMs go
//! under the daemon's own cgroup, in `fastvm/<data dir hash>/<vm id>`. The monitor joins
//! its cgroups first thing (`fastvmd vmm --cgroup DIR`), before it
//! allocates anything. Where cgroups cannot be made the daemon says so
//! once at start and VMs run without these limits.

pub mod detect;
mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What a VM may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    pub vcpus: u8,
    pub memory_mib: u64,
}

/// Memory a monitor needs beyond its guest's: its own (a few MiB), the
/// page cache of what it reads and writes (snapshots), with room to spare.
pub const MONITOR_OVERHEAD_MIB: u64 = 64;
/// Threads beyond one per vCPU: backends, console and control clients.
pub const EXTRA_PIDS: u64 = 64;
/// The CPU quota's period.
const CPU_PERIOD_US: u64 = 100_000;

impl ResourceLimits {
    pub fn memory_bytes(&self) -> u64 {
        (self.memory_mib + MONITOR_OVERHEAD_MIB) << 20
    }

    pub fn pids(&self) -> u64 {
        u64::from(self.vcpus) + EXTRA_PIDS
    }

    /// CPU time per period: one core per vCPU.
    pub fn cpu_quota_us(&self) -> u64 {
        u64::from(self.vcpus.max(1)) * CPU_PERIOD_US
    }
}

/// Where VM cgroups go on this host.
#[derive(Debug, Clone)]
pub enum Cgroups {
    /// cgroup v1: the `fastvm` directory in each controller's hierarchy.
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
    },
    /// cgroup v2: the `fastvm` directory, with the three controllers on.
    V2 { parent: PathBuf },
    /// No limits; why.
    Off(String),
}

impl Cgroups {
    /// Finds (and prepares) where the cgroups of the VMs of `data_dir` go.
    pub fn detect(data_dir: &Path) -> Cgroups {
        let scope = format!(
            "{:08x}",
            crc32fast::hash(data_dir.as_os_str().as_encoded_bytes())
        );
        detect::detect(&scope)
    }

    /// Why VMs run without limits, when they do.
    pub fn unavailable(&self) -> Option<&str> {
        match self {
            Cgroups::Off(why) => Some(why),
            _ => None,
        }
    }

    /// Makes VM `id`'s cgroups with `limits`; returns the directories its
    /// monitor joins (none when cgroups are off).
    pub fn create(&self, id: &str, limits: ResourceLimits) -> io::Result<Vec<PathBuf>> {
        match self {
            Cgroups::Off(_) => Ok(Vec::new()),
            Cgroups::V1 { memory, pids, cpu } => {
                let mem = make(memory, id, false)?;
                write(&mem, "memory.limit_in_bytes", limits.memory_bytes())?;
                let pid = make(pids, id, false)?;
                write(&pid, "pids.max", limits.pids())?;
                let cpus = make(cpu, id, false)?;
                write(&cpus, "cpu.cfs_period_us", CPU_PERIOD_US)?;
                write(&cpus, "cpu.cfs_quota_us", limits.cpu_quota_us())?;
                Ok(vec![mem, pid, cpus])
            }
            Cgroups::V2 { parent } => {
                let dir = make(parent, id, true)?;
                write(&dir, "memory.max", limits.memory_bytes())?;
                write(&dir, "pids.max", limits.pids())?;
                fs::write(
                    dir.join("cpu.max"),
                    format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us()),
                )?;
                Ok(vec![dir])
            }
        }
    }

    /// Removes VM `id`'s cgroups (its monitor has ended); missing is fine.
    /// False when one is still there (a monitor still exiting is in it).
    pub fn remove(&self, id: &str) -> bool {
        let mut gone = true;
        for parent in self.parents() {
            match fs::remove_dir(parent.join(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => gone = false,
            }
        }
        gone
    }

    /// The ids of the VMs that have cgroups here (each parent's children).
    pub fn vm_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .parents()
            .into_iter()
            .filter_map(|parent| fs::read_dir(parent).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn parents(&self) -> Vec<&Path> {
        match self {
            Cgroups::Off(_) => Vec::new(),
            Cgroups::V1 { memory, pids, cpu } => vec![memory, pids, cpu],
            Cgroups::V2 { parent } => vec![parent],
        }
    }

    /// Removes the cgroups of this data directory's VMs that are gone
    /// (empty ones; a cgroup with a live monitor in it cannot be removed),
    /// and the parents other data directories left with no VM in them (a
    /// daemon whose parent went makes it again on its next VM).
    pub fn remove_stale(&self) {
        for parent in self.parents() {
            remove_empty_children(parent);
            if let Some(all) = parent.parent() {
                remove_empty_children(all);
            }
        }
    }
}

/// Removes every directory in `dir` that has no cgroup (or process) in it.
fn remove_empty_children(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// `parent/id`, made if missing; `parent` too, if another daemon removed
/// it while it was empty (`v2`: with the controllers on for its children).
fn make(parent: &Path, id: &str, v2: bool) -> io::Result<PathBuf> {
    let dir = parent.join(id);
    let made = match fs::create_dir(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(parent)?;
            if v2 {
                let enable = detect::CONTROLLERS.map(|c| format!("+{c}")).join(" ");
                fs::write(parent.join("cgroup.subtree_control"), enable)?;
            }
            fs::create_dir(&dir)
        }
        other => other,
    };
    match made {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
}

fn write(dir: &Path, file: &str, value: u64) -> io::Result<()> {
    let path = dir.join(file);
    fs::write(&path, value.to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
