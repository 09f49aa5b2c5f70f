//! Saved state shared by the virtio devices and the transport: the
//! per-device state enum and a serde mirror of virtio-queue's `QueueState`.

use virtio_queue::QueueState;

use super::blk::BlockState;
use super::net::NetState;
use super::vsock::VsockState;

/// The saved state of one virtio device, by kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum VirtioDeviceState {
    /// A virtio-blk device.
    Block(BlockState),
    /// A virtio-vsock device.
    Vsock(VsockState),
    /// A virtio-net device.
    Net(NetState),
}

impl VirtioDeviceState {
    /// The virtio device ID of the kind of device this state belongs to.
    pub fn device_type(&self) -> u32 {
        match self {
            VirtioDeviceState::Block(_) => virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK,
            VirtioDeviceState::Vsock(_) => virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK,
            VirtioDeviceState::Net(_) => virtio_bindings::virtio_ids::VIRTIO_ID_NET,
        }
    }
}

/// The saved ring state of one virtqueue (virtio-queue's `QueueState`, which
/// is not serde): untrusted until `Queue::try_from` accepted it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedQueueState {
    /// Largest size the device offers.
    pub max_size: u16,
    /// Next available-ring entry the device will pop.
    pub next_avail: u16,
    /// Next used-ring entry the device will fill.
    pub next_used: u16,
    /// VIRTIO_F_RING_EVENT_IDX was negotiated.
    pub event_idx_enabled: bool,
    /// Queue size the driver chose.
    pub size: u16,
    /// The driver marked the queue ready.
    pub ready: bool,
    /// Guest address of the descriptor table.
    pub desc_table: u64,
    /// Guest address of the available (driver) ring.
    pub avail_ring: u64,
    /// Guest address of the used (device) ring.
    pub used_ring: u64,
}

impl From<QueueState> for SavedQueueState {
    fn from(q: QueueState) -> Self {
        SavedQueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<SavedQueueState> for QueueState {
    fn from(q: SavedQueueState) -> Self {
        QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}
