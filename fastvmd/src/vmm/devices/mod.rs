//! Emulated devices of the monitor and the bus contract they plug into.
//!
//! A device sees accesses relative to its own base address: the bus in
//! [`crate::vmm::bus`] finds the device for an address and passes the offset.

pub mod serial;
pub mod system;
pub mod virtio;

/// A device on the port-I/O or MMIO bus.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset` from the device base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset` from the device base.
    fn write(&mut self, offset: u64, data: &[u8]);
}
