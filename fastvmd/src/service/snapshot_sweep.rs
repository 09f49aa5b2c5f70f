//! Snapshots after a crash, at start. A snapshot is written by its VM's
//! monitor into the VM directory, moved by the daemon to
//! `snapshots/.<id>.adopt`, checked and renamed to `snapshots/<id>`; a
//! delete renames `snapshots/<id>` to `snapshots/.<id>.deleting`, drops the
//! row, then removes the files. A daemon killed anywhere in between leaves
//! one of those names behind, which the sweep finishes from:
//!
//! - a snapshot still `creating` becomes `ready` when its directory is in
//!   place or can still be adopted from the VM directory, and opens as a
//!   valid snapshot (manifest, sizes, vmstate checks); otherwise `error`,
//!   with its files removed;
//! - a delete cut short is finished (row and files);
//! - files no row owns are removed: staging and temporary directories,
//!   snapshot directories of deleted rows, snapshots a monitor committed
//!   into its VM directory that were never adopted.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::{Inner, ServiceError};
use crate::store::{SnapshotRow, SnapshotStatus};
use crate::vmm::snapshot::adopt::adopt;
use crate::vmm::snapshot::dir::SnapshotReader;

/// Suffix of a snapshot directory being deleted.
pub(super) const DELETING: &str = ".deleting";

/// What the sweep did, for the daemon's start-up report.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// `creating` snapshots found whole: now `ready`.
    pub recovered: usize,
    /// `creating` snapshots that were not: now `error`.
    pub failed: usize,
    /// Directories no row owns, removed.
    pub removed: usize,
}

/// `snapshots/.<id>.deleting`.
pub(super) fn deleting_path(snapshots: &Path, id: &str) -> std::path::PathBuf {
    snapshots.join(format!(".{id}{DELETING}"))
}

/// The sweep; see the module comment.
pub(super) fn sweep(inner: &Inner) -> Result<Swept, ServiceError> {
    let mut swept = Swept::default();
    let snapshots = &inner.snapshots_dir;
    let rows: HashMap<String, SnapshotRow> = inner
        .store
        .all_snapshots()?
        .into_iter()
        .map(|row| (row.id.clone(), row))
        .collect();
    for row in rows.values() {
        if fs::symlink_metadata(deleting_path(snapshots, &row.id)).is_ok() {
            inner.store.delete_snapshot(&row.org_id, &row.id)?;
            continue;
        }
        if row.status != SnapshotStatus::Creating {
            continue;
        }
        let status = if recover(inner, row) {
            swept.recovered += 1;
            SnapshotStatus::Ready
        } else {
            swept.failed += 1;
            let _ = fs::remove_dir_all(snapshots.join(&row.id));
            SnapshotStatus::Error
        };
        inner.store.update_snapshot_status(&row.id, status)?;
        tracing::warn!(
            "snapshot {}: left creating by an earlier daemon; now {status}",
            row.id
        );
    }
    // What is left in snapshots/ that no live row owns.
    let live = inner.store.all_snapshots()?;
    let owned = |name: &str| live.iter().any(|row| row.id == name);
    for entry in fs::read_dir(snapshots).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !owned(&name) {
            let _ = fs::remove_dir_all(entry.path());
            swept.removed += 1;
        }
    }
    // Snapshots committed into a VM directory but never adopted, and the
    // temporary directories of monitors that are gone (a live monitor may
    // still be writing one). A VM directory holds no other directory.
    for entry in fs::read_dir(inner.supervisor.vms_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let vm_id = entry.file_name().to_string_lossy().into_owned();
        let alive = inner.supervisor.is_alive(&vm_id);
        for inside in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
            let name = inside.file_name().to_string_lossy().into_owned();
            let is_dir = inside.file_type().is_ok_and(|t| t.is_dir());
            let in_use = alive && name.starts_with('.');
            if is_dir && !in_use {
                let _ = fs::remove_dir_all(inside.path());
                swept.removed += 1;
            }
        }
    }
    Ok(swept)
}

/// Brings a `creating` snapshot's directory into place if it can; true when
/// it is there and valid.
fn recover(inner: &Inner, row: &SnapshotRow) -> bool {
    let snapshots = &inner.snapshots_dir;
    let dest = snapshots.join(&row.id);
    // Cut short between the two renames of an adoption: not yet checked.
    let _ = fs::remove_dir_all(snapshots.join(format!(".{}.adopt", row.id)));
    if fs::symlink_metadata(&dest).is_err() {
        let vm_dir = inner.supervisor.vm_dir(&row.vm_id);
        let committed = fs::symlink_metadata(vm_dir.join(&row.id)).is_ok_and(|m| m.is_dir());
        if !committed || adopt(&vm_dir, &row.id, &dest).is_err() {
            return false;
        }
    }
    match SnapshotReader::open(&dest) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("snapshot {}: not valid: {e}", row.id);
            false
        }
    }
}
