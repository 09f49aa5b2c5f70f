//! Snapshot and restore of virtio-vsock. Connections are not saved: a
//! restored device is a new identity (new CID, fresh listener, no
//! connections); the monitor then sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET so
//! the guest drops its old connections and keeps its listeners. The queues
//! are saved and restored by the transport.

use std::path::PathBuf;

use super::{Vsock, VsockError};

/// The saved state of a vsock device.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VsockState {
    /// The guest CID when the snapshot was taken (informational: a restore
    /// is given its own CID).
    pub guest_cid: u64,
    /// The host port the next host-initiated connection gets; a restored
    /// device continues from here so it does not reuse a port an old
    /// guest-side connection may still know.
    pub next_local_port: u32,
    /// A TRANSPORT_RESET event was waiting for an event-queue buffer.
    pub pending_reset_event: bool,
}

impl Vsock {
    /// The device's state, for a snapshot.
    pub fn save_state(&self) -> VsockState {
        let inner = self.shared.lock();
        VsockState {
            guest_cid: self.guest_cid(),
            next_local_port: inner.muxer.next_local_port(),
            pending_reset_event: inner.muxer.pending_reset_event,
        }
    }

    /// A device for the new `guest_cid` with a fresh listener at `uds_path`
    /// and no connections, continuing host port allocation from `state`
    /// (a port below the first host port is raised to it). Until the guest
    /// sends under `guest_cid`, its packets under the snapshot's CID are
    /// dropped as the old identity's. Not activated: the transport
    /// re-activates it; then send the transport reset.
    pub fn restore(
        guest_cid: u64,
        uds_path: PathBuf,
        state: &VsockState,
    ) -> Result<Vsock, VsockError> {
        let dev = Vsock::new(guest_cid, uds_path)?;
        let mut inner = dev.shared.lock();
        inner.muxer.set_next_local_port(state.next_local_port);
        inner.muxer.pending_reset_event = state.pending_reset_event;
        if state.guest_cid != guest_cid {
            inner.muxer.previous_cid = Some(state.guest_cid);
        }
        drop(inner);
        Ok(dev)
    }
}
