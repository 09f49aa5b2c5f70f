//! Snapshot and restore of the machine-control ports. Both are stateless:
//! their saved states are empty on purpose, so that a snapshot names every
//! device and none saves nothing by accident.

use std::sync::mpsc::Sender;

use super::{I8042, PowerPort};
use crate::exit::ExitEvent;

/// No state: the i8042 has no keyboard, its status register always reads
/// idle, and the reset command acts at once; only the event channel (given
/// again at restore) is kept.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {}

/// No state: the power-off port acts at once on the write that powers off;
/// only the event channel (given again at restore) is kept.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PowerPortState {}

impl I8042 {
    /// The (empty) state of the i8042.
    pub fn save(&self) -> I8042State {
        I8042State {}
    }

    /// An i8042 restored from `state` that reports resets on `events`.
    pub fn restore(events: Sender<ExitEvent>, state: &I8042State) -> Self {
        let I8042State {} = state;
        I8042::new(events)
    }
}

impl PowerPort {
    /// The (empty) state of the power-off port.
    pub fn save(&self) -> PowerPortState {
        PowerPortState {}
    }

    /// A power port restored from `state` that reports power-off on `events`.
    pub fn restore(events: Sender<ExitEvent>, state: &PowerPortState) -> Self {
        let PowerPortState {} = state;
        PowerPort::new(events)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;

    use super::*;
    use crate::devices::BusDevice;
    use crate::exit::GuestRequest;
    use crate::layout::POWER_OFF_VALUE;

    #[test]
    fn restored_ports_still_report() {
        let (tx, rx) = channel();
        let kbd_state = I8042::new(tx.clone()).save();
        let power_state = PowerPort::new(tx.clone()).save();
        let json = serde_json::to_string(&(&kbd_state, &power_state)).unwrap();
        let (k, p): (I8042State, PowerPortState) = serde_json::from_str(&json).unwrap();
        assert_eq!((&k, &p), (&kbd_state, &power_state));
        let mut kbd = I8042::restore(tx.clone(), &k);
        kbd.write(4, &[0xfe]);
        assert_eq!(rx.try_recv(), Ok(ExitEvent::Guest(GuestRequest::Reboot)));
        let mut power = PowerPort::restore(tx, &p);
        power.write(0, &POWER_OFF_VALUE.to_le_bytes());
        assert_eq!(rx.try_recv(), Ok(ExitEvent::Guest(GuestRequest::PowerOff)));
    }
}
