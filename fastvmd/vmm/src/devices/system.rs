//! Machine-control ports: the i8042 controller (its reset command reboots
//! the guest) and the power-off port. Neither has state; `persist` makes
//! that explicit for snapshots.

mod persist;

use std::sync::mpsc::Sender;

use super::BusDevice;
use crate::exit::{ExitEvent, GuestRequest};
use crate::layout::POWER_OFF_VALUE;

pub use persist::{I8042State, PowerPortState};

/// Minimal i8042 at ports 0x60-0x64: no keyboard, status always idle, and
/// command 0xfe (pulse reset line) reboots.
pub struct I8042 {
    events: Sender<ExitEvent>,
    /// A reset is reported once: a guest writing the command in a loop
    /// cannot queue events faster than the monitor stops.
    reported: bool,
}

const I8042_CMD_OFFSET: u64 = 4;
const I8042_CMD_RESET: u8 = 0xfe;

impl I8042 {
    /// An i8042 that reports resets on `events`.
    pub fn new(events: Sender<ExitEvent>) -> Self {
        I8042 {
            events,
            reported: false,
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == I8042_CMD_OFFSET && data.first() == Some(&I8042_CMD_RESET) && !self.reported {
            self.reported = true;
            let _ = self.events.send(ExitEvent::Guest(GuestRequest::Reboot));
        }
    }
}

/// The power-off port: a 16-bit write of `POWER_OFF_VALUE` powers off.
pub struct PowerPort {
    events: Sender<ExitEvent>,
    /// Power-off is reported once (see [`I8042`]).
    reported: bool,
}

impl PowerPort {
    /// A power port that reports power-off on `events`.
    pub fn new(events: Sender<ExitEvent>) -> Self {
        PowerPort {
            events,
            reported: false,
        }
    }
}

impl BusDevice for PowerPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0
            && data.len() == 2
            && u16::from_le_bytes([data[0], data[1]]) == POWER_OFF_VALUE
            && !self.reported
        {
            self.reported = true;
            let _ = self.events.send(ExitEvent::Guest(GuestRequest::PowerOff));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn reset_and_power_off_are_reported_other_writes_ignored() {
        let (tx, rx) = channel();
        let mut kbd = I8042::new(tx.clone());
        kbd.write(0, &[0xfe]);
        kbd.write(4, &[0xaa]);
        assert!(rx.try_recv().is_err());
        kbd.write(4, &[0xfe]);
        assert_eq!(rx.try_recv(), Ok(ExitEvent::Guest(GuestRequest::Reboot)));
        let mut power = PowerPort::new(tx);
        power.write(0, &[0x00, 0x10]);
        assert!(rx.try_recv().is_err());
        power.write(0, &POWER_OFF_VALUE.to_le_bytes());
        assert_eq!(rx.try_recv(), Ok(ExitEvent::Guest(GuestRequest::PowerOff)));
        // A guest repeating them queues nothing more.
        for _ in 0..1000 {
            power.write(0, &POWER_OFF_VALUE.to_le_bytes());
            kbd.write(4, &[0xfe]);
        }
        assert!(rx.try_recv().is_err());
    }
}
