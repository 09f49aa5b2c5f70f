//! Snapshot rows (quota-checked creation, org-scoped reads, hard delete)
//! and one-time console tokens.

use rusqlite::{OptionalExtension, Row};

use super::orgs::{check, limits_tx, require_org, usage_tx};
use super::{Result, SnapshotStatus, Store, get_u64, new_id, now_ms, parse_column, to_i64};

const SNAP_COLS: &str = "id, org_id, vm_id, name, status, firewall_json, vcpus, memory_mib, disk_gib, created_at, \
     run_json";

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    /// Snapshot id (UUID string).
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// VM it was taken from (that VM may since have been deleted).
    pub vm_id: String,
    /// User-facing name.
    pub name: String,
    /// Status.
    pub status: SnapshotStatus,
    /// The VM's firewall policy JSON at snapshot time.
    pub firewall_json: String,
    /// vCPUs of the VM.
    pub vcpus: u32,
    /// Memory of the VM, MiB.
    pub memory_mib: u64,
    /// Disk of the VM, GiB.
    pub disk_gib: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Its VM's run defaults, as JSON, for the clones.
    pub run_json: String,
}

/// What the caller supplies to create a snapshot; the store adds id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshot {
    /// Owning org (must exist).
    pub org_id: String,
    /// Source VM.
    pub vm_id: String,
    /// User-facing name.
    pub name: String,
    /// Initial status, normally `creating`.
    pub status: SnapshotStatus,
    /// Firewall policy JSON text.
    pub firewall_json: String,
    /// vCPUs of the VM.
    pub vcpus: u32,
    /// Memory of the VM, MiB.
    pub memory_mib: u64,
    /// Disk of the VM, GiB.
    pub disk_gib: u64,
    /// Its VM's run defaults, as JSON.
    pub run_json: String,
}

fn snap_from_row(r: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        id: r.get(0)?,
        org_id: r.get(1)?,
        vm_id: r.get(2)?,
        name: r.get(3)?,
        status: parse_column(r, 4)?,
        firewall_json: r.get(5)?,
        vcpus: u32::try_from(get_u64(r, 6)?).unwrap_or(u32::MAX),
        memory_mib: get_u64(r, 7)?,
        disk_gib: get_u64(r, 8)?,
        created_at: r.get(9)?,
        run_json: r.get(10)?,
    })
}

impl Store {
    /// Creates a snapshot row if the org's `snapshotCount` limit allows one
    /// more (snapshots in status `error` do not count); one `BEGIN IMMEDIATE`
    /// transaction, so concurrent creates never overshoot.
    pub fn create_snapshot_within_quota(&self, new: NewSnapshot) -> Result<SnapshotRow> {
        let d = self.defaults;
        self.write(|tx| {
            require_org(tx, &new.org_id)?;
            let limits = limits_tx(tx, &new.org_id, d)?;
            let used = usage_tx(tx, &new.org_id)?;
            check("snapshotCount", limits.snapshot_count, used.snapshot_count, 1)?;
            let row = SnapshotRow {
                id: new_id(),
                org_id: new.org_id,
                vm_id: new.vm_id,
                name: new.name,
                status: new.status,
                firewall_json: new.firewall_json,
                vcpus: new.vcpus,
                memory_mib: new.memory_mib,
                disk_gib: new.disk_gib,
                created_at: now_ms(),
                run_json: new.run_json,
            };
            tx.execute(
                &format!(
                    "INSERT INTO snapshots ({SNAP_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                rusqlite::params![
                    row.id,
                    row.org_id,
                    row.vm_id,
                    row.name,
                    row.status.as_str(),
                    row.firewall_json,
                    i64::from(row.vcpus),
                    to_i64(row.memory_mib, "memoryMiB")?,
                    to_i64(row.disk_gib, "diskGiB")?,
                    row.created_at,
                    row.run_json,
                ],
            )?;
            Ok(row)
        })
    }

    /// Snapshot `id` of `org`; another org's snapshot is `None`.
    pub fn get_snapshot(&self, org: &str, id: &str) -> Result<Option<SnapshotRow>> {
        let c = self.lock()?;
        Ok(c.query_row(
            &format!("SELECT {SNAP_COLS} FROM snapshots WHERE id = ?1 AND org_id = ?2"),
            [id, org],
            snap_from_row,
        )
        .optional()?)
    }

    /// The snapshots of `org`, oldest first.
    pub fn list_snapshots(&self, org: &str) -> Result<Vec<SnapshotRow>> {
        let c = self.lock()?;
        let mut st = c.prepare(&format!(
            "SELECT {SNAP_COLS} FROM snapshots WHERE org_id = ?1 ORDER BY created_at, rowid"
        ))?;
        let rows = st.query_map([org], snap_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every snapshot of every org (start-up cleanup of `creating` leftovers).
    pub fn all_snapshots(&self) -> Result<Vec<SnapshotRow>> {
        let c = self.lock()?;
        let mut st = c.prepare(&format!(
            "SELECT {SNAP_COLS} FROM snapshots ORDER BY created_at, rowid"
        ))?;
        let rows = st.query_map([], snap_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Sets the status of snapshot `id`; `false` if not found.
    pub fn update_snapshot_status(&self, id: &str, status: SnapshotStatus) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE snapshots SET status = ?2 WHERE id = ?1",
                (id, status.as_str()),
            )? == 1)
        })
    }

    /// Renames snapshot `id` of `org`; `false` if not found.
    pub fn rename_snapshot(&self, org: &str, id: &str, name: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE snapshots SET name = ?3 WHERE id = ?1 AND org_id = ?2",
                (id, org, name),
            )? == 1)
        })
    }

    /// Deletes snapshot `id` of `org` (frees its quota); `false` if not found.
    pub fn delete_snapshot(&self, org: &str, id: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM snapshots WHERE id = ?1 AND org_id = ?2",
                (id, org),
            )? == 1)
        })
    }

    /// Stores a console token by hash, valid until `expires_at` (Unix ms,
    /// exclusive). `vm_id` and `org_id` must exist.
    pub fn insert_console_token(
        &self,
        token_hash: &str,
        vm_id: &str,
        org_id: &str,
        expires_at: i64,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO console_tokens (token_hash, vm_id, org_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
                (token_hash, vm_id, org_id, expires_at),
            )?;
            Ok(())
        })
    }

    /// Uses the console token with this hash: `Some((vm_id, org_id))` the
    /// first time if `now < expires_at`, then never again. Tokens that
    /// expired more than an hour ago are purged in the same transaction.
    pub fn consume_console_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>> {
        self.write(|tx| {
            let hit = tx
                .query_row(
                    "UPDATE console_tokens SET used_at = ?2
                     WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2
                     RETURNING vm_id, org_id",
                    (token_hash, now),
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            tx.execute(
                "DELETE FROM console_tokens WHERE expires_at < ?1",
                [now.saturating_sub(3_600_000)],
            )?;
            Ok(hit)
        })
    }
}
