//! VM rows: quota-checked creation with vsock CID allocation, org-scoped
//! reads, and the daemon's state updates. Deleting is a soft delete
//! (`deleted_at`), which frees the VM's quota and its vsock CID.

use rusqlite::{OptionalExtension, Row};

use super::orgs::{check, limits_tx, require_org, usage_tx};
use super::{Result, Store, StoreError, VmStatus, get_u64, new_id, now_ms, parse_column, to_i64};

/// The lowest vsock CID handed to a guest (0-2 are reserved by vsock).
pub const FIRST_VSOCK_CID: u32 = 3;

/// Highest CID handed out (`u32::MAX` is `VMADDR_CID_ANY`).
const LAST_VSOCK_CID: i64 = u32::MAX as i64 - 1;

const VM_COLS: &str = "id, org_id, name, machine_name, source_name, source_snapshot_id, vcpus, \
     memory_mib, disk_gib, status, firewall_json, public_ipv6, vsock_cid, monitor_pid, \
     created_at, deleted_at, run_json";

/// A VM as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    /// VM id (UUID string).
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// User-facing name.
    pub name: String,
    /// Machine type, e.g. `c1m2`.
    pub machine_name: String,
    /// Image name it was created from, if any.
    pub source_name: Option<String>,
    /// Snapshot it was restored from, if any.
    pub source_snapshot_id: Option<String>,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Disk size, GiB.
    pub disk_gib: u64,
    /// Lifecycle status.
    pub status: VmStatus,
    /// Firewall policy as JSON text (the API's `FirewallPolicy`).
    pub firewall_json: String,
    /// Public IPv6 address, once assigned.
    pub public_ipv6: Option<String>,
    /// Guest vsock CID, unique among live VMs.
    pub vsock_cid: u32,
    /// Pid of the VM's monitor process, while it runs.
    pub monitor_pid: Option<u32>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; `Some` once deleted.
    pub deleted_at: Option<i64>,
    /// How commands run in it by default, as JSON (its image's run
    /// defaults; `{}` for none).
    pub run_json: String,
}

/// What the caller supplies to create a VM; the store adds id, CID and times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVm {
    /// Owning org (must exist).
    pub org_id: String,
    /// User-facing name.
    pub name: String,
    /// Machine type, e.g. `c1m2`.
    pub machine_name: String,
    /// Image name, if any.
    pub source_name: Option<String>,
    /// Snapshot restored from, if any.
    pub source_snapshot_id: Option<String>,
    /// vCPUs (checked against the `vcpu` limit).
    pub vcpus: u32,
    /// Memory, MiB (checked against `memoryMiB`).
    pub memory_mib: u64,
    /// Disk, GiB (checked against `diskGiB`).
    pub disk_gib: u64,
    /// Initial status, normally `provisioning`.
    pub status: VmStatus,
    /// Firewall policy JSON text.
    pub firewall_json: String,
    /// Public IPv6 address, if already known.
    pub public_ipv6: Option<String>,
    /// How commands run in it by default, as JSON (`{}` for none).
    pub run_json: String,
}

fn vm_from_row(r: &Row<'_>) -> rusqlite::Result<VmRow> {
    let vcpus = u32::try_from(get_u64(r, 6)?).unwrap_or(u32::MAX);
    let cid = u32::try_from(get_u64(r, 12)?).unwrap_or(u32::MAX);
    let pid: Option<i64> = r.get(13)?;
    Ok(VmRow {
        id: r.get(0)?,
        org_id: r.get(1)?,
        name: r.get(2)?,
        machine_name: r.get(3)?,
        source_name: r.get(4)?,
        source_snapshot_id: r.get(5)?,
        vcpus,
        memory_mib: get_u64(r, 7)?,
        disk_gib: get_u64(r, 8)?,
        status: parse_column(r, 9)?,
        firewall_json: r.get(10)?,
        public_ipv6: r.get(11)?,
        vsock_cid: cid,
        monitor_pid: pid.and_then(|p| u32::try_from(p).ok()),
        created_at: r.get(14)?,
        deleted_at: r.get(15)?,
        run_json: r.get(16)?,
    })
}

impl Store {
    /// Creates a VM if the org's `vcpu`, `memoryMiB` and `diskGiB` limits
    /// allow it (checked in that order), allocating the lowest vsock CID
    /// ≥ [`FIRST_VSOCK_CID`] not used by a live VM. Check and insert are
    /// one `BEGIN IMMEDIATE` transaction, so concurrent creates never overshoot.
    pub fn create_vm_within_quota(&self, new: NewVm) -> Result<VmRow> {
        let d = self.defaults;
        self.write(|tx| {
            require_org(tx, &new.org_id)?;
            let limits = limits_tx(tx, &new.org_id, d)?;
            let used = usage_tx(tx, &new.org_id)?;
            check("vcpu", limits.vcpu, used.vcpu, u64::from(new.vcpus))?;
            check(
                "memoryMiB",
                limits.memory_mib,
                used.memory_mib,
                new.memory_mib,
            )?;
            check("diskGiB", limits.disk_gib, used.disk_gib, new.disk_gib)?;
            let cid: i64 = tx.query_row(
                "SELECT MIN(c) FROM (
                     SELECT ?1 AS c UNION ALL
                     SELECT vsock_cid + 1 FROM vms WHERE deleted_at IS NULL
                 ) WHERE c NOT IN (SELECT vsock_cid FROM vms WHERE deleted_at IS NULL)",
                [i64::from(FIRST_VSOCK_CID)],
                |r| r.get(0),
            )?;
            if cid > LAST_VSOCK_CID {
                return Err(StoreError::Conflict("no free vsock CID".into()));
            }
            let row = VmRow {
                id: new_id(),
                org_id: new.org_id,
                name: new.name,
                machine_name: new.machine_name,
                source_name: new.source_name,
                source_snapshot_id: new.source_snapshot_id,
                vcpus: new.vcpus,
                memory_mib: new.memory_mib,
                disk_gib: new.disk_gib,
                status: new.status,
                firewall_json: new.firewall_json,
                public_ipv6: new.public_ipv6,
                vsock_cid: u32::try_from(cid).map_err(|_| StoreError::OutOfRange("vsock CID"))?,
                monitor_pid: None,
                created_at: now_ms(),
                deleted_at: None,
                run_json: new.run_json,
            };
            tx.execute(
                &format!(
                    "INSERT INTO vms ({VM_COLS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, NULL, ?14, NULL, ?15)"
                ),
                rusqlite::params![
                    row.id,
                    row.org_id,
                    row.name,
                    row.machine_name,
                    row.source_name,
                    row.source_snapshot_id,
                    i64::from(row.vcpus),
                    to_i64(row.memory_mib, "memoryMiB")?,
                    to_i64(row.disk_gib, "diskGiB")?,
                    row.status.as_str(),
                    row.firewall_json,
                    row.public_ipv6,
                    cid,
                    row.created_at,
                    row.run_json,
                ],
            )?;
            Ok(row)
        })
    }

    /// The live (not deleted) VM `id` of `org`; another org's VM is `None`.
    pub fn get_vm(&self, org: &str, id: &str) -> Result<Option<VmRow>> {
        let c = self.lock()?;
        Ok(c.query_row(
            &format!(
                "SELECT {VM_COLS} FROM vms WHERE id = ?1 AND org_id = ?2 AND deleted_at IS NULL"
            ),
            [id, org],
            vm_from_row,
        )
        .optional()?)
    }

    /// VM `id` regardless of org or deletion (daemon-internal use).
    pub fn get_vm_any(&self, id: &str) -> Result<Option<VmRow>> {
        let c = self.lock()?;
        Ok(c.query_row(
            &format!("SELECT {VM_COLS} FROM vms WHERE id = ?1"),
            [id],
            vm_from_row,
        )
        .optional()?)
    }

    /// Whether a live VM has public IPv6 address `addr`.
    pub fn ipv6_in_use(&self, addr: &str) -> Result<bool> {
        let c = self.lock()?;
        Ok(c.query_row(
            "SELECT EXISTS(SELECT 1 FROM vms WHERE public_ipv6 = ?1 AND deleted_at IS NULL)",
            [addr],
            |r| r.get(0),
        )?)
    }

    /// The public IPv6 addresses of every live VM.
    pub fn live_public_ipv6(&self) -> Result<Vec<String>> {
        let c = self.lock()?;
        let mut stmt = c.prepare(
            "SELECT public_ipv6 FROM vms WHERE public_ipv6 IS NOT NULL AND deleted_at IS NULL",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
    }

    /// The live VMs of `org`, oldest first.
    pub fn list_vms(&self, org: &str) -> Result<Vec<VmRow>> {
        self.query_vms("WHERE org_id = ?1 AND deleted_at IS NULL", [org])
    }

    /// Every live VM of every org, oldest first (re-adoption at start-up).
    pub fn live_vms(&self) -> Result<Vec<VmRow>> {
        self.query_vms("WHERE deleted_at IS NULL", [])
    }

    /// The live VMs of every org booted from named image `name` (source
    /// `name`, not restored from a snapshot), oldest first. A VM of the
    /// daemon's own guest has that guest's name (`linux`, `test`) as its
    /// source, so it counts for an image of that name too.
    pub fn vms_booted_from(&self, name: &str) -> Result<Vec<VmRow>> {
        self.query_vms(
            "WHERE source_name = ?1 AND source_snapshot_id IS NULL AND deleted_at IS NULL",
            [name],
        )
    }

    fn query_vms<P: rusqlite::Params>(&self, filter: &str, p: P) -> Result<Vec<VmRow>> {
        let c = self.lock()?;
        let mut st = c.prepare(&format!(
            "SELECT {VM_COLS} FROM vms {filter} ORDER BY created_at, rowid"
        ))?;
        let rows = st.query_map(p, vm_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn update_vm(&self, sql: &str, p: impl rusqlite::Params) -> Result<bool> {
        self.write(|tx| Ok(tx.execute(sql, p)? == 1))
    }

    /// Renames live VM `id` of `org`; `false` if not found.
    pub fn update_vm_name(&self, org: &str, id: &str, name: &str) -> Result<bool> {
        self.update_vm(
            "UPDATE vms SET name = ?3 WHERE id = ?1 AND org_id = ?2 AND deleted_at IS NULL",
            (id, org, name),
        )
    }

    /// Sets the status of live VM `id`; `false` if not found.
    pub fn update_vm_status(&self, id: &str, status: VmStatus) -> Result<bool> {
        self.update_vm(
            "UPDATE vms SET status = ?2 WHERE id = ?1 AND deleted_at IS NULL",
            (id, status.as_str()),
        )
    }

    /// Sets the status of live VM `id` only if it is currently `from`
    /// (compare-and-set); `false` otherwise.
    pub fn update_vm_status_if(&self, id: &str, from: VmStatus, to: VmStatus) -> Result<bool> {
        self.update_vm(
            "UPDATE vms SET status = ?3 WHERE id = ?1 AND status = ?2 AND deleted_at IS NULL",
            (id, from.as_str(), to.as_str()),
        )
    }

    /// Records (or clears) the monitor pid of live VM `id`.
    pub fn set_vm_monitor(&self, id: &str, pid: Option<u32>) -> Result<bool> {
        self.update_vm(
            "UPDATE vms SET monitor_pid = ?2 WHERE id = ?1 AND deleted_at IS NULL",
            (id, pid.map(i64::from)),
        )
    }

    /// Records the monitor pid of live VM `id` only while it is still
    /// `provisioning`; `false` otherwise (a delete got there first).
    pub fn record_new_vm_monitor(&self, id: &str, pid: u32) -> Result<bool> {
        self.update_vm(
            "UPDATE vms SET monitor_pid = ?2 \
             WHERE id = ?1 AND status = ?3 AND deleted_at IS NULL",
            (id, i64::from(pid), VmStatus::Provisioning.as_str()),
        )
    }

    /// Records (or clears) the public IPv6 address of live VM `id`.
    pub fn set_vm_public_ipv6(&self, id: &str, addr: Option<&str>) -> Result<bool> {
        self.update_vm(
            "UPDATE vms SET public_ipv6 = ?2 WHERE id = ?1 AND deleted_at IS NULL",
            (id, addr),
        )
    }

    /// Replaces the firewall JSON of live VM `id` of `org`; `false` if not found.
    pub fn update_vm_firewall(&self, org: &str, id: &str, firewall_json: &str) -> Result<bool> {
        self.update_vm(
            "UPDATE vms SET firewall_json = ?3 WHERE id = ?1 AND org_id = ?2 AND deleted_at IS NULL",
            (id, org, firewall_json),
        )
    }

    /// Soft-deletes VM `id` (frees its quota and CID, clears the monitor
    /// pid); `false` if not found or already deleted.
    pub fn mark_vm_deleted(&self, id: &str) -> Result<bool> {
        self.update_vm(
            "UPDATE vms SET deleted_at = ?2, monitor_pid = NULL WHERE id = ?1 AND deleted_at IS NULL",
            (id, now_ms()),
        )
    }
}
