//! Whether a VM's guest agent came up, and what came of what it was then
//! told: the host's wall clock, and the network of a VM with a NIC (so a
//! clone restored from a snapshot does not keep the snapshot's time, MAC or
//! address). Nothing is dropped: every failure comes back to the caller,
//! which decides the VM's status from it.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::NicSpec;
use crate::agent::Applied;
use crate::agent_async::AsyncAgentConn;

/// What [`wait`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The agent answered and took the clock and (with a NIC) the network.
    Ready,
    /// The agent answered, but some of what it was told did not take.
    ReadyWithProblems(Vec<SetupProblem>),
    /// The agent did not answer within the wait; why.
    NotReady(String),
}

/// Something the agent was told that did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupProblem {
    /// The clock was not set (refused, or no answer): the guest keeps its
    /// own time, for a clone the snapshot's. The VM works otherwise.
    Clock(String),
    /// The agent answered that it cannot apply the network, in these words.
    /// It is up and keeps the network it configured itself at boot (from
    /// the kernel command line; the test guest also from its NIC's MAC).
    NetworkRefused(String),
    /// The network was sent but never confirmed (the connection broke, no
    /// answer in time, an answer out of turn): the guest may have none.
    NetworkFailed(String),
}

impl SetupProblem {
    /// True when the VM cannot be taken to work: it was given a network
    /// and nothing confirms it has one.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SetupProblem::NetworkFailed(_))
    }
}

impl std::fmt::Display for SetupProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupProblem::Clock(why) => write!(f, "guest clock not set: {why}"),
            SetupProblem::NetworkRefused(why) => {
                write!(f, "the guest agent refused the network: {why}")
            }
            SetupProblem::NetworkFailed(why) => write!(f, "guest network not applied: {why}"),
        }
    }
}

/// Waits up to `wait` for the agent behind `vsock` (a monitor's
/// `vsock.sock`) to answer a ping, then sets its clock and, with `nic`,
/// its network, each given `wait` to answer. Holds no thread meanwhile.
pub async fn wait(vsock: &Path, wait: Duration, nic: Option<&NicSpec>) -> Readiness {
    let connect = || AsyncAgentConn::connect_when_ready(vsock, Instant::now() + wait);
    let mut conn = match connect().await {
        Ok(conn) => conn,
        Err(e) => return Readiness::NotReady(e.to_string()),
    };
    if let Some(dir) = vsock.parent()
        && let Err(e) = conn.ensure_monitor(dir)
    {
        return Readiness::NotReady(e.to_string());
    }
    if let Err(e) = conn.ping(wait).await {
        return Readiness::NotReady(e.to_string());
    }
    let mut problems = Vec::new();
    match conn.set_clock(SystemTime::now(), wait).await {
        Ok(Applied::Yes) => {}
        Ok(Applied::Refused(why)) => problems.push(SetupProblem::Clock(format!("refused: {why}"))),
        Err(e) => {
            problems.push(SetupProblem::Clock(e.to_string()));
            // The stream may hold a late answer or be broken: the network
            // gets a connection of its own.
            match connect().await {
                Ok(fresh) => conn = fresh,
                Err(e) if nic.is_some() => {
                    problems.push(SetupProblem::NetworkFailed(e.to_string()));
                    return Readiness::ReadyWithProblems(problems);
                }
                Err(_) => {}
            }
        }
    }
    if let Some(nic) = nic {
        let ip6 = format!("{}/128", nic.addr);
        let gw6 = crate::net::addr::GATEWAY.to_string();
        let ipv4 = nic.ipv4.map(|(a, g)| (format!("{a}/32"), g.to_string()));
        match conn
            .set_network(&nic.mac.to_string(), &ip6, &gw6, ipv4, wait)
            .await
        {
            Ok(Applied::Yes) => {}
            Ok(Applied::Refused(why)) => problems.push(SetupProblem::NetworkRefused(why)),
            // Still working on it (a slow guest): not ready yet. The caller
            // waits longer and sends it again; applying it is idempotent.
            Err(e @ crate::agent::AgentError::Timeout(_)) => {
                return Readiness::NotReady(format!("guest network not applied yet: {e}"));
            }
            Err(e) => problems.push(SetupProblem::NetworkFailed(e.to_string())),
        }
    }
    if problems.is_empty() {
        Readiness::Ready
    } else {
        Readiness::ReadyWithProblems(problems)
    }
}

#[cfg(test)]
#[path = "readiness_tests.rs"]
mod tests;
