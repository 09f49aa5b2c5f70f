//! Emulated devices of the monitor and the bus contract they plug into.
//!
//! A device sees accesses relative to its own base address: the bus in
//! [`crate::bus`] finds the device for an address and passes the offset.
//!
//! Every device can be snapshotted: it has a `persist` module with a
//! `save() -> State` and a `restore(args, &State)`, where `State` is a plain
//! serde value (the snapshot's `vmstate` versions and checksums it). A
//! restore that is handed a state it cannot honour returns [`PersistError`];
//! it never panics.

pub mod serial;
pub mod system;
pub mod virtio;

/// Why a device could not be restored from a saved state.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// vm-superio rejected the saved UART state (input FIFO larger than the
    /// UART's), or raising the interrupt the state has pending failed.
    #[error("serial state rejected: {0}")]
    Serial(String),
    /// The saved transport belongs to a different kind of device than the
    /// one it is restored onto (device IDs differ, or the transport state
    /// and the device state name different kinds).
    #[error("state is for virtio device type {saved}, device is type {device}")]
    DeviceMismatch {
        /// Device ID recorded in the state.
        saved: u32,
        /// Device ID of the device handed to restore.
        device: u32,
    },
    /// The saved transport has a different number of queues than the device.
    #[error("state has {saved} queues, device has {device}")]
    QueueCount {
        /// Queues in the state.
        saved: usize,
        /// Queues the device has.
        device: usize,
    },
    /// A saved queue's maximum size differs from the device's.
    #[error("queue {index}: saved maximum size {saved}, device allows {device}")]
    QueueMaxSize {
        /// The queue.
        index: usize,
        /// Maximum size in the state.
        saved: u16,
        /// Maximum size of the device.
        device: u16,
    },
    /// virtio-queue refused to build a queue from its saved state (size not
    /// a power of two, misaligned ring address, ...).
    #[error("queue {index}: saved state rejected: {source}")]
    Queue {
        /// The queue.
        index: usize,
        /// What virtio-queue objected to.
        source: virtio_queue::Error,
    },
    /// A saved queue does not fit in the guest memory it is restored into.
    #[error("queue {0}: not valid in guest memory")]
    InvalidQueue(usize),
    /// The state says the device was activated but holds no ring state for
    /// its queues.
    #[error("activated device saved without its queue states")]
    MissingQueueState,
    /// Re-activating the restored device with its saved queues failed.
    #[error("re-activating the device: {0}")]
    Activate(#[from] virtio::ActivateError),
}

/// A device on the port-I/O or MMIO bus.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset` from the device base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset` from the device base.
    fn write(&mut self, offset: u64, data: &[u8]);
}
