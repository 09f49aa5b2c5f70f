//! Exclusive ownership of a VM directory: a `flock`ed `monitor.lock` holding
//! the monitor's pid. A second monitor on the same directory is refused while
//! the first lives; the lock goes away with the process, even on SIGKILL.
//! The file itself stays: while the process lives on after the machine is
//! gone (writing its exit record), its pid there still names it, so the
//! daemon does not judge the monitor ended before its record is in place. A
//! stale file names a dead pid, which [`monitor_pid`] rejects.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::VmmError;
use crate::MONITOR_PROGRAM;
use crate::jail::vm_files::read_capped;

pub use fastvm_proto::monitor::LOCK_FILE;

/// Held for the life of the machine; the lock is released when dropped.
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and takes its lock.
    pub fn acquire(dir: &Path) -> Result<DirLock, VmmError> {
        let shown = dir.display().to_string();
        fs::create_dir_all(dir).map_err(|e| VmmError::Dir {
            path: shown.clone(),
            reason: format!("cannot create: {e}"),
        })?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| VmmError::Dir {
                path: shown.clone(),
                reason: format!("not writable: {e}"),
            })?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(VmmError::Dir {
                path: shown,
                reason: format!(
                    "already used by a live monitor (pid {})",
                    pid.trim()
                        .parse::<u32>()
                        .map_or("unknown".into(), |p| p.to_string())
                ),
            });
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            write!(file, "{}", std::process::id())?;
            file.flush()
        };
        write_pid(&mut file).map_err(|e| VmmError::Dir {
            path: shown,
            reason: format!("not writable: {e}"),
        })?;
        Ok(DirLock { _file: file })
    }
}

/// The pid of the live monitor holding `dir`, if any: the pid in its lock
/// file, when that process is a monitor (`fastvm-vmm`, or `fastvmd vmm`)
/// started on `dir`.
pub fn monitor_pid(dir: &Path) -> Option<u32> {
    let pid: u32 = String::from_utf8(read_capped(&dir.join(LOCK_FILE), 64).ok()?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|b| *b == 0);
    let program = args.next()?;
    let lean = program.rsplit(|b| *b == b'/').next() == Some(MONITOR_PROGRAM.as_bytes());
    let wanted = dir.as_os_str().as_encoded_bytes();
    let mut is_vmm = lean;
    let mut has_dir = false;
    for arg in args {
        is_vmm |= arg == b"vmm";
        has_dir |= arg == wanted;
    }
    // A zombie still has its /proc entry but no cmdline.
    (is_vmm && has_dir).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_owner_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vm");
        let first = DirLock::acquire(&dir).unwrap();
        let err = DirLock::acquire(&dir).err().unwrap().to_string();
        assert!(
            err.contains(&format!("live monitor (pid {})", std::process::id())),
            "{err}"
        );
        drop(first);
        DirLock::acquire(&dir).unwrap();
    }
}
