//! smoltcp's view of the virtio-net NIC: a frame in, a frame out.

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use virtio_drivers::device::net::{RxBuffer, VirtIONet};

use crate::devices::Mmio;
use crate::hal::GuestHal;
use crate::println;

/// Virtqueue size of the NIC.
const QUEUE_SIZE: usize = 16;

/// The NIC's driver.
pub type Nic = VirtIONet<GuestHal, Mmio, QUEUE_SIZE>;

/// The NIC as a smoltcp device.
pub struct Phy(pub Nic);

pub struct Rx<'a>(&'a mut Nic, Option<RxBuffer>);
pub struct Tx<'a>(&'a mut Nic);

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        let buf = self.1.take().expect("an RX token holds its buffer");
        let r = f(buf.packet());
        if let Err(e) = self.0.recycle_rx_buffer(buf) {
            println!("net: recycling an RX buffer: {e}");
        }
        r
    }
}

impl Drop for Rx<'_> {
    fn drop(&mut self) {
        if let Some(buf) = self.1.take() {
            let _ = self.0.recycle_rx_buffer(buf);
        }
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.0.new_tx_buffer(len);
        let r = f(buf.packet_mut());
        if let Err(e) = self.0.send(buf) {
            println!("net: send: {e}");
        }
        r
    }
}

impl Device for Phy {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let buf = self.0.receive().ok()?;
        // Both tokens need the NIC; smoltcp uses them one after the other.
        let nic: *mut Nic = &mut self.0;
        // SAFETY: smoltcp consumes the RX token before it uses the TX token
        // (it answers after reading), so the two borrows are never used at once.
        let (a, b) = unsafe { (&mut *nic, &mut *nic) };
        Some((Rx(a, Some(buf)), Tx(b)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        self.0.can_send().then_some(Tx(&mut self.0))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(1);
        caps.medium = Medium::Ethernet;
        caps
    }
}
