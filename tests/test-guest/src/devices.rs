//! Finding and opening the virtio-mmio devices announced on the command line.

use alloc::format;
use alloc::string::String;
use core::ptr::NonNull;

use test_guest::cmdline::MmioDevice;
use test_guest::commands::{Disk, SECTOR};
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::device::socket::{VirtIOSocket, VsockConnectionManager};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

use crate::hal::GuestHal;

/// The transport every device uses.
pub type Mmio = MmioTransport<'static>;
/// Size of each vsock receive buffer (header included).
pub const VSOCK_RX_BUFFER: usize = 4096;
/// Receive buffer space offered to the host on each connection.
pub const VSOCK_CONN_BUFFER: u32 = 256 * 1024;
/// The vsock driver with its connection bookkeeping.
pub type Vsock = VsockConnectionManager<GuestHal, Mmio, VSOCK_RX_BUFFER>;
/// Offset of the device-specific config space in a virtio-mmio window.
const CONFIG_OFFSET: u64 = 0x100;

/// Opens the transport of the device at `dev`.
pub fn transport(dev: &MmioDevice) -> Result<Mmio, String> {
    let header = NonNull::new(dev.base as *mut VirtIOHeader).ok_or("device at address 0")?;
    let size = usize::try_from(dev.size).map_err(|_| "window too large")?;
    // SAFETY: the monitor announced this window on the command line; it is identity-mapped
    // MMIO that nothing else in the guest touches, and it stays valid forever.
    unsafe { MmioTransport::new(header, size) }.map_err(|e| format!("{e}"))
}

/// The kind of device a transport drives, if the guest uses it.
pub fn kind(t: &Mmio) -> DeviceType {
    t.device_type()
}

/// Initialises the vsock device behind `t`.
pub fn open_vsock(t: Mmio) -> Result<Vsock, String> {
    let driver =
        VirtIOSocket::<GuestHal, Mmio, VSOCK_RX_BUFFER>::new(t).map_err(|e| format!("{e}"))?;
    Ok(VsockConnectionManager::new_with_capacity(
        driver,
        VSOCK_CONN_BUFFER,
    ))
}

/// The guest CID the vsock device at `base` reports now (changes on restore).
pub fn current_cid(base: u64) -> u64 {
    let cfg = (base + CONFIG_OFFSET) as *const u32;
    // SAFETY: reads of the identity-mapped vsock config space, which is always readable;
    // volatile so each read reaches the device.
    let (lo, hi) = unsafe { (cfg.read_volatile(), cfg.add(1).read_volatile()) };
    u64::from(lo) | (u64::from(hi) << 32)
}

/// A virtio-blk device as a [`Disk`].
pub struct BlkDisk {
    driver: VirtIOBlk<GuestHal, Mmio>,
    device: MmioDevice,
}

impl BlkDisk {
    /// Initialises the block device `device`, whose transport is `t`.
    pub fn open(device: &MmioDevice, t: Mmio) -> Result<Self, String> {
        let driver = VirtIOBlk::new(t).map_err(|e| format!("{e}"))?;
        Ok(BlkDisk {
            driver,
            device: *device,
        })
    }
}

impl Disk for BlkDisk {
    fn size_bytes(&self) -> u64 {
        self.driver.capacity() * SECTOR as u64
    }

    fn read_sectors(&mut self, first: u64, buf: &mut [u8]) -> Result<(), String> {
        let first = usize::try_from(first).map_err(|_| "sector out of range")?;
        self.driver
            .read_blocks(first, buf)
            .map_err(|e| format!("I/O error: {e}"))
    }

    fn write_sectors(&mut self, first: u64, buf: &[u8]) -> Result<(), String> {
        let first = usize::try_from(first).map_err(|_| "sector out of range")?;
        self.driver
            .write_blocks(first, buf)
            .map_err(|e| format!("I/O error: {e}"))
    }

    fn post_bad_requests(&mut self, requests: u32) -> Result<(), String> {
        let posted = crate::bad_queue::post(self.device.base, requests);
        // The device was reset under the driver: a new driver takes over.
        // The old one is forgotten, not dropped: its drop would unset the
        // queue the new one uses (its few pages stay allocated).
        let driver = VirtIOBlk::new(transport(&self.device)?).map_err(|e| format!("{e}"))?;
        core::mem::forget(core::mem::replace(&mut self.driver, driver));
        posted
    }
}
