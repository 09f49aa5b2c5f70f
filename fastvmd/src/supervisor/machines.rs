//! What the service asks of the monitors, as a trait: [`Supervisor`] (real
//! monitor processes) is the one implementation the daemon runs; the
//! service's unit tests put a scripted fake in its place to reach the
//! failure paths (a monitor that dies while starting, a snapshot or a
//! firewall change that fails, an exec that times out, a delete racing a
//! create) that a real guest reaches only by chance.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fastvm_proto::agent::{ExecRequest, ExecResult};
use fastvm_proto::api::FirewallPolicy;
use futures_util::future::BoxFuture;

use super::{MonitorSpec, NicSpec, Readiness, Supervisor, SupervisorError};
use crate::agent_stream::AgentStream;
use crate::vmm::control::SnapshotInfo;

/// The VMs' monitors, as the service uses them.
pub trait Machines: Send + Sync + 'static {
    /// Where VM directories are.
    fn vms_dir(&self) -> &Path;
    /// The directory of VM `id`.
    fn vm_dir(&self, id: &str) -> PathBuf;
    /// Why VMs run without cgroup limits, when they do.
    fn cgroups_unavailable(&self) -> Option<&str>;
    /// Starts VM `spec.id`'s monitor; its pid once it answers.
    fn start(&self, spec: &MonitorSpec) -> Result<u32, SupervisorError>;
    /// Stops VM `id`'s monitor and removes its directory.
    fn destroy(&self, id: &str) -> Result<(), SupervisorError>;
    /// True while a monitor holds VM `id`'s directory.
    fn is_alive(&self, id: &str) -> bool;
    /// Frees what VM `id`'s ended monitor leaves on the host (its cgroups);
    /// false while that is not yet possible (the monitor still exiting).
    fn release(&self, id: &str) -> bool;
    /// The pid of the monitor holding VM `id`'s directory.
    fn monitor_pid(&self, id: &str) -> Option<u32>;
    /// The VMs that have cgroups on the host (a VM's row is stored before
    /// its cgroups are made, so one listed here and not live is a stray:
    /// left busy by a monitor still exiting when its VM was deleted, or by
    /// a daemon that died first).
    fn cgroup_ids(&self) -> Vec<String> {
        Vec::new()
    }
    /// Writes a snapshot of running VM `id` into `dir`.
    fn snapshot(&self, id: &str, dir: &Path) -> Result<SnapshotInfo, SupervisorError>;
    /// Replaces VM `id`'s ingress policy; `Ok(false)` when it has no NIC.
    fn set_firewall(&self, id: &str, policy: &FirewallPolicy) -> Result<bool, SupervisorError>;
    /// Waits for VM `id`'s agent, then sets its clock and network.
    fn wait_agent<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
        nic: Option<&'a NicSpec>,
    ) -> BoxFuture<'a, Readiness>;
    /// Runs a command in VM `id` for at most `timeout`.
    fn exec<'a>(
        &'a self,
        id: &'a str,
        request: &'a ExecRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResult, SupervisorError>>;
    /// A connection of its own to VM `id`'s agent, for one stream.
    fn open_stream<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<AgentStream, SupervisorError>>;
}

impl Machines for Supervisor {
    fn vms_dir(&self) -> &Path {
        Supervisor::vms_dir(self)
    }

    fn vm_dir(&self, id: &str) -> PathBuf {
        Supervisor::vm_dir(self, id)
    }

    fn cgroups_unavailable(&self) -> Option<&str> {
        Supervisor::cgroups_unavailable(self)
    }

    fn start(&self, spec: &MonitorSpec) -> Result<u32, SupervisorError> {
        Supervisor::start(self, spec)
    }

    fn destroy(&self, id: &str) -> Result<(), SupervisorError> {
        Supervisor::destroy(self, id)
    }

    fn is_alive(&self, id: &str) -> bool {
        Supervisor::is_alive(self, id)
    }

    fn monitor_pid(&self, id: &str) -> Option<u32> {
        super::monitor_pid(&Supervisor::vm_dir(self, id))
    }

    fn release(&self, id: &str) -> bool {
        self.cgroups.remove(id)
    }

    fn cgroup_ids(&self) -> Vec<String> {
        self.cgroups.vm_ids()
    }

    fn snapshot(&self, id: &str, dir: &Path) -> Result<SnapshotInfo, SupervisorError> {
        Supervisor::snapshot(self, id, dir)
    }

    fn set_firewall(&self, id: &str, policy: &FirewallPolicy) -> Result<bool, SupervisorError> {
        Supervisor::set_firewall(self, id, policy)
    }

    fn wait_agent<'a>(
        &'a self,
        id: &'a str,
        wait: Duration,
        nic: Option<&'a NicSpec>,
    ) -> BoxFuture<'a, Readiness> {
        Box::pin(Supervisor::wait_agent(self, id, wait, nic))
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        request: &'a ExecRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecResult, SupervisorError>> {
        Box::pin(Supervisor::exec_async(self, id, request, timeout))
    }

    fn open_stream<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<AgentStream, SupervisorError>> {
        Box::pin(Supervisor::open_stream(self, id))
    }
}
