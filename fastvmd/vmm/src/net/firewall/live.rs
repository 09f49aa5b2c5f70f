//! The policy a running device enforces, swappable while frames flow: the
//! receive path takes the compiled filter once per batch of frames; a
//! control request replaces it, and the next batch uses the new one. Also
//! the NIC's counters, which the monitor reads without the device's lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use fastvm_proto::api::FirewallPolicy;

use super::{Filter, FlowTable, PolicyError};

#[derive(Debug)]
struct Active {
    policy: FirewallPolicy,
    filter: Arc<Filter>,
}

/// A policy shared by a device and whoever changes it; a cheap clone.
#[derive(Debug, Clone)]
pub struct LivePolicy(Arc<RwLock<Active>>);

impl LivePolicy {
    /// Compiles `policy` (refused when it does not compile).
    pub fn new(policy: FirewallPolicy) -> Result<LivePolicy, PolicyError> {
        let filter = Arc::new(Filter::compile(&policy)?);
        Ok(LivePolicy(Arc::new(RwLock::new(Active { policy, filter }))))
    }

    /// Replaces the policy; frames judged from now on use it.
    pub fn set(&self, policy: FirewallPolicy) -> Result<(), PolicyError> {
        let filter = Arc::new(Filter::compile(&policy)?);
        let mut active = self.0.write().unwrap_or_else(|e| e.into_inner());
        *active = Active { policy, filter };
        Ok(())
    }

    /// The policy in force.
    pub fn policy(&self) -> FirewallPolicy {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .policy
            .clone()
    }

    /// The compiled filter in force.
    pub fn filter(&self) -> Arc<Filter> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .filter
            .clone()
    }
}

/// Frame and flow counters of a NIC. The flow counters are copies of the
/// device's [`FlowTable`] numbers, published after each batch of frames.
#[derive(Debug, Default)]
pub struct FrameCounters {
    /// Frames from the host delivered to the guest.
    pub rx_passed: AtomicU64,
    /// Frames from the host the filter dropped.
    pub rx_dropped: AtomicU64,
    /// Frames the guest sent.
    pub tx_frames: AtomicU64,
    /// Flows in the table.
    pub flows_live: AtomicU64,
    /// Flows evicted while live to make room.
    pub flows_evicted: AtomicU64,
    /// Frames from the host admitted as replies to a flow.
    pub rx_replies: AtomicU64,
}

/// The flow counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub live: u64,
    pub evicted: u64,
    pub replies: u64,
}

impl FrameCounters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(rx_passed, rx_dropped, tx_frames)` now.
    pub fn read(&self) -> (u64, u64, u64) {
        (
            self.rx_passed.load(Ordering::Relaxed),
            self.rx_dropped.load(Ordering::Relaxed),
            self.tx_frames.load(Ordering::Relaxed),
        )
    }

    /// Copies the numbers of `flows` into the flow counters.
    pub fn publish_flows(&self, flows: &FlowTable) {
        let stats = flows.stats();
        self.flows_live.store(flows.len() as u64, Ordering::Relaxed);
        self.flows_evicted.store(stats.evicted, Ordering::Relaxed);
        self.rx_replies.store(stats.replies, Ordering::Relaxed);
    }

    /// The flow counters now.
    pub fn read_flows(&self) -> FlowCounts {
        FlowCounts {
            live: self.flows_live.load(Ordering::Relaxed),
            evicted: self.flows_evicted.load(Ordering::Relaxed),
            replies: self.rx_replies.load(Ordering::Relaxed),
        }
    }
}
