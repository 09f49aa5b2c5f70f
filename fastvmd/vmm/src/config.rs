//! A monitor's configuration and its checks: every bad input gets one clear
//! message before any VM state is created.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use fastvm_proto::api::FirewallPolicy;

use super::boot::{self, mptable::MAX_VCPUS};
use crate::net::addr::Mac;

/// Smallest guest memory accepted (boot data, kernel and page tables need room).
pub const MIN_MEMORY_MIB: u64 = 16;
/// Default kernel command line; device entries are appended.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd";

/// How to build one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u8,
    pub memory_mib: u64,
    pub disk: Option<PathBuf>,
    pub vsock_cid: Option<u64>,
    /// A virtio-net NIC, if any.
    pub nic: Option<NicConfig>,
}

/// A NIC: its tap (none: the link is down), MAC and ingress policy.
#[derive(Debug, Clone)]
pub struct NicConfig {
    pub tap: Option<String>,
    pub mac: Mac,
    pub firewall: FirewallPolicy,
}

/// How to start a VM from a snapshot.
#[derive(Debug, Clone)]
pub struct RestoreConfig {
    /// The snapshot directory.
    pub snapshot: PathBuf,
    /// The clone's own VM directory.
    pub dir: PathBuf,
    /// Grow the clone's disk to this many GiB (never shrinks).
    pub disk_gib: Option<u64>,
    /// The clone's vsock CID; the snapshot's when absent.
    pub vsock_cid: Option<u64>,
    /// The clone NIC's tap (a snapshot with a NIC and no tap given: link down).
    pub tap: Option<String>,
    /// The clone NIC's MAC; the snapshot's when absent.
    pub mac: Option<Mac>,
    /// The clone's ingress policy; the snapshot's when absent.
    pub firewall: Option<FirewallPolicy>,
}

impl RestoreConfig {
    /// Checks what can be checked before reading the snapshot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_cid(self.vsock_cid)?;
        if self.disk_gib == Some(0) {
            return Err(ConfigError::DiskGib);
        }
        Ok(())
    }
}

fn check_cid(cid: Option<u64>) -> Result<(), ConfigError> {
    match cid {
        Some(cid) if !(3..u64::from(u32::MAX)).contains(&cid) => Err(ConfigError::VsockCid(cid)),
        _ => Ok(()),
    }
}

/// A configuration the monitor refuses.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// vCPU count outside 1..=32.
    #[error("--vcpus must be between 1 and {MAX_VCPUS}, got {0}")]
    Vcpus(u64),
    /// Memory below the minimum.
    #[error("--memory-mib must be at least {MIN_MEMORY_MIB}, got {0}")]
    MemoryTooSmall(u64),
    /// Memory larger than the host has.
    #[error("--memory-mib {asked} is more than the host's {host} MiB of RAM")]
    MemoryTooLarge { asked: u64, host: u64 },
    /// The kernel is missing, unreadable or of an unknown format.
    #[error("{0}")]
    Kernel(String),
    /// The initrd is missing or unreadable.
    #[error("--initrd {path}: {reason}")]
    Initrd { path: String, reason: String },
    /// The disk is missing, not a regular file, or not writable.
    #[error("--disk {path}: {reason}")]
    Disk { path: String, reason: String },
    /// A vsock CID that is reserved (0, 1, 2) or too large.
    #[error("--vsock-cid must be between 3 and {max}, got {0}", max = u32::MAX - 1)]
    VsockCid(u64),
    /// `--disk-gib 0`.
    #[error("--disk-gib must be at least 1")]
    DiskGib,
    /// The command line has a NUL byte or is too long.
    #[error("--cmdline: {0}")]
    Cmdline(String),
}

/// The host's RAM in MiB, from /proc/meminfo.
pub fn host_memory_mib() -> Option<u64> {
    let info = fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn check_kernel(path: &Path) -> Result<(), ConfigError> {
    let shown = path.display();
    let mut file =
        File::open(path).map_err(|e| ConfigError::Kernel(format!("--kernel {shown}: {e}")))?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(ConfigError::Kernel(format!(
            "--kernel {shown}: not a regular file"
        )));
    }
    match boot::kernel_kind(&mut file) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ConfigError::Kernel(format!(
            "--kernel {shown}: neither an ELF vmlinux nor a bzImage"
        ))),
        Err(e) => Err(ConfigError::Kernel(format!("--kernel {shown}: {e}"))),
    }
}

impl VmConfig {
    /// Checks everything that can be checked before touching KVM.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(u64::from(self.vcpus)));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::MemoryTooSmall(self.memory_mib));
        }
        if let Some(host) = host_memory_mib()
            && self.memory_mib > host
        {
            return Err(ConfigError::MemoryTooLarge {
                asked: self.memory_mib,
                host,
            });
        }
        check_cid(self.vsock_cid)?;
        if self.cmdline.contains('\0') {
            return Err(ConfigError::Cmdline("contains a NUL byte".into()));
        }
        check_kernel(&self.kernel)?;
        if let Some(initrd) = &self.initrd {
            File::open(initrd).map_err(|e| ConfigError::Initrd {
                path: initrd.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        if let Some(disk) = &self.disk {
            let err = |reason: String| ConfigError::Disk {
                path: disk.display().to_string(),
                reason,
            };
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(disk)
                .map_err(|e| err(e.to_string()))?;
            let meta = file.metadata().map_err(|e| err(e.to_string()))?;
            if !meta.is_file() {
                return Err(err("not a regular file".into()));
            }
        }
        Ok(())
    }

    /// Memory size in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn config(dir: &Path) -> VmConfig {
        let kernel = dir.join("vmlinux");
        let mut f = File::create(&kernel).unwrap();
        f.write_all(b"\x7fELF\x02\x01\x01").unwrap();
        VmConfig {
            dir: dir.join("vm"),
            kernel,
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
            vcpus: 1,
            memory_mib: 128,
            disk: None,
            vsock_cid: Some(3),
            nic: None,
        }
    }

    type Change = Box<dyn Fn(&mut VmConfig)>;

    #[test]
    fn each_bad_input_has_its_message() {
        let tmp = tempfile::tempdir().unwrap();
        let good = config(tmp.path());
        good.validate().unwrap();
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|c| c.vcpus = 0),
                "--vcpus must be between 1 and 32, got 0",
            ),
            (Box::new(|c| c.vcpus = 33), "got 33"),
            (
                Box::new(|c| c.memory_mib = 0),
                "--memory-mib must be at least",
            ),
            (Box::new(|c| c.memory_mib = 1 << 40), "more than the host"),
            (Box::new(|c| c.vsock_cid = Some(2)), "--vsock-cid"),
            (
                Box::new(|c| c.kernel = "/nonexistent/k".into()),
                "No such file",
            ),
            (
                Box::new(|c| c.kernel = "/etc/hostname".into()),
                "neither an ELF",
            ),
            (Box::new(|c| c.kernel = "/".into()), "--kernel /"),
            (
                Box::new(|c| c.disk = Some("/nonexistent/d".into())),
                "--disk /nonexistent/d",
            ),
            (
                Box::new(|c| c.initrd = Some("/nonexistent/i".into())),
                "--initrd",
            ),
        ];
        for (change, expected) in cases {
            let mut c = good.clone();
            change(&mut c);
            let msg = c.validate().unwrap_err().to_string();
            assert!(
                msg.contains(expected),
                "{msg:?} should contain {expected:?}"
            );
            assert!(!msg.contains('\n'));
        }
    }
}
