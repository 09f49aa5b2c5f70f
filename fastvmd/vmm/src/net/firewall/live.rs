//! The policy a running device enforces, swappable while frames flow: the
//! receive path takes the compiled filter once per batch of frames; a
//! control request replaces it, and the next batch uses the new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use fastvm_proto::api::FirewallPolicy;

use super::{Filter, PolicyError};

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

/// Frame counters of a NIC.
#[derive(Debug, Default)]
pub struct FrameCounters {
    /// Frames from the host delivered to the guest.
    pub rx_passed: AtomicU64,
    /// Frames from the host the filter dropped.
    pub rx_dropped: AtomicU64,
    /// Frames the guest sent.
    pub tx_frames: AtomicU64,
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
}
