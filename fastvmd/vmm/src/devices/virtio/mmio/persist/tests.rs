//! Save -> serde -> restore of the transport with a real virtio-blk device
//! in the middle of its life, and restores that must be refused.

use std::fs;
use std::path::{Path, PathBuf};

use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use virtio_bindings::virtio_config::*;
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::*;
use crate::devices::BusDevice;
use crate::devices::virtio::blk::{Block, SECTOR_SIZE};

const QSIZE: u16 = 16;
const HDR: u64 = 0x4000;
const DATA: u64 = 0x5000;
const STATUS: u64 = 0x6000;
const SECTORS: u64 = 8;

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn irq() -> Arc<Interrupt> {
    Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()))
}

fn rd(t: &mut MmioTransport, off: u32) -> u32 {
    let mut b = [0xffu8; 4];
    t.read(u64::from(off), &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u32, v: u32) {
    t.write(u64::from(off), &v.to_le_bytes());
}

/// Drives the handshake to DRIVER_OK with queue 0 on `mock`.
fn bring_up(t: &mut MmioTransport, mock: &MockSplitQueue<'_, GuestMemory>) {
    wr(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    wr(
        t,
        VIRTIO_MMIO_STATUS,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
    );
    wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(t, VIRTIO_MMIO_DRIVER_FEATURES, 1); // VIRTIO_F_VERSION_1
    wr(t, VIRTIO_MMIO_STATUS, 0b1011);
    wr(t, VIRTIO_MMIO_QUEUE_SEL, 0);
    wr(t, VIRTIO_MMIO_QUEUE_NUM, u32::from(QSIZE));
    let rings = [
        (VIRTIO_MMIO_QUEUE_DESC_LOW, mock.desc_table_addr()),
        (VIRTIO_MMIO_QUEUE_AVAIL_LOW, mock.avail_addr()),
        (VIRTIO_MMIO_QUEUE_USED_LOW, mock.used_addr()),
    ];
    for (reg, addr) in rings {
        wr(t, reg, addr.0 as u32);
        wr(t, reg + 4, (addr.0 >> 32) as u32);
    }
    wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
    wr(t, VIRTIO_MMIO_STATUS, 0b1111);
    assert!(t.is_activated(), "device did not activate");
}

/// Submits one request on `mock` and notifies; returns the used index.
fn request(
    t: &mut MmioTransport,
    mock: &MockSplitQueue<'_, GuestMemory>,
    mem: &GuestMemory,
    ty: u32,
    sector: u64,
) -> u16 {
    mem.write_obj(ty.to_le(), GuestAddress(HDR)).unwrap();
    mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
    mem.write_obj(sector.to_le(), GuestAddress(HDR + 8))
        .unwrap();
    mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
    let data_flags = if ty == VIRTIO_BLK_T_IN {
        VRING_DESC_F_WRITE
    } else {
        0
    };
    let next = VRING_DESC_F_NEXT as u16;
    let descs = [
        SplitDescriptor::new(HDR, 16, next, 1),
        SplitDescriptor::new(DATA, 512, data_flags as u16 | next, 2),
        SplitDescriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
    ];
    let raw: Vec<RawDescriptor> = descs.into_iter().map(RawDescriptor::from).collect();
    mock.add_desc_chains(&raw, 0).unwrap();
    wr(t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
        0,
        "status"
    );
    mock.used().idx().load()
}

fn disk(dir: &Path, name: &str, sectors: u64) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, vec![0x11u8; (sectors * SECTOR_SIZE) as usize]).unwrap();
    path
}

/// An activated blk transport that served a write and a read.
fn used_transport(
    mem: &GuestMemory,
    mock: &MockSplitQueue<'_, GuestMemory>,
    path: &Path,
) -> MmioTransport {
    let block = Block::new(path, false).unwrap();
    let mut t = MmioTransport::new(mem.clone(), Box::new(block), irq());
    bring_up(&mut t, mock);
    mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(request(&mut t, mock, mem, VIRTIO_BLK_T_OUT, 1), 1);
    assert_eq!(request(&mut t, mock, mem, VIRTIO_BLK_T_IN, 0), 2);
    assert_eq!(t.interrupt().status(), Interrupt::VRING);
    t
}

#[test]
fn blk_round_trip_continues_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let mem = memory();
    let mock = MockSplitQueue::create(&mem, GuestAddress(0), QSIZE);
    let path = disk(dir.path(), "disk", SECTORS);
    let mut t = used_transport(&mem, &mock, &path);
    wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, 0);

    t.pause_device();
    let state = t.save();
    assert!(state.activated);
    assert_eq!(state.device_type, 2);
    assert_eq!(state.interrupt_status, Interrupt::VRING);
    assert_eq!(state.queue_states.len(), 1);
    let ring = state.queue_states[0];
    assert_eq!((ring.next_avail, ring.next_used, ring.size), (2, 2, QSIZE));
    assert_eq!(ring.desc_table, mock.desc_table_addr().0);
    let json = serde_json::to_string(&state).unwrap();
    let back: TransportState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    drop(t);

    // The clone: a copy of the disk, grown.
    let clone = dir.path().join("clone");
    fs::copy(&path, &clone).unwrap();
    fs::File::options()
        .write(true)
        .open(&clone)
        .unwrap()
        .set_len(2 * SECTORS * SECTOR_SIZE)
        .unwrap();
    let VirtioDeviceState::Block(bs) = &back.device else {
        panic!("not a block state: {:?}", back.device);
    };
    let block = Block::restore(&clone, bs).unwrap();
    let mut r = MmioTransport::restore(mem.clone(), Box::new(block), irq(), &back).unwrap();
    assert!(r.is_activated());
    assert_eq!(rd(&mut r, VIRTIO_MMIO_STATUS), state.status);
    assert_eq!(rd(&mut r, VIRTIO_MMIO_INTERRUPT_STATUS), Interrupt::VRING);
    assert_eq!(rd(&mut r, VIRTIO_MMIO_QUEUE_READY), 1);
    let mut again = r.save();
    assert_eq!(again.queue_states, state.queue_states);
    again.device = state.device.clone();
    assert_eq!(again, state);

    // A new request completes in the next used slot with the old data.
    mem.write_slice(&[0; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(request(&mut r, &mock, &mem, VIRTIO_BLK_T_IN, 1), 3);
    let elem = mock.used().ring().ref_at(2).unwrap().load();
    assert_eq!(elem.len(), 513);
    let mut buf = [0u8; 512];
    mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    assert_eq!(buf, [0xab; 512]);
    // The grown part is served too.
    assert_eq!(
        request(&mut r, &mock, &mem, VIRTIO_BLK_T_IN, SECTORS + 1),
        4
    );
    assert_eq!(r.save().queue_states[0].next_used, 4);
}

#[test]
fn paused_blk_defers_notifications_until_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mem = memory();
    let mock = MockSplitQueue::create(&mem, GuestAddress(0), QSIZE);
    let path = disk(dir.path(), "disk", SECTORS);
    let block = Block::new(&path, false).unwrap();
    let mut t = MmioTransport::new(mem.clone(), Box::new(block), irq());
    bring_up(&mut t, &mock);
    t.pause_device();
    mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
    let descs = [
        SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1),
        SplitDescriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
    ];
    mem.write_obj(VIRTIO_BLK_T_FLUSH.to_le(), GuestAddress(HDR))
        .unwrap();
    let raw: Vec<RawDescriptor> = descs.into_iter().map(RawDescriptor::from).collect();
    mock.add_desc_chains(&raw, 0).unwrap();
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert_eq!(mock.used().idx().load(), 0, "served while paused");
    t.resume_device();
    assert_eq!(mock.used().idx().load(), 1, "not served on resume");
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
        0,
        "status"
    );
}

/// Restores `state` onto a fresh block device over `path`.
fn restore_blk(path: &Path, state: &TransportState) -> Result<MmioTransport, PersistError> {
    let block = Block::new(path, false).unwrap();
    MmioTransport::restore(memory(), Box::new(block), irq(), state)
}

/// The saved state of a blk transport that served requests on a disk
/// of [`SECTORS`] in `dir`; returns the disk too.
fn saved_used_blk(dir: &Path) -> (PathBuf, TransportState) {
    let mem = memory();
    let mock = MockSplitQueue::create(&mem, GuestAddress(0), QSIZE);
    let path = disk(dir, "disk", SECTORS);
    let mut t = used_transport(&mem, &mock, &path);
    t.pause_device();
    (path, t.save())
}

#[test]
fn bad_states_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, good) = saved_used_blk(dir.path());
    assert!(restore_blk(&path, &good).is_ok());

    let mut s = good.clone();
    s.queue_states[0].size = 3;
    assert!(matches!(
        restore_blk(&path, &s),
        Err(PersistError::Queue { index: 0, .. })
    ));
    let mut s = good.clone();
    s.queue_states[0].used_ring = 0x4000_0000;
    assert!(matches!(
        restore_blk(&path, &s),
        Err(PersistError::InvalidQueue(0))
    ));
    let mut s = good.clone();
    s.queue_states.clear();
    assert!(matches!(
        restore_blk(&path, &s),
        Err(PersistError::MissingQueueState)
    ));
    let mut s = good.clone();
    s.queues.push(s.queues[0].clone());
    assert!(matches!(
        restore_blk(&path, &s),
        Err(PersistError::QueueCount {
            saved: 2,
            device: 1
        })
    ));
    let mut s = good.clone();
    s.queue_states[0].max_size = 128;
    assert!(matches!(
        restore_blk(&path, &s),
        Err(PersistError::QueueMaxSize { index: 0, .. })
    ));
    let mut s = good.clone();
    s.device_type = 19;
    assert!(matches!(
        restore_blk(&path, &s),
        Err(PersistError::DeviceMismatch {
            saved: 19,
            device: 2
        })
    ));

    // A vsock device handed a block transport state.
    let vsock = crate::devices::virtio::vsock::Vsock::new(3, dir.path().join("v.sock")).unwrap();
    let res = MmioTransport::restore(memory(), Box::new(vsock), irq(), &good);
    assert!(matches!(
        res,
        Err(PersistError::DeviceMismatch {
            saved: 2,
            device: 19
        })
    ));
}

#[test]
fn a_disk_restored_larger_is_announced_to_the_driver() {
    let dir = tempfile::tempdir().unwrap();
    let (_, state) = saved_used_blk(dir.path());
    let larger = disk(dir.path(), "larger", SECTORS * 4);
    let mut t = restore_blk(&larger, &state).unwrap();
    let generation = rd(&mut t, VIRTIO_MMIO_CONFIG_GENERATION);
    let capacity = |t: &mut MmioTransport| {
        let mut b = [0u8; 8];
        t.read(u64::from(VIRTIO_MMIO_CONFIG), &mut b);
        u64::from_le_bytes(b)
    };
    assert_eq!(capacity(&mut t), SECTORS * 4, "served at its own size");
    // Nothing pending on the IRQ before the announcement.
    let _ = t.interrupt().irqfd().read();
    t.notify_config_change().unwrap();
    assert_eq!(rd(&mut t, VIRTIO_MMIO_CONFIG_GENERATION), generation + 1);
    assert_ne!(
        rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS) & Interrupt::CONFIG,
        0,
        "configuration-change bit"
    );
    assert_eq!(t.interrupt().irqfd().read().unwrap(), 1, "IRQ raised");
}
