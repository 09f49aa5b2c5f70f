//! The monitor's side of its control socket: the requests and answers
//! ([`fastvm_proto::monitor`], shared with the daemon), what a request acts
//! on ([`ControlTarget`]), and [`server::handle_line`].

pub mod server;

pub use fastvm_proto::monitor::{
    FirewallInfo, MAX_SNAPSHOT_NAME, Request, Response, RunState, SnapshotInfo, Status,
    check_snapshot_name,
};

use fastvm_proto::api::FirewallPolicy;

/// What the control server acts on.
pub trait ControlTarget: Send + Sync {
    /// Current status.
    fn status(&self) -> Status;
    /// Pauses every vCPU; returns once none runs guest code.
    fn pause(&self) -> Result<(), String>;
    /// Lets the vCPUs run again.
    fn resume(&self) -> Result<(), String>;
    /// Asks the monitor to stop the VM and exit.
    fn stop(&self);
    /// Writes a snapshot of the VM into the VM directory as `name`.
    fn snapshot(&self, name: &str, resume: bool) -> Result<SnapshotInfo, String>;
    /// The NIC's policy and counters.
    fn firewall(&self) -> Result<FirewallInfo, String> {
        Err("this VM has no NIC".into())
    }
    /// Replaces the NIC's policy.
    fn set_firewall(&self, _policy: FirewallPolicy) -> Result<FirewallInfo, String> {
        Err("this VM has no NIC".into())
    }
}
