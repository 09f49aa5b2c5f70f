//! VM operations: list, create (boot or restore), get, rename, delete,
//! firewall, exec.

use std::path::PathBuf;
use std::time::Duration;

use fastvm_proto::api::{
    self, CreateVmRequest, DeleteResponse, ExecVmRequest, ExecVmResponse, FirewallPolicy,
    PatchVmFirewallRequest, UpdateVmRequest, VmInstance, VmStatus,
};
use fastvm_proto::socket::{EventKind, EventOp};

use super::admin::emit_quota;
use super::convert;
use super::{Caller, Inner, Service, ServiceError};
use crate::image::oci::config::RunDefaults;
use crate::net::addr::{Mac, tap_name};
use crate::store::{NewVm, VmRow};
use crate::supervisor::{GuestChoice, GuestImage, MonitorSource, MonitorSpec, NicSpec, Readiness};
use fastvm_proto::agent::ExecRequest;

/// How long a create's guest agent is waited for in the background once
/// the request has answered `provisioning`; then the VM is `error`.
const BACKGROUND_AGENT_WAIT: Duration = Duration::from_secs(120);

/// Parses a path id, 400 naming `id` when malformed.
pub(super) fn path_id(id: &str) -> Result<String, ServiceError> {
    api::parse_uuid("id", id)
        .map(|u| u.to_string())
        .map_err(ServiceError::from)
}

pub(super) fn find_vm(inner: &Inner, caller: &Caller, id: &str) -> Result<VmRow, ServiceError> {
    inner
        .store
        .get_vm(&caller.org_id, id)?
        .ok_or_else(|| ServiceError::NotFound(format!("VM {id} not found")))
}

pub(super) fn require_running(row: &VmRow, what: &str) -> Result<(), ServiceError> {
    if row.status == VmStatus::Running {
        Ok(())
    } else {
        Err(ServiceError::Conflict(format!(
            "cannot {what}: VM {} is {}, not running",
            row.id, row.status
        )))
    }
}

fn firewall_json(policy: &FirewallPolicy) -> Result<String, ServiceError> {
    serde_json::to_string(policy).map_err(|e| ServiceError::Internal(e.to_string()))
}

/// Updates a VM's status and tells watchers.
pub(super) fn set_status(inner: &Inner, id: &str, status: VmStatus) {
    if inner.store.update_vm_status(id, status).unwrap_or(false)
        && let Ok(Some(row)) = inner.store.get_vm_any(id)
        && let Ok(vm) = convert::vm(&row)
    {
        inner.emit(EventKind::Vm, EventOp::Updated, &row.org_id, &vm);
    }
}

/// Moves VM `id` from status `from` to `to` and tells watchers; `false`,
/// and no event, when it was no longer `from` (another path decided first).
pub(super) fn set_status_if(inner: &Inner, id: &str, from: VmStatus, to: VmStatus) -> bool {
    let moved = inner
        .store
        .update_vm_status_if(id, from, to)
        .unwrap_or(false);
    if moved
        && let Ok(Some(row)) = inner.store.get_vm_any(id)
        && let Ok(vm) = convert::vm(&row)
    {
        inner.emit(EventKind::Vm, EventOp::Updated, &row.org_id, &vm);
    }
    moved
}

/// A create whose monitor did not start (or could not be recorded): the VM
/// becomes `error` unless a delete got there first, and its monitor and
/// directory go.
fn fail_start(inner: &Inner, row: &VmRow, why: &dyn std::fmt::Display) {
    tracing::warn!("VM {}: {why}", row.id);
    if set_status_if(inner, &row.id, VmStatus::Provisioning, VmStatus::Error) {
        emit_quota(inner, &row.org_id);
    }
    let _ = inner.supervisor.destroy(&row.id);
}

/// A new VM's public IPv6 address: the prefix with the interface id of a
/// new random MAC (the MAC is recovered from the address), unused by any
/// live VM. `None` when VMs run without a NIC.
fn allocate_ipv6(inner: &Inner) -> Result<Option<String>, ServiceError> {
    let Some(prefix) = inner.net else {
        return Ok(None);
    };
    for _ in 0..64 {
        let mac = Mac::random().map_err(|e| ServiceError::Internal(format!("random MAC: {e}")))?;
        let addr = prefix.address(mac).to_string();
        if inner.store.ipv6_in_use(&addr)? {
            continue;
        }
        // The MAC decides the IPv4 address too: it must be one, and free.
        if let Some(range) = inner.ipv4 {
            let Some(addr4) = range.address(mac) else {
                continue;
            };
            if ipv4_in_use(inner, range, addr4)? {
                continue;
            }
        }
        return Ok(Some(addr));
    }
    Err(ServiceError::Internal("no free IPv6 address found".into()))
}

/// Whether a live VM has IPv4 address `addr4` in `range`.
fn ipv4_in_use(
    inner: &Inner,
    range: crate::vmm::net::addr4::Ipv4Range,
    addr4: std::net::Ipv4Addr,
) -> Result<bool, ServiceError> {
    Ok(inner.store.live_public_ipv6()?.iter().any(|a| {
        a.parse()
            .ok()
            .and_then(Mac::from_address)
            .and_then(|mac| range.address(mac))
            == Some(addr4)
    }))
}

/// The NIC of a VM row with an address; with an IPv4 address from
/// `ipv4` when the daemon gives VMs one.
pub(super) fn nic(row: &VmRow, ipv4: Option<crate::vmm::net::addr4::Ipv4Range>) -> Option<NicSpec> {
    let addr: std::net::Ipv6Addr = row.public_ipv6.as_deref()?.parse().ok()?;
    let mac = Mac::from_address(addr)?;
    Some(NicSpec {
        tap: tap_name(&row.id),
        mac,
        addr,
        ipv4: ipv4.and_then(|range| Some((range.address(mac)?, range.gateway()))),
    })
}

/// Where a new VM comes from, once the request is checked.
struct Plan {
    new: NewVm,
    source: MonitorSource,
}

/// A name for a VM created without one: its machine type or snapshot name
/// and a short random suffix (`c1m2-3fa9c2`), at most 64 characters.
fn default_name(base: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let base: String = base.chars().take(57).collect();
    format!("{base}-{}", &suffix[..6])
}

/// The root file system of named image `image`, for a disk of `disk_gib`.
fn named_rootfs(inner: &Inner, image: &str, disk_gib: u64) -> Result<PathBuf, ServiceError> {
    if inner.config.guest != GuestChoice::Linux {
        return Err(ServiceError::BadRequest(format!(
            "image: VMs boot named images with the Linux guest; this daemon runs the {} guest",
            inner.config.guest.name()
        )));
    }
    let rootfs =
        crate::image::import::rootfs_of(&inner.config.image_cache, image).ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "image: no image named {image} (`fastvmd image ls` lists them)"
            ))
        })?;
    let needs = std::fs::metadata(&rootfs)
        .map_or(0, |m| m.len())
        .div_ceil(1 << 30);
    if disk_gib < needs {
        return Err(ServiceError::BadRequest(format!(
            "diskGiB: image {image} needs a disk of at least {needs} GiB"
        )));
    }
    Ok(rootfs)
}

/// Named image `image`'s run defaults, as the store keeps them.
fn run_json_of(inner: &Inner, image: &str) -> Result<String, ServiceError> {
    let info =
        crate::image::import::info_of(&inner.config.image_cache, image).ok_or_else(|| {
            ServiceError::BadRequest(format!("image: {image} has no readable image.json"))
        })?;
    serde_json::to_string(&info.run).map_err(|e| ServiceError::Internal(e.to_string()))
}

/// `request` with the VM's run defaults (`run_json`) where it sets none:
/// the image's `Env` under the request's own, its `WorkingDir`, its `User`.
fn with_run_defaults(mut request: ExecRequest, run_json: &str) -> ExecRequest {
    apply_run_defaults(
        &mut request.env,
        &mut request.cwd,
        &mut request.user,
        run_json,
    );
    request
}

/// The image's `Env`, `WorkingDir` and `User` (kept as `run_json`) where
/// the request gives none of its own.
pub(super) fn apply_run_defaults(
    env: &mut std::collections::BTreeMap<String, String>,
    cwd: &mut Option<String>,
    user: &mut Option<String>,
    run_json: &str,
) {
    let run: RunDefaults = serde_json::from_str(run_json).unwrap_or_default();
    for entry in &run.env {
        if let Some((name, value)) = entry.split_once('=') {
            env.entry(name.to_string())
                .or_insert_with(|| value.to_string());
        }
    }
    if cwd.is_none() {
        *cwd = run.working_dir;
    }
    if user.is_none() {
        *user = run.user;
    }
}

fn plan(inner: &Inner, caller: &Caller, req: &CreateVmRequest) -> Result<Plan, ServiceError> {
    api::validate_create_vm(req)?;
    let named = |base: &str| req.name.clone().unwrap_or_else(|| default_name(base));
    if let Some(machine) = req.machine_type {
        let name = named(machine.as_str());
        let (kernel, cmdline, base_disk) = match &inner.guest {
            GuestImage::Ready {
                kernel,
                cmdline,
                disk,
            } => (kernel.clone(), cmdline.clone(), disk.clone()),
            GuestImage::Unavailable(why) => return Err(ServiceError::Unavailable(why.clone())),
        };
        let disk_gib = req.disk_gib.unwrap_or(machine.default_disk_gib());
        api::check_disk_grow(disk_gib, machine.default_disk_gib())?;
        let (source_name, base_disk, run_json) = match &req.image {
            None => (
                inner.config.guest.name().to_string(),
                base_disk,
                "{}".into(),
            ),
            Some(image) => (
                image.clone(),
                Some(named_rootfs(inner, image, disk_gib)?),
                run_json_of(inner, image)?,
            ),
        };
        let firewall = req.firewall.clone().unwrap_or_default();
        return Ok(Plan {
            new: NewVm {
                org_id: caller.org_id.clone(),
                name,
                machine_name: machine.as_str().to_string(),
                source_name: Some(source_name),
                source_snapshot_id: None,
                vcpus: machine.vcpus(),
                memory_mib: machine.memory_mib(),
                disk_gib,
                status: VmStatus::Provisioning,
                firewall_json: firewall_json(&firewall)?,
                public_ipv6: allocate_ipv6(inner)?,
                run_json,
            },
            source: MonitorSource::Boot {
                kernel,
                cmdline,
                vcpus: machine.vcpus() as u8,
                memory_mib: machine.memory_mib(),
                base_disk,
            },
        });
    }
    let snapshot_id = req.snapshot_id.map(|u| u.to_string()).unwrap_or_default();
    let snap = inner
        .store
        .get_snapshot(&caller.org_id, &snapshot_id)?
        .ok_or_else(|| {
            ServiceError::BadRequest(format!("snapshotId: no snapshot {snapshot_id}"))
        })?;
    if snap.status != crate::store::SnapshotStatus::Ready {
        return Err(ServiceError::Conflict(format!(
            "snapshot {snapshot_id} is {}, not ready",
            snap.status
        )));
    }
    if !inner.host.can_run_test_guest() {
        return Err(ServiceError::Unavailable(inner.host.describe()));
    }
    let name = named(&snap.name);
    let disk_gib = req.disk_gib.unwrap_or(snap.disk_gib);
    api::check_disk_grow(disk_gib, snap.disk_gib)?;
    let firewall = match &req.firewall {
        Some(policy) => firewall_json(policy)?,
        None => snap.firewall_json.clone(),
    };
    let machine_name = inner
        .store
        .get_vm_any(&snap.vm_id)?
        .map_or_else(|| "custom".to_string(), |vm| vm.machine_name);
    Ok(Plan {
        new: NewVm {
            org_id: caller.org_id.clone(),
            name,
            machine_name,
            source_name: Some(snap.name.clone()),
            source_snapshot_id: Some(snap.id.clone()),
            vcpus: snap.vcpus,
            memory_mib: snap.memory_mib,
            disk_gib,
            status: VmStatus::Provisioning,
            firewall_json: firewall,
            public_ipv6: allocate_ipv6(inner)?,
            run_json: snap.run_json.clone(),
        },
        source: MonitorSource::Restore {
            snapshot: inner.snapshots_dir.join(&snap.id),
        },
    })
}

impl Service {
    /// listVMs.
    pub async fn list_vms(&self, caller: &Caller) -> Result<Vec<VmInstance>, ServiceError> {
        let org = caller.org_id.clone();
        self.db(move |inner| {
            inner
                .store
                .list_vms(&org)?
                .iter()
                .map(convert::vm)
                .collect()
        })
        .await
    }

    /// getVM.
    pub async fn get_vm(&self, caller: &Caller, id: &str) -> Result<VmInstance, ServiceError> {
        let (caller, id) = (caller.clone(), path_id(id)?);
        self.db(move |inner| convert::vm(&find_vm(inner, &caller, &id)?))
            .await
    }

    /// createVM: reserves quota, starts the monitor (boot or restore) and
    /// waits briefly for the agent. Answers 201 with `running`, or with
    /// `provisioning` while the guest is still coming up.
    pub async fn create_vm(
        &self,
        caller: &Caller,
        req: CreateVmRequest,
    ) -> Result<(u16, VmInstance), ServiceError> {
        let caller = caller.clone();
        let row = self
            .blocking(move |inner| {
                let image_in_use = req
                    .image
                    .is_some()
                    .then(|| inner.image_use.read().unwrap_or_else(|e| e.into_inner()));
                let plan = plan(inner, &caller, &req)?;
                let row = inner.store.create_vm_within_quota(plan.new)?;
                // A deleteImage from here on sees this VM as a user.
                drop(image_in_use);
                inner.emit(
                    EventKind::Vm,
                    EventOp::Created,
                    &row.org_id,
                    &convert::vm(&row)?,
                );
                emit_quota(inner, &row.org_id);
                let spec = MonitorSpec {
                    id: row.id.clone(),
                    source: plan.source,
                    disk_gib: row.disk_gib,
                    vsock_cid: row.vsock_cid,
                    limits: Some(crate::supervisor::cgroups::ResourceLimits {
                        vcpus: u8::try_from(row.vcpus).unwrap_or(u8::MAX),
                        memory_mib: row.memory_mib,
                    }),
                    nic: nic(&row, inner.ipv4),
                    firewall_json: Some(row.firewall_json.clone()),
                };
                let started = inner.supervisor.start(&spec).and_then(|pid| {
                    if let Some(nic) = &spec.nic {
                        crate::net::host::configure_tap(&nic.tap, nic.addr, nic.ipv4).map_err(
                            |e| {
                                crate::supervisor::SupervisorError::StartFailed(format!(
                                    "network: {e}"
                                ))
                            },
                        )?;
                    }
                    Ok(pid)
                });
                let recorded = started.map(|pid| inner.store.record_new_vm_monitor(&row.id, pid));
                let deleted_meanwhile = || {
                    inner
                        .store
                        .get_vm_any(&row.id)
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.deleted_at.is_some() || r.status == VmStatus::Deleting)
                };
                let gone = || {
                    ServiceError::Conflict(format!(
                        "VM {} was deleted while it was being created",
                        row.id
                    ))
                };
                match recorded {
                    // From here on the watcher judges this VM by its monitor.
                    Ok(Ok(true)) => Ok(row),
                    Ok(Ok(false)) => {
                        // Deleted while it started: the delete may have
                        // found no monitor to stop, so this one goes now.
                        let _ = inner.supervisor.destroy(&row.id);
                        Err(gone())
                    }
                    // A delete took its directory away while it started.
                    Err(_) if deleted_meanwhile() => {
                        let _ = inner.supervisor.destroy(&row.id);
                        Err(gone())
                    }
                    Ok(Err(e)) => {
                        fail_start(inner, &row, &e);
                        Err(e.into())
                    }
                    Err(e) => {
                        fail_start(inner, &row, &e);
                        Err(ServiceError::Upstream(format!("VM {}: {e}", row.id)))
                    }
                }
            })
            .await?;
        let wait = self.inner.config.agent_wait;
        let vm_nic = nic(&row, self.inner.ipv4);
        let readiness = self
            .inner
            .supervisor
            .wait_agent(&row.id, wait, vm_nic.as_ref())
            .await;
        if matches!(readiness, Readiness::NotReady(_)) {
            // Keep waiting in the background; the VM becomes running or error.
            let (service, id) = (self.clone(), row.id.clone());
            tokio::spawn(async move {
                let readiness = service
                    .inner
                    .supervisor
                    .wait_agent(&id, BACKGROUND_AGENT_WAIT, vm_nic.as_ref())
                    .await;
                service.settle(id, readiness, Some(VmStatus::Error)).await;
            });
        } else {
            self.settle(row.id.clone(), readiness, None).await;
        }
        let id = row.id.clone();
        let vm = self
            .db(move |inner| {
                let row = inner
                    .store
                    .get_vm_any(&id)?
                    .ok_or_else(|| ServiceError::Internal(format!("VM {id} vanished")))?;
                convert::vm(&row)
            })
            .await?;
        Ok((201, vm))
    }

    /// updateVM: rename.
    pub async fn update_vm(
        &self,
        caller: &Caller,
        id: &str,
        req: UpdateVmRequest,
    ) -> Result<VmInstance, ServiceError> {
        api::validate_update_vm(&req)?;
        let (caller, id) = (caller.clone(), path_id(id)?);
        self.db(move |inner| {
            if !inner.store.update_vm_name(&caller.org_id, &id, &req.name)? {
                return Err(ServiceError::NotFound(format!("VM {id} not found")));
            }
            let vm = convert::vm(&find_vm(inner, &caller, &id)?)?;
            inner.emit(EventKind::Vm, EventOp::Updated, &caller.org_id, &vm);
            Ok(vm)
        })
        .await
    }

    /// deleteVM: stops the monitor, removes its files, frees the quota.
    pub async fn delete_vm(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<DeleteResponse, ServiceError> {
        let (caller, id) = (caller.clone(), path_id(id)?);
        self.blocking(move |inner| {
            let row = find_vm(inner, &caller, &id)?;
            inner.forwards.close_vm(&row.id);
            set_status(inner, &row.id, VmStatus::Deleting);
            inner
                .supervisor
                .destroy(&row.id)
                .map_err(|e| ServiceError::Upstream(format!("VM {id}: {e}")))?;
            // A monitor still exiting keeps its cgroups busy: the watcher
            // removes them once it is gone.
            if !inner.supervisor.release(&row.id) {
                inner
                    .to_release
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(row.id.clone());
            }
            inner.store.mark_vm_deleted(&row.id)?;
            let mut vm = convert::vm(&row)?;
            vm.status = VmStatus::Deleting;
            inner.emit(EventKind::Vm, EventOp::Deleted, &caller.org_id, &vm);
            emit_quota(inner, &caller.org_id);
            Ok(DeleteResponse {
                id: row.id,
                deleted: true,
            })
        })
        .await
    }

    async fn store_firewall(
        &self,
        caller: &Caller,
        id: &str,
        change: impl FnOnce(FirewallPolicy) -> Result<FirewallPolicy, ServiceError> + Send + 'static,
    ) -> Result<VmInstance, ServiceError> {
        let (caller, id) = (caller.clone(), path_id(id)?);
        self.blocking(move |inner| {
            // One change of a VM at a time, so what is stored is what is
            // enforced.
            let _turn = inner.firewall_changes.wait_for(&id);
            let row = find_vm(inner, &caller, &id)?;
            let old = convert::vm(&row)?.firewall;
            let policy = change(old.clone())?;
            api::validate_firewall_policy(&policy)?;
            // Enforced first and stored only then: a change the monitor
            // does not take leaves the previous policy stored and in force.
            if inner.supervisor.is_alive(&id)
                && let Err(e) = inner.supervisor.set_firewall(&id, &policy)
            {
                let kept = match inner.supervisor.set_firewall(&id, &old) {
                    Ok(_) => "the previous policy stays in force".to_string(),
                    Err(again) => format!(
                        "the previous policy stays stored; re-applying it failed too ({again})"
                    ),
                };
                return Err(ServiceError::Upstream(format!(
                    "VM {id}: the firewall change was not applied ({e}); {kept}"
                )));
            }
            inner
                .store
                .update_vm_firewall(&caller.org_id, &id, &firewall_json(&policy)?)?;
            let vm = convert::vm(&find_vm(inner, &caller, &id)?)?;
            inner.emit(EventKind::Vm, EventOp::Updated, &caller.org_id, &vm);
            Ok(vm)
        })
        .await
    }

    /// replaceVMFirewall.
    pub async fn replace_vm_firewall(
        &self,
        caller: &Caller,
        id: &str,
        policy: FirewallPolicy,
    ) -> Result<VmInstance, ServiceError> {
        api::validate_firewall_policy(&policy)?;
        self.store_firewall(caller, id, move |_| Ok(policy)).await
    }

    /// patchVMFirewall.
    pub async fn patch_vm_firewall(
        &self,
        caller: &Caller,
        id: &str,
        patch: PatchVmFirewallRequest,
    ) -> Result<VmInstance, ServiceError> {
        api::validate_patch_vm_firewall(&patch)?;
        self.store_firewall(caller, id, move |current| Ok(patch.apply_to(&current)))
            .await
    }

    /// execVM: runs a command through the guest agent.
    pub async fn exec_vm(
        &self,
        caller: &Caller,
        id: &str,
        req: ExecVmRequest,
    ) -> Result<ExecVmResponse, ServiceError> {
        api::validate_exec_vm(&req)?;
        let (caller, id) = (caller.clone(), path_id(id)?);
        let default_timeout = self.inner.config.default_exec_timeout_sec;
        let _slot = self.inner.exec_slots.take(&caller.org_id)?;
        let row = self
            .db(move |inner| {
                let row = find_vm(inner, &caller, &id)?;
                require_running(&row, "exec")?;
                Ok(row)
            })
            .await?;
        let request = with_run_defaults(req.to_agent_request(default_timeout), &row.run_json);
        let timeout = Duration::from_millis(request.timeout_ms.unwrap_or(default_timeout * 1000));
        // The command runs as long as it runs; nothing waits on a thread.
        let result = self
            .inner
            .supervisor
            .exec(&row.id, &request, timeout)
            .await
            .map_err(|e| ServiceError::Upstream(format!("VM {}: {e}", row.id)))?;
        Ok(result.into())
    }
}
