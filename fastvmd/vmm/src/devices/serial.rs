//! The 8250 UART at COM1 (vm-superio), wired to the console hub for output
//! and to an irqfd for its interrupt. Snapshot support is in `persist`
//! ([`SerialDeviceState`], [`SerialDevice::save`], [`SerialDevice::restore`]).

mod persist;

use std::io::Write;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

pub use persist::SerialDeviceState;

/// Raises the serial IRQ through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The UART on the port-I/O bus; `W` receives every byte the guest sends.
pub struct SerialDevice<W: Write + Send> {
    serial: Serial<IrqTrigger, vm_superio::serial::NoEvents, W>,
}

impl<W: Write + Send> SerialDevice<W> {
    /// A UART that signals `irq` and writes guest output to `out`.
    pub fn new(irq: EventFd, out: W) -> Self {
        SerialDevice {
            serial: Serial::new(IrqTrigger(irq), out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the FIFO.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.serial.fifo_capacity().min(bytes.len());
        if room == 0 {
            return 0;
        }
        self.serial.enqueue_raw_bytes(&bytes[..room]).unwrap_or(0)
    }
}

impl<W: Write + Send> BusDevice for SerialDevice<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 1 && offset < 8 {
            data[0] = self.serial.read(offset as u8);
        } else {
            data.fill(0xff);
        }
    }

    /// Byte writes, one at a time; a string write (`rep outsb`, which KVM
    /// hands over as one exit with every byte) is a run of byte writes.
    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= 8 {
            return;
        }
        for byte in data {
            if let Err(e) = self.serial.write(offset as u8, *byte) {
                tracing::warn!("serial write: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THR: u64 = 0;
    const LSR: u64 = 5;

    #[test]
    fn output_reaches_the_writer_and_input_is_readable() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq, Vec::new());
        for b in b"hi" {
            dev.write(THR, &[*b]);
        }
        assert_eq!(dev.serial.writer(), b"hi");
        let mut lsr = [0u8];
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 1, 0, "no data ready yet");
        assert_eq!(dev.push_input(b"x"), 1);
        dev.read(LSR, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        dev.read(THR, &mut rbr);
        assert_eq!(rbr[0], b'x');
    }

    #[test]
    fn string_writes_are_byte_runs() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq, Vec::new());
        dev.write(THR, b"line\n");
        assert_eq!(dev.serial.writer(), b"line\n");
        dev.write(9, b"ignored");
        assert_eq!(dev.serial.writer(), b"line\n");
    }

    #[test]
    fn fifo_pushback_when_full() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq, Vec::new());
        let big = [b'a'; 200];
        let first = dev.push_input(&big);
        assert!(first > 0 && first < big.len());
        assert_eq!(dev.push_input(&big), 0);
    }
}
