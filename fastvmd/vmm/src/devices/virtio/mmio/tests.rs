//! Register-level tests of the virtio-mmio transport with a fake device.

use std::sync::Mutex;

use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::*;

#[derive(Default)]
struct Seen {
    activated: Option<(usize, u64)>,
    notified: Vec<u16>,
    resets: usize,
}

struct Fake {
    seen: Arc<Mutex<Seen>>,
    fail: bool,
}

impl VirtioDevice for Fake {
    fn device_type(&self) -> u32 {
        42
    }
    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | 0b101
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8);
        }
    }
    fn activate(
        &mut self,
        _mem: GuestMemory,
        queues: Vec<Queue>,
        _interrupt: Arc<Interrupt>,
        acked: u64,
    ) -> Result<(), ActivateError> {
        if self.fail {
            return Err(ActivateError::InvalidQueue(0));
        }
        self.seen.lock().unwrap().activated = Some((queues.len(), acked));
        Ok(())
    }
    fn queue_notify(&mut self, index: u16) {
        self.seen.lock().unwrap().notified.push(index);
    }
    fn reset(&mut self) {
        self.seen.lock().unwrap().resets += 1;
    }
    fn pause(&mut self) {}
    fn resume(&mut self) {}
    fn save(&self) -> crate::devices::virtio::VirtioDeviceState {
        crate::devices::virtio::VirtioDeviceState::Block(crate::devices::virtio::blk::BlockState {
            capacity_sectors: 0,
            read_only: false,
            id: [0; crate::devices::virtio::blk::ID_LEN],
        })
    }
    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        Vec::new()
    }
}

fn transport(fail: bool) -> (MmioTransport, Arc<Mutex<Seen>>) {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let dev = Box::new(Fake {
        seen: seen.clone(),
        fail,
    });
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    (MmioTransport::new(mem, dev, irq), seen)
}

fn rd(t: &mut MmioTransport, off: u32) -> u32 {
    let mut b = [0xffu8; 4];
    t.read(u64::from(off), &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u32, v: u32) {
    t.write(u64::from(off), &v.to_le_bytes());
}

/// Runs the driver handshake up to FEATURES_OK and sets up both queues.
fn negotiate(t: &mut MmioTransport) {
    wr(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    wr(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | 2);
    wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr(t, VIRTIO_MMIO_DRIVER_FEATURES, 0b100);
    wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
    wr(t, VIRTIO_MMIO_STATUS, 0b1011);
    assert_eq!(rd(t, VIRTIO_MMIO_STATUS), 0b1011);
    for (i, base) in [(0u32, 0x1000u32), (1, 0x4000)] {
        wr(t, VIRTIO_MMIO_QUEUE_SEL, i);
        wr(t, VIRTIO_MMIO_QUEUE_NUM, 8);
        wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, base);
        wr(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
        wr(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x1000);
        wr(t, VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x2000);
        wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
        assert_eq!(rd(t, VIRTIO_MMIO_QUEUE_READY), 1);
    }
}

#[test]
fn identity_registers() {
    let (mut t, _) = transport(false);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_VERSION), 2);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_DEVICE_ID), 42);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_VENDOR_ID), VENDOR_ID);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 0b101);
    wr(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 1);
    wr(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_DEVICE_FEATURES), 0);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
    wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 8);
    wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 2);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
    // Config space is forwarded with the offset relative to 0x100.
    let mut b = [0u8; 2];
    t.read(0x105, &mut b);
    assert_eq!(b, [5, 6]);
}

#[test]
fn bad_accesses_are_ignored() {
    let (mut t, _) = transport(false);
    let mut b = [0xffu8; 2];
    t.read(0, &mut b);
    assert_eq!(b, [0, 0]);
    assert_eq!(rd(&mut t, 0x2), 0);
    assert_eq!(rd(&mut t, 0xfc - 4), 0);
    t.write(u64::from(VIRTIO_MMIO_STATUS), &[1, 0]);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 0);
    // Features cannot be written before DRIVER, queues before FEATURES_OK.
    wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 5);
    wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(t.acked_features(), 0);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
    // DRIVER_OK without the earlier steps is refused.
    wr(&mut t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_DRIVER_OK);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 0);
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

#[test]
fn handshake_activates_and_notifies() {
    let (mut t, seen) = transport(false);
    negotiate(&mut t);
    assert!(seen.lock().unwrap().activated.is_none());
    wr(&mut t, VIRTIO_MMIO_STATUS, 0b1111);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 0b1111);
    assert!(t.is_activated());
    let acked = (1u64 << 32) | 0b100;
    assert_eq!(seen.lock().unwrap().activated, Some((2, acked)));
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 7);
    assert_eq!(seen.lock().unwrap().notified, vec![1]);
    t.interrupt()
        .trigger(Interrupt::VRING | Interrupt::CONFIG)
        .unwrap();
    assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 3);
    wr(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, 1);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 2);
}

#[test]
fn features_without_version_1_are_refused() {
    let (mut t, _) = transport(false);
    wr(&mut t, VIRTIO_MMIO_STATUS, 1);
    wr(&mut t, VIRTIO_MMIO_STATUS, 3);
    wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 0b100);
    wr(&mut t, VIRTIO_MMIO_STATUS, 0b1011);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 3);
    // Unoffered bits are refused too.
    wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 0b10);
    wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
    wr(&mut t, VIRTIO_MMIO_STATUS, 0b1011);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 3);
}

#[test]
fn reset_clears_state() {
    let (mut t, seen) = transport(false);
    negotiate(&mut t);
    wr(&mut t, VIRTIO_MMIO_STATUS, 0b1111);
    t.interrupt().trigger(Interrupt::VRING).unwrap();
    wr(&mut t, VIRTIO_MMIO_STATUS, 0);
    assert_eq!(seen.lock().unwrap().resets, 1);
    assert!(!t.is_activated());
    assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 0);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
    assert_eq!(t.acked_features(), 0);
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert!(seen.lock().unwrap().notified.is_empty());
    // The device can be brought up again after a reset.
    negotiate(&mut t);
    wr(&mut t, VIRTIO_MMIO_STATUS, 0b1111);
    assert!(t.is_activated());
}

#[test]
fn failed_activation_needs_reset() {
    let (mut t, seen) = transport(true);
    negotiate(&mut t);
    wr(&mut t, VIRTIO_MMIO_STATUS, 0b1111);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 0b1111 | 0x40);
    assert!(!t.is_activated());
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert!(seen.lock().unwrap().notified.is_empty());
    assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), Interrupt::CONFIG);
}

#[test]
fn unready_or_invalid_queue_fails_activation() {
    let (mut t, seen) = transport(false);
    negotiate(&mut t);
    wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 1);
    wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 0);
    // A queue outside guest memory.
    wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 1);
    wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
    wr(&mut t, VIRTIO_MMIO_STATUS, 0b1111);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS) & 0x40, 0x40);
    assert!(seen.lock().unwrap().activated.is_none());
}

#[test]
fn driver_can_stop_a_queue_after_driver_ok() {
    let (mut t, _seen) = transport(false);
    negotiate(&mut t);
    wr(&mut t, VIRTIO_MMIO_STATUS, 0b1111);
    assert!(t.is_activated());
    wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);
    // While ready, its settings are locked.
    wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, 4);
    assert_eq!(t.save().queues[0].size, 8);
    wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 0);
    assert_eq!(
        rd(&mut t, VIRTIO_MMIO_QUEUE_READY),
        0,
        "read back as stopped"
    );
    wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, 0);
    wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0);
    assert_eq!(t.save().queues[0].size, 0);
    assert_eq!(t.save().queues[0].desc, 0);
    // Making it ready again takes a reset and a new handshake.
    wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 0);
    // The other queue is untouched.
    wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 1);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_READY), 1);
}
