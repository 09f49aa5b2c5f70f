//! The monitor's exit record: `exit.json` in the VM directory, written by
//! the monitor as it ends and read by the daemon, which is often not the
//! monitor's parent (monitors outlive it) and so cannot see the exit status.
//!
//! The record holds the exit status ([`super::exit`]'s `EXIT_*` codes) and
//! one line saying why. It is written to a temporary file and renamed into
//! place, so a reader sees a whole record or none. No record means the
//! monitor did not end by itself (a signal killed it).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::exit::{EXIT_POWER_OFF, EXIT_STOPPED};

pub use fastvm_proto::monitor::EXIT_RECORD;
/// Name of the temporary file the record is written to before the rename.
const EXIT_RECORD_TMP: &str = "exit.json.tmp";

/// How a monitor ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The monitor's exit status (`EXIT_*`).
    pub code: i32,
    /// One line: what ended it (`guest powered off`, the error, ...).
    pub reason: String,
}

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ExitRecordError {
    /// The file could not be written, renamed or read.
    #[error("{EXIT_RECORD}: {0}")]
    Io(#[from] std::io::Error),
    /// The file is there but is not a record.
    #[error("{EXIT_RECORD} is garbled: {0}")]
    Garbled(#[from] serde_json::Error),
}

impl ExitRecord {
    /// True when the VM ended cleanly: stopped by the host or powered off
    /// by its guest. Any other status (error, reboot, crash) is not.
    pub fn is_clean(&self) -> bool {
        self.code == EXIT_STOPPED || self.code == EXIT_POWER_OFF
    }

    /// Writes the record into `dir` atomically (temporary file, fsync,
    /// rename).
    pub fn write(&self, dir: &Path) -> Result<(), ExitRecordError> {
        let tmp = dir.join(EXIT_RECORD_TMP);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(self)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(EXIT_RECORD))?;
        Ok(())
    }

    /// The record in `dir`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<ExitRecord>, ExitRecordError> {
        // Written by a jailed monitor: no link followed, bounded.
        match super::jail::vm_files::read_capped(&dir.join(EXIT_RECORD), 64 << 10) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the record from `dir` (a monitor about to start there);
    /// none there is fine.
    pub fn remove(dir: &Path) -> Result<(), ExitRecordError> {
        match std::fs::remove_file(dir.join(EXIT_RECORD)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::exit::{EXIT_CRASHED, EXIT_ERROR, EXIT_REBOOT};
    use super::*;

    fn record(code: i32) -> ExitRecord {
        ExitRecord {
            code,
            reason: "why".into(),
        }
    }

    #[test]
    fn a_written_record_reads_back_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let written = ExitRecord {
            code: EXIT_POWER_OFF,
            reason: "guest powered off".into(),
        };
        written.write(dir.path()).unwrap();
        assert_eq!(ExitRecord::read(dir.path()).unwrap(), Some(written));
        assert!(!dir.path().join(EXIT_RECORD_TMP).exists());
        // A second ending replaces the first.
        record(EXIT_CRASHED).write(dir.path()).unwrap();
        assert_eq!(
            ExitRecord::read(dir.path()).unwrap(),
            Some(record(EXIT_CRASHED))
        );
    }

    #[test]
    fn no_record_is_none_and_removing_it_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ExitRecord::read(dir.path()).unwrap(), None);
        ExitRecord::remove(dir.path()).unwrap();
        record(EXIT_STOPPED).write(dir.path()).unwrap();
        ExitRecord::remove(dir.path()).unwrap();
        assert_eq!(ExitRecord::read(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_garbled_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for garbage in [&b"{\"code\": 0"[..], b"", b"{\"reason\": \"x\"}", b"\xff"] {
            std::fs::write(dir.path().join(EXIT_RECORD), garbage).unwrap();
            let got = ExitRecord::read(dir.path());
            assert!(
                matches!(got, Err(ExitRecordError::Garbled(_))),
                "{garbage:?}: {got:?}"
            );
        }
    }

    #[test]
    fn only_a_host_stop_or_a_power_off_is_clean() {
        assert!(record(EXIT_STOPPED).is_clean());
        assert!(record(EXIT_POWER_OFF).is_clean());
        for code in [EXIT_ERROR, EXIT_REBOOT, EXIT_CRASHED, 137, -1] {
            assert!(!record(code).is_clean(), "{code}");
        }
    }
}
