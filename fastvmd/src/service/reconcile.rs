//! Keeping the store true to the monitors: at start, re-adopt monitors that
//! outlived the previous daemon and mark VMs whose monitor died; while
//! running, notice monitors that end.

use std::time::Duration;

use super::vms::set_status_if;
use super::{Inner, Service, ServiceError};
use crate::store::{VmRow, VmStatus};
use crate::vmm::exit_record::ExitRecord;

/// How often running VMs are checked for a monitor that ended.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The status of a VM whose monitor is gone, from the exit record it left:
/// `stopped` when the host stopped it or its guest powered off, `error`
/// for any other ending, and when there is no record (a signal killed the
/// monitor) or it cannot be read. With the reason, for the log.
fn ended_status(inner: &Inner, id: &str) -> (VmStatus, String) {
    match ExitRecord::read(&inner.supervisor.vm_dir(id)) {
        Ok(Some(record)) => {
            let status = if record.is_clean() {
                VmStatus::Stopped
            } else {
                VmStatus::Error
            };
            (status, format!("exit {}: {}", record.code, record.reason))
        }
        Ok(None) => (
            VmStatus::Error,
            "it left no exit record (killed by a signal?)".into(),
        ),
        Err(e) => (VmStatus::Error, e.to_string()),
    }
}

/// Marks a provisioning or running VM whose monitor has ended `stopped` or
/// `error` (clearing its monitor pid, which frees an `error` VM's quota);
/// true when it did. A VM whose status changed meanwhile (a delete, a
/// create settling) is left to whoever changed it.
fn mark_if_ended(inner: &Inner, vm: &VmRow) -> bool {
    let tracked = [VmStatus::Provisioning, VmStatus::Running];
    if !tracked.contains(&vm.status) || inner.supervisor.is_alive(&vm.id) {
        return false;
    }
    let (status, why) = ended_status(inner, &vm.id);
    if !set_status_if(inner, &vm.id, vm.status, status) {
        return false;
    }
    tracing::warn!("VM {}: its monitor ended ({why}); now {status}", vm.id);
    if !inner.supervisor.release(&vm.id) {
        lock(&inner.to_release).insert(vm.id.clone());
    }
    let _ = inner.store.set_vm_monitor(&vm.id, None);
    super::admin::emit_quota(inner, &vm.org_id);
    true
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The watcher's judgement of one VM. Only a VM whose monitor the store
/// records as started is judged: a `provisioning` VM without one belongs
/// to the createVM call still preparing it (disk copy, monitor start),
/// which decides its status itself.
fn watch(inner: &Inner, vm: &VmRow) {
    if vm.monitor_pid.is_some() {
        mark_if_ended(inner, vm);
    }
}

/// How long a provisioning VM found at start is given to show its agent
/// is up; one that does not stays `provisioning` for the watcher to judge.
const ADOPTED_AGENT_WAIT: Duration = Duration::from_millis(500);

/// [`Service::reconcile`]'s store part: (adopted, lost, provisioning VMs
/// with a live monitor, whose agents are then asked).
fn reconcile_rows(inner: &Inner) -> Result<(usize, usize, Vec<VmRow>), ServiceError> {
    let (mut adopted, mut lost, mut provisioning) = (0, 0, Vec::new());
    for vm in inner.store.live_vms()? {
        if vm.status == VmStatus::Deleting {
            let _ = inner.supervisor.destroy(&vm.id);
            inner.store.mark_vm_deleted(&vm.id)?;
            continue;
        }
        if let Some(pid) = inner.supervisor.monitor_pid(&vm.id) {
            adopted += 1;
            // A create cut short may have started it without recording it.
            if vm.monitor_pid != Some(pid) {
                inner.store.set_vm_monitor(&vm.id, Some(pid))?;
            }
            if vm.status == VmStatus::Provisioning {
                provisioning.push(vm);
            }
        } else if mark_if_ended(inner, &vm) {
            // No create is in flight at start: a provisioning VM without a
            // live monitor is judged too.
            lost += 1;
        }
    }
    Ok((adopted, lost, provisioning))
}

impl Service {
    /// At start: VMs with a live monitor stay as they are (a provisioning
    /// one is settled if its agent answers), others are marked `stopped` or
    /// `error` from their exit record; deletions cut short are finished.
    /// Returns (adopted, lost).
    pub(super) async fn reconcile(&self) -> Result<(usize, usize), ServiceError> {
        let (adopted, lost, provisioning) = self.blocking(reconcile_rows).await?;
        // Their agents are asked all at once, each given half a second.
        let asked = provisioning.into_iter().map(|vm| async move {
            let readiness = self
                .inner
                .supervisor
                .wait_agent(
                    &vm.id,
                    ADOPTED_AGENT_WAIT,
                    super::vms::nic(&vm, self.inner.ipv4).as_ref(),
                )
                .await;
            self.settle(vm.id, readiness, None).await;
        });
        futures_util::future::join_all(asked).await;
        Ok((adopted, lost))
    }

    /// Watches VMs with a recorded monitor for monitors that end, until the
    /// runtime stops.
    pub fn spawn_watcher(&self) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            loop {
                tick.tick().await;
                let _ = service
                    .db(|inner| {
                        // Listed before the rows are read: see cgroup_ids.
                        let with_cgroups = inner.supervisor.cgroup_ids();
                        let vms = inner.store.live_vms()?;
                        for vm in &vms {
                            watch(inner, vm);
                        }
                        lock(&inner.to_release).retain(|id| !inner.supervisor.release(id));
                        for id in with_cgroups {
                            if !vms.iter().any(|vm| vm.id == id) {
                                inner.supervisor.release(&id);
                            }
                        }
                        Ok(())
                    })
                    .await;
            }
        })
    }
}
