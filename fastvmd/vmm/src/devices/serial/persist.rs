//! Snapshot and restore of the UART: every register plus the pending input
//! FIFO, copied from vm-superio's `SerialState` into a serde type.

use std::io::Write;

use vm_superio::Serial;
use vm_superio::serial::{NoEvents, SerialState};
use vmm_sys_util::eventfd::EventFd;

use super::{IrqTrigger, SerialDevice};
use crate::devices::PersistError;

/// The saved state of the UART (mirrors vm-superio's `SerialState`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SerialDeviceState {
    /// Divisor latch, low byte.
    pub baud_divisor_low: u8,
    /// Divisor latch, high byte.
    pub baud_divisor_high: u8,
    /// Interrupt Enable Register.
    pub interrupt_enable: u8,
    /// Interrupt Identification Register.
    pub interrupt_identification: u8,
    /// Line Control Register.
    pub line_control: u8,
    /// Line Status Register.
    pub line_status: u8,
    /// Modem Control Register.
    pub modem_control: u8,
    /// Modem Status Register.
    pub modem_status: u8,
    /// Scratch Register.
    pub scratch: u8,
    /// Input the guest has not read yet, oldest first.
    pub in_buffer: Vec<u8>,
}

impl From<SerialState> for SerialDeviceState {
    fn from(s: SerialState) -> Self {
        SerialDeviceState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }
}

impl From<&SerialDeviceState> for SerialState {
    fn from(s: &SerialDeviceState) -> Self {
        SerialState {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer.clone(),
        }
    }
}

impl<W: Write + Send> SerialDevice<W> {
    /// The UART's registers and pending input.
    pub fn save(&self) -> SerialDeviceState {
        self.serial.state().into()
    }

    /// A UART in `state` that signals `irq` and writes guest output to `out`.
    /// An interrupt the state has pending (THR empty or data ready, and
    /// enabled) is raised again on `irq`.
    pub fn restore(irq: EventFd, out: W, state: &SerialDeviceState) -> Result<Self, PersistError> {
        let serial = Serial::from_state(&state.into(), IrqTrigger(irq), NoEvents, out)
            .map_err(|e| PersistError::Serial(e.to_string()))?;
        Ok(SerialDevice { serial })
    }
}

#[cfg(test)]
mod tests {
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    use super::*;
    use crate::devices::BusDevice;

    const RBR: u64 = 0;
    const IER: u64 = 1;
    const LCR: u64 = 3;
    const LSR: u64 = 5;
    const SCR: u64 = 7;

    fn read(dev: &mut SerialDevice<Vec<u8>>, off: u64) -> u8 {
        let mut b = [0u8];
        dev.read(off, &mut b);
        b[0]
    }

    #[test]
    fn round_trip_keeps_registers_and_pending_input() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut dev = SerialDevice::new(irq, Vec::new());
        dev.write(LCR, &[0x03]);
        dev.write(SCR, &[0x5a]);
        dev.write(IER, &[0x01]);
        assert_eq!(dev.push_input(b"abc"), 3);

        let state = dev.save();
        assert_eq!(state.in_buffer, b"abc");
        let json = serde_json::to_string(&state).unwrap();
        let back: SerialDeviceState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);

        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq_probe = irq.try_clone().unwrap();
        let mut restored = SerialDevice::restore(irq, Vec::new(), &back).unwrap();
        // Data ready with the RDA interrupt enabled: raised again at restore.
        assert_eq!(irq_probe.read().unwrap(), 1);
        assert_eq!(restored.save(), state);
        assert_eq!(read(&mut restored, LCR), 0x03);
        assert_eq!(read(&mut restored, SCR), 0x5a);
        assert_eq!(read(&mut restored, IER), 0x01);
        assert_eq!(read(&mut restored, LSR) & 1, 1, "data ready");
        assert_eq!(read(&mut restored, RBR), b'a');
        assert_eq!(read(&mut restored, RBR), b'b');
        assert_eq!(read(&mut restored, RBR), b'c');
        assert_eq!(read(&mut restored, LSR) & 1, 0, "input drained");
        restored.write(RBR, b"out");
        assert_eq!(restored.serial.writer(), b"out");
    }

    #[test]
    fn oversized_fifo_is_refused() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut state = SerialDevice::new(irq, Vec::new()).save();
        state.in_buffer = vec![0; 4096];
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let res = SerialDevice::restore(irq, Vec::new(), &state);
        assert!(matches!(res, Err(PersistError::Serial(_))));
    }
}
