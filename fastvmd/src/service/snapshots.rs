//! Snapshot operations: create (the monitor writes it while the VM runs on),
//! list, rename, delete.

use fastvm_proto::api::{
    self, CreateSnapshotRequest, DeleteResponse, SnapshotObject, UpdateSnapshotRequest,
};
use fastvm_proto::socket::{EventKind, EventOp};

use super::admin::emit_quota;
use super::convert;
use super::snapshot_sweep::deleting_path;
use super::vms::{find_vm, path_id, require_running};
use super::{Caller, Service, ServiceError};
use crate::store::{NewSnapshot, SnapshotStatus};

impl Service {
    /// createSnapshot: 201 once the snapshot directory is complete.
    pub async fn create_snapshot(
        &self,
        caller: &Caller,
        req: CreateSnapshotRequest,
    ) -> Result<SnapshotObject, ServiceError> {
        api::validate_create_snapshot(&req)?;
        let caller = caller.clone();
        self.blocking(move |inner| {
            let vm_id = req.vm_id.to_string();
            let vm = find_vm(inner, &caller, &vm_id)?;
            require_running(&vm, "snapshot")?;
            let _only = inner.snapshotting.take(&vm.id).ok_or_else(|| {
                ServiceError::Conflict(format!(
                    "a snapshot of VM {vm_id} is in progress; try again when it is done"
                ))
            })?;
            let row = inner.store.create_snapshot_within_quota(NewSnapshot {
                org_id: caller.org_id.clone(),
                vm_id: vm.id.clone(),
                name: req
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{}-snapshot", vm.name)),
                status: SnapshotStatus::Creating,
                firewall_json: vm.firewall_json.clone(),
                vcpus: vm.vcpus,
                memory_mib: vm.memory_mib,
                disk_gib: vm.disk_gib,
                run_json: vm.run_json.clone(),
            })?;
            inner.emit(
                EventKind::Snapshot,
                EventOp::Created,
                &caller.org_id,
                &convert::snapshot(&row)?,
            );
            emit_quota(inner, &caller.org_id);
            let dir = inner.snapshots_dir.join(&row.id);
            let outcome = inner.supervisor.snapshot(&vm.id, &dir);
            let status = match outcome {
                Ok(_) => SnapshotStatus::Ready,
                Err(_) => SnapshotStatus::Error,
            };
            inner.store.update_snapshot_status(&row.id, status)?;
            let row = inner
                .store
                .get_snapshot(&caller.org_id, &row.id)?
                .ok_or_else(|| ServiceError::Internal("snapshot vanished".into()))?;
            let object = convert::snapshot(&row)?;
            inner.emit(
                EventKind::Snapshot,
                EventOp::Updated,
                &caller.org_id,
                &object,
            );
            match outcome {
                Ok(_) => Ok(object),
                Err(e) => {
                    emit_quota(inner, &caller.org_id);
                    Err(ServiceError::Upstream(format!(
                        "snapshot of VM {vm_id}: {e}"
                    )))
                }
            }
        })
        .await
    }

    /// listSnapshots.
    pub async fn list_snapshots(
        &self,
        caller: &Caller,
    ) -> Result<Vec<SnapshotObject>, ServiceError> {
        let org = caller.org_id.clone();
        self.db(move |inner| {
            inner
                .store
                .list_snapshots(&org)?
                .iter()
                .map(convert::snapshot)
                .collect()
        })
        .await
    }

    /// updateSnapshot: rename.
    pub async fn update_snapshot(
        &self,
        caller: &Caller,
        id: &str,
        req: UpdateSnapshotRequest,
    ) -> Result<SnapshotObject, ServiceError> {
        api::validate_update_snapshot(&req)?;
        let (caller, id) = (caller.clone(), path_id(id)?);
        self.db(move |inner| {
            if !inner
                .store
                .rename_snapshot(&caller.org_id, &id, &req.name)?
            {
                return Err(ServiceError::NotFound(format!("snapshot {id} not found")));
            }
            let row = inner
                .store
                .get_snapshot(&caller.org_id, &id)?
                .ok_or_else(|| ServiceError::NotFound(format!("snapshot {id} not found")))?;
            let object = convert::snapshot(&row)?;
            inner.emit(
                EventKind::Snapshot,
                EventOp::Updated,
                &caller.org_id,
                &object,
            );
            Ok(object)
        })
        .await
    }

    /// deleteSnapshot: VMs restored from it keep running (they map its
    /// memory file, which outlives the directory entry).
    pub async fn delete_snapshot(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<DeleteResponse, ServiceError> {
        let (caller, id) = (caller.clone(), path_id(id)?);
        self.blocking(move |inner| {
            let row = inner
                .store
                .get_snapshot(&caller.org_id, &id)?
                .ok_or_else(|| ServiceError::NotFound(format!("snapshot {id} not found")))?;
            // Files out of the way first (one rename), then the row, then
            // the files: a crash anywhere leaves what the start-up sweep
            // finishes ([`super::snapshot_sweep`]).
            let doomed = deleting_path(&inner.snapshots_dir, &id);
            match std::fs::rename(inner.snapshots_dir.join(&id), &doomed) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!("snapshot {id}: cannot move its files aside: {e}");
                    return Err(ServiceError::Internal(format!(
                        "snapshot {id}: its files cannot be removed"
                    )));
                }
            }
            if !inner.store.delete_snapshot(&caller.org_id, &id)? {
                return Err(ServiceError::NotFound(format!("snapshot {id} not found")));
            }
            let _ = std::fs::remove_dir_all(&doomed);
            inner.emit(
                EventKind::Snapshot,
                EventOp::Deleted,
                &caller.org_id,
                &convert::snapshot(&row)?,
            );
            emit_quota(inner, &caller.org_id);
            Ok(DeleteResponse { id, deleted: true })
        })
        .await
    }
}
