//! Snapshot and restore of virtio-net: the MAC and the firewall policy.
//! Frames in flight are not saved (a wire loses them too). A restored
//! device is usually a clone with its own tap and MAC; its policy is the
//! snapshot's unless the clone is given one. The firewall's flows are not
//! saved either: a restored device starts with an empty flow table (a
//! clone has a new identity), and the guest's next frames open flows
//! again.

use fastvm_proto::api::FirewallPolicy;

use super::{Net, NetError};
use crate::net::addr::Mac;
use crate::net::firewall::LivePolicy;
use crate::net::tap::Tap;

/// The saved state of a net device (its queues are saved by the transport).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetState {
    /// The MAC the guest saw.
    pub mac: [u8; 6],
    /// The firewall policy in force, as the API's JSON.
    pub policy_json: String,
}

impl Net {
    /// The device's state, for a snapshot.
    pub fn save_state(&self) -> NetState {
        NetState {
            mac: self.mac().0,
            policy_json: serde_json::to_string(&self.policy().policy()).unwrap_or_default(),
        }
    }

    /// The policy saved in `state`.
    pub fn saved_policy(state: &NetState) -> Result<FirewallPolicy, String> {
        serde_json::from_str(&state.policy_json).map_err(|e| format!("saved firewall policy: {e}"))
    }

    /// A device for the clone: `mac` (the saved one when `None`), `tap`,
    /// and `policy` (the saved one when `None`). Not activated: the
    /// transport re-activates it.
    pub fn restore(
        state: &NetState,
        mac: Option<Mac>,
        tap: Option<Tap>,
        policy: Option<FirewallPolicy>,
    ) -> Result<Net, String> {
        let policy = match policy {
            Some(p) => p,
            None => Net::saved_policy(state)?,
        };
        let live = LivePolicy::new(policy).map_err(|e| NetError::from(e).to_string())?;
        Net::new(mac.unwrap_or(Mac(state.mac)), tap, live).map_err(|e| e.to_string())
    }
}
