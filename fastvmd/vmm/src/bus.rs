//! Address buses: port I/O and MMIO accesses from vCPUs are routed to the
//! device whose range holds the address, with the offset into that range.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::devices::BusDevice;

/// A device shared between vCPU threads (and possibly a backend thread).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Why a device could not be placed on a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The new range overlaps a device already on the bus.
    #[error("range {base:#x}+{len:#x} overlaps another device")]
    Overlap { base: u64, len: u64 },
    /// A zero-length range.
    #[error("empty range at {0:#x}")]
    Empty(u64),
}

/// A set of non-overlapping address ranges, each with its device.
#[derive(Default)]
pub struct Bus {
    ranges: BTreeMap<u64, (u64, SharedDevice)>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Bus::default()
    }

    /// Places `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::Empty(base));
        }
        let end = base
            .checked_add(len)
            .ok_or(BusError::Overlap { base, len })?;
        if let Some((b, (l, _))) = self.ranges.range(..end).next_back()
            && b + l > base
        {
            return Err(BusError::Overlap { base, len });
        }
        self.ranges.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (base, (len, dev)) = self.ranges.range(..=addr).next_back()?;
        (addr - base < *len).then_some((addr - base, dev))
    }

    /// Routes a read; false when no device is there (the data is left as all ones).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Routes a write; false when no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                lock(dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, carrying on if a thread panicked while holding it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_and_refuses_overlap() {
        let dev = Arc::new(Mutex::new(Recorder(Vec::new())));
        let mut bus = Bus::new();
        bus.insert(0x100, 0x10, dev.clone()).unwrap();
        assert!(bus.insert(0x108, 0x10, dev.clone()).is_err());
        assert!(bus.insert(0xf8, 0x10, dev.clone()).is_err());
        bus.insert(0x110, 0x10, dev.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x105, &mut b));
        assert_eq!(b[0], 5);
        assert!(!bus.read(0x120, &mut b));
        assert_eq!(b[0], 0xff);
        assert!(bus.write(0x10f, &[9]));
        assert_eq!(lock(&dev).0, vec![(0xf, vec![9])]);
    }
}
