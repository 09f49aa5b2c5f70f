//! Port forwards (an extension of the contract, socket only): a port on
//! the daemon's host (127.0.0.1) whose connections reach a TCP port inside
//! a VM through its agent, so they need no NIC and no firewall rule; the
//! owner's access, not public ingress.

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// The body of `forwardPort` (the VM is `params.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardRequest {
    /// The TCP port inside the VM (on its loopback).
    pub guest_port: u16,
    /// The port on the daemon's host; one free port is picked when absent or 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
}

/// A forward as `forwardPort` and `listForwards` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardInfo {
    /// The forward's id (for `closeForward`).
    pub id: String,
    pub vm_id: String,
    pub guest_port: u16,
    /// Where to connect on the daemon's host, e.g. `127.0.0.1:40213`.
    pub host_address: String,
    /// Connections forwarded so far.
    pub connections: u64,
}

/// `listForwards`' answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardList {
    pub forwards: Vec<ForwardInfo>,
}

impl ForwardRequest {
    /// A guest port must be a port (1 to 65535).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.guest_port == 0 {
            return Err(ValidationError::new("guestPort", "must be 1 to 65535"));
        }
        Ok(())
    }
}
