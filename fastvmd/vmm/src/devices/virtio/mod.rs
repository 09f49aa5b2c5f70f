//! Virtio devices over the virtio-mmio transport (virtio 1.x, "modern").
//!
//! The contract between the transport ([`mmio`]) and a device ([`blk`],
//! [`vsock`], [`net`]): the transport owns the registers and queue configuration; once
//! the driver sets DRIVER_OK it hands the ready queues to
//! [`VirtioDevice::activate`], and forwards every QueueNotify write to
//! [`VirtioDevice::queue_notify`]. A device signals the guest through its
//! shared [`Interrupt`].
//!
//! Snapshots: [`VirtioDevice::pause`] quiesces a device (no guest memory or
//! queue access until [`VirtioDevice::resume`]), [`VirtioDevice::save`]
//! returns its [`VirtioDeviceState`], and the transport saves the ring state
//! of the queues the device holds ([`VirtioDevice::queue_states`]). Restore
//! builds the device from its state first (`Block::restore`,
//! `Vsock::restore`), then the transport re-activates it with its saved
//! queues ([`mmio::MmioTransport::restore`]).

pub mod blk;
pub mod fuzz_queues;
pub mod mmio;
pub mod net;
mod persist;
pub mod vsock;

pub use persist::{SavedQueueState, VirtioDeviceState};

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::wakeup::Wakeup;

/// Guest memory as every device sees it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Size of one virtio-mmio register window.
pub const MMIO_WINDOW: u64 = 0x1000;

/// Why a device could not start with the queues the driver configured.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver enabled a different number of queues than the device has.
    #[error("expected {expected} queues, driver configured {got}")]
    QueueCount { expected: usize, got: usize },
    /// A queue the device needs is not valid in guest memory.
    #[error("queue {0} is not valid")]
    InvalidQueue(usize),
    /// The device's backend (file, socket, thread) failed to start.
    #[error("backend: {0}")]
    Backend(#[from] io::Error),
}

/// An epoll set holding a new eventfd (readable under `token`): the "kick"
/// that wakes a device's backend thread.
pub fn epoll_with_kick(token: u64) -> io::Result<(Epoll, EventFd)> {
    let epoll = Epoll::new()?;
    let kick = EventFd::new(EFD_NONBLOCK)?;
    epoll.ctl(
        ControlOperation::Add,
        kick.as_raw_fd(),
        EpollEvent::new(EventSet::IN, token),
    )?;
    Ok((epoll, kick))
}

/// Copies config space bytes from `offset` into `data`; bytes past the end
/// of `config` read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i as u64)
            .and_then(|a| usize::try_from(a).ok())
            .and_then(|a| config.get(a).copied())
            .unwrap_or(0);
    }
}

/// The `N` queues the driver configured at activation, each valid in `mem`.
pub fn take_queues<const N: usize>(
    mem: &GuestMemory,
    queues: Vec<virtio_queue::Queue>,
) -> Result<[virtio_queue::Queue; N], ActivateError> {
    use virtio_queue::QueueT;
    let got = queues.len();
    if got != N {
        return Err(ActivateError::QueueCount { expected: N, got });
    }
    if let Some(i) = queues.iter().position(|q| !q.is_valid(mem)) {
        return Err(ActivateError::InvalidQueue(i));
    }
    queues
        .try_into()
        .map_err(|_| ActivateError::QueueCount { expected: N, got })
}

/// The interrupt line of one device: the InterruptStatus bits plus the irqfd
/// that raises the guest IRQ through the in-kernel irqchip.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
    /// Rung with every interrupt, so an idle vCPU notices it.
    wakeup: Option<Arc<Wakeup>>,
}

impl Interrupt {
    /// "Used buffer notification" bit of InterruptStatus.
    pub const VRING: u32 = 1;
    /// "Configuration change notification" bit of InterruptStatus.
    pub const CONFIG: u32 = 2;

    /// An interrupt that signals `irqfd` (registered with KVM by the caller).
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            irqfd,
            wakeup: None,
        }
    }

    /// The same interrupt, also ringing `wakeup` whenever it fires.
    pub fn waking(mut self, wakeup: Arc<Wakeup>) -> Self {
        self.wakeup = Some(wakeup);
        self
    }

    /// Sets `bits` in InterruptStatus and raises the IRQ.
    pub fn trigger(&self, bits: u32) -> io::Result<()> {
        self.status.fetch_or(bits, Ordering::SeqCst);
        let raised = self.irqfd.write(1);
        if let Some(wakeup) = &self.wakeup {
            wakeup.ring();
        }
        raised
    }

    /// Current InterruptStatus.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver acknowledged `bits` (InterruptACK).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Sets InterruptStatus to `bits` without raising the IRQ (restore: an
    /// IRQ still pending in the guest is part of the saved irqchip state).
    pub fn restore_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
    }

    /// The eventfd behind the IRQ.
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// A virtio device behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// Virtio device ID (2 = block, 19 = vsock).
    fn device_type(&self) -> u32;
    /// Feature bits offered to the driver, VIRTIO_F_VERSION_1 included.
    fn features(&self) -> u64;
    /// Largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (ignored by default:
    /// neither block nor vsock has writable configuration).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK: start serving `queues`.
    fn activate(
        &mut self,
        mem: GuestMemory,
        queues: Vec<virtio_queue::Queue>,
        interrupt: Arc<Interrupt>,
        acked_features: u64,
    ) -> Result<(), ActivateError>;
    /// The driver wrote `index` to QueueNotify.
    fn queue_notify(&mut self, index: u16);
    /// The driver reset the device (status 0): drop queues, keep backend config.
    fn reset(&mut self);
    /// Quiesces the device for a snapshot: once this returns, neither the
    /// device nor any backend thread of it touches guest memory or the
    /// queues (no descriptor popped, nothing completed, no interrupt) until
    /// [`resume`](Self::resume). Notifications that arrive meanwhile are
    /// served on resume. Pausing a paused device does nothing.
    fn pause(&mut self);
    /// Ends a [`pause`](Self::pause) and serves whatever arrived meanwhile.
    /// Resuming a running device does nothing.
    fn resume(&mut self);
    /// The device's own state (not its queues: see
    /// [`queue_states`](Self::queue_states)). Consistent when paused.
    fn save(&self) -> VirtioDeviceState;
    /// The ring state of the queues the device was activated with, in queue
    /// order; empty when not activated. Consistent when paused.
    fn queue_states(&self) -> Vec<virtio_queue::QueueState>;
}
