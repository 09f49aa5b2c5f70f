//! Starts, watches and stops the per-VM monitor processes (`fastvmd vmm`).
//!
//! Each VM lives in `<data dir>/vms/<id>/`: its disk, the monitor's sockets
//! and lock, and `monitor.log` (the monitor's stderr). Monitors run in their
//! own session, so they outlive the daemon; a restarted daemon finds them
//! again through their directory lock ([`alive`]).

pub mod cgroups;
pub mod control_client;
mod guest;
mod machines;
mod monitor;
pub(crate) mod netns;
pub mod peer;
mod readiness;

pub use guest::{GuestChoice, GuestImage};
pub use machines::Machines;
pub use monitor::{
    MONITOR_LOG, MonitorSource, MonitorSpec, NicSpec, alive, monitor_pid, monitor_program,
};
pub use readiness::{Readiness, SetupProblem};

use std::path::{Path, PathBuf};
use std::time::Duration;

use fastvm_proto::agent::{ExecRequest, ExecResult};

use crate::agent::AgentError;
use crate::supervisor::control_client::{ControlClient, ControlError};
use crate::vmm::control::{Request, SnapshotInfo, Status};
use crate::vmm::jail::ids::{DEFAULT_ID_RANGE, IdRange};
use crate::vmm::machine::VSOCK_SOCKET;
use cgroups::Cgroups;

/// How long an exec waits for the guest agent to accept its connection.
pub const AGENT_CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Why a monitor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The VM directory or its disk could not be prepared.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        path: String,
        source: std::io::Error,
    },
    /// `--jail-ids` has no ids left for this VM.
    #[error("no jail ids for vsock CID {cid} in --jail-ids {range}: widen the range")]
    NoJailIds { cid: u32, range: IdRange },
    /// The VM's tap or the monitors' network namespace could not be made.
    #[error("{0}")]
    Network(String),
    /// The monitor process could not be started.
    #[error("cannot start the monitor: {0}")]
    Spawn(std::io::Error),
    /// The monitor exited while starting; the text is its last log line.
    #[error("the monitor failed to start: {0}")]
    StartFailed(String),
    /// The monitor did not open its control socket in time.
    #[error("the monitor did not come up within {0:?}")]
    StartTimeout(Duration),
    /// The monitor refused or failed a control request.
    #[error("monitor: {0}")]
    Control(#[from] ControlError),
    /// The guest agent could not be reached or failed.
    #[error("guest agent: {0}")]
    Agent(#[from] AgentError),
}

/// Owns the VM directories under one data dir.
#[derive(Debug, Clone)]
pub struct Supervisor {
    vms_dir: PathBuf,
    monitor_exe: PathBuf,
    jail_ids: IdRange,
    cgroups: std::sync::Arc<Cgroups>,
}

impl Supervisor {
    /// Monitors are `monitor_exe ARGS` (the `fastvm-vmm` program,
    /// [`monitor_program`]), their directories under `vms_dir`.
    pub fn new(vms_dir: PathBuf, monitor_exe: PathBuf) -> Self {
        Supervisor {
            vms_dir,
            monitor_exe,
            jail_ids: DEFAULT_ID_RANGE,
            cgroups: std::sync::Arc::new(Cgroups::Off("not set up".into())),
        }
    }

    /// VMs get cgroups with limits where this host allows (see
    /// [`cgroups`]); those left by VMs that are gone are removed.
    pub fn with_cgroups(mut self, cgroups: Cgroups) -> Self {
        cgroups.remove_stale();
        self.cgroups = std::sync::Arc::new(cgroups);
        self
    }

    /// Why VMs run without cgroup limits, when they do.
    pub fn cgroups_unavailable(&self) -> Option<&str> {
        self.cgroups.unavailable()
    }

    /// Jailed monitors take their uid/gid from `range`.
    pub fn with_jail_ids(mut self, range: IdRange) -> Self {
        self.jail_ids = range;
        self
    }

    /// Where VM directories are.
    pub fn vms_dir(&self) -> &Path {
        &self.vms_dir
    }

    /// The directory of VM `id`.
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.vms_dir.join(id)
    }

    /// Starts the monitor described by `spec` and waits until its control
    /// socket answers. Returns its pid.
    pub fn start(&self, spec: &MonitorSpec) -> Result<u32, SupervisorError> {
        let ids =
            self.jail_ids
                .for_cid(u64::from(spec.vsock_cid))
                .ok_or(SupervisorError::NoJailIds {
                    cid: spec.vsock_cid,
                    range: self.jail_ids,
                })?;
        let cgroups = match spec.limits {
            Some(limits) => {
                self.cgroups
                    .create(&spec.id, limits)
                    .map_err(|e| SupervisorError::Prepare {
                        path: format!("the cgroup of VM {}", spec.id),
                        source: e,
                    })?
            }
            None => Vec::new(),
        };
        let started = monitor::start(
            &self.monitor_exe,
            &self.vm_dir(&spec.id),
            spec,
            ids,
            &cgroups,
        );
        if started.is_err() {
            self.cgroups.remove(&spec.id);
        }
        started
    }

    /// Waits up to `wait` for VM `id`'s guest agent to answer, then sets
    /// the guest's clock and, with `nic`, its network; every failure comes
    /// back in the [`Readiness`] for the caller to log and judge.
    pub async fn wait_agent(&self, id: &str, wait: Duration, nic: Option<&NicSpec>) -> Readiness {
        readiness::wait(&self.vm_dir(id).join(VSOCK_SOCKET), wait, nic).await
    }

    fn control(&self, id: &str) -> Result<ControlClient, SupervisorError> {
        Ok(ControlClient::connect_to_monitor(&self.vm_dir(id))?)
    }

    /// The monitor's status.
    pub fn status(&self, id: &str) -> Result<Status, SupervisorError> {
        Ok(self.control(id)?.call(&Request::Status)?)
    }

    /// Has VM `id` write a snapshot in its directory, moves it to `dir`
    /// and lets the VM run on.
    pub fn snapshot(&self, id: &str, dir: &Path) -> Result<SnapshotInfo, SupervisorError> {
        Ok(self
            .control(id)?
            .snapshot_into(&self.vm_dir(id), dir, true)?)
    }

    /// Replaces the ingress policy of VM `id`'s NIC at once; `Ok(false)`
    /// when the VM has no NIC. Rule descriptions stay with the daemon: the
    /// monitor needs only what it matches on.
    pub fn set_firewall(
        &self,
        id: &str,
        policy: &fastvm_proto::api::FirewallPolicy,
    ) -> Result<bool, SupervisorError> {
        let mut enforced = policy.clone();
        for rule in &mut enforced.ingress {
            rule.description = None;
        }
        match self.control(id)?.firewall(Some(enforced)) {
            Ok(_) => Ok(true),
            Err(ControlError::Refused(e)) if e.contains("no NIC") => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs a command through the guest agent, holding no thread while it
    /// runs. A command still running after `timeout` is abandoned and
    /// reported with `timed_out` set. The agent gets [`AGENT_CONNECT_WAIT`]
    /// to listen (a clone given a new vsock identity re-opens its device
    /// first).
    pub async fn exec_async(
        &self,
        id: &str,
        request: &ExecRequest,
        timeout: Duration,
    ) -> Result<ExecResult, SupervisorError> {
        Ok(self.agent(id).await?.exec(request, timeout).await?)
    }

    /// A connection of its own to VM `id`'s agent, for one stream; the
    /// agent gets [`AGENT_CONNECT_WAIT`] to answer, and must speak streams.
    pub async fn open_stream(
        &self,
        id: &str,
    ) -> Result<crate::agent_stream::AgentStream, SupervisorError> {
        Ok(self.agent(id).await?.into_stream()?)
    }

    /// A new connection to VM `id`'s agent, served by its monitor; the
    /// agent gets [`AGENT_CONNECT_WAIT`] to listen.
    async fn agent(&self, id: &str) -> Result<crate::agent_async::AsyncAgentConn, SupervisorError> {
        let dir = self.vm_dir(id);
        let deadline = tokio::time::Instant::now() + AGENT_CONNECT_WAIT;
        let conn = crate::agent_async::AsyncAgentConn::connect_when_ready(
            &dir.join(VSOCK_SOCKET),
            deadline,
        )
        .await?;
        conn.ensure_monitor(&dir)
            .map_err(|e| SupervisorError::Agent(AgentError::Io(e)))?;
        Ok(conn)
    }

    /// Stops the monitor of VM `id` (control `stop`, then SIGKILL if it
    /// lingers) and removes the VM directory.
    pub fn destroy(&self, id: &str) -> Result<(), SupervisorError> {
        let dir = self.vm_dir(id);
        monitor::stop(&dir, Duration::from_secs(5));
        self.cgroups.remove(id);
        let tap = crate::net::addr::tap_name(id);
        if !crate::net::host::wait_tap_gone(&tap, Duration::from_secs(5)) {
            tracing::warn!("VM {id}: tap {tap} still there 5 s after its monitor ended");
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SupervisorError::Prepare {
                path: dir.display().to_string(),
                source: e,
            }),
        }
    }

    /// True while a monitor holds VM `id`'s directory.
    pub fn is_alive(&self, id: &str) -> bool {
        alive(&self.vm_dir(id))
    }
}
