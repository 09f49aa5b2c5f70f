//! Unit tests of virtio-blk, driving the device through a mock split queue.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::Queue;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::{Block, BlockError, SECTOR_SIZE};
use crate::devices::virtio::{GuestMemory, Interrupt, VirtioDevice};

const HDR: u64 = 0x1000;
const DATA: u64 = 0x2000;
const STATUS: u64 = 0xf000;
/// Sectors in the test disk.
const SECTORS: u64 = 8;

/// A descriptor: guest address, length, device-writable.
type Desc = (u64, u32, bool);

struct Rig {
    _dir: tempfile::TempDir,
    path: PathBuf,
    mem: GuestMemory,
    block: Block,
    irq: Arc<Interrupt>,
}

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

impl Rig {
    fn new(read_only: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.img");
        let bytes: Vec<u8> = (0..(SECTORS * SECTOR_SIZE) as usize).map(pattern).collect();
        fs::write(&path, bytes).unwrap();
        let block = Block::new(&path, read_only).unwrap();
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        Rig {
            _dir: dir,
            path,
            mem,
            block,
            irq,
        }
    }

    fn header(&self, ty: u32, sector: u64) {
        self.mem.write_obj(ty.to_le(), GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        self.mem
            .write_obj(sector.to_le(), GuestAddress(HDR + 8))
            .unwrap();
    }

    /// Submits one chain on a fresh queue; returns the used length.
    fn submit(&mut self, descs: &[Desc]) -> u32 {
        self.mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        let mock = MockSplitQueue::create(&self.mem, GuestAddress(0), 16);
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, write))| {
                let mut flags = if write { VRING_DESC_F_WRITE } else { 0 };
                if i + 1 < descs.len() {
                    flags |= VRING_DESC_F_NEXT;
                }
                SplitDescriptor::new(addr, len, flags as u16, i as u16 + 1).into()
            })
            .collect();
        mock.add_desc_chains(&raw, 0).unwrap();
        let queue: Queue = mock.create_queue().unwrap();
        self.block.reset();
        self.block
            .activate(self.mem.clone(), vec![queue], self.irq.clone(), 0)
            .unwrap();
        self.irq.ack(u32::MAX);
        self.block.queue_notify(0);
        assert_eq!(mock.used().idx().load(), 1, "request not completed");
        assert_eq!(self.irq.status(), Interrupt::VRING);
        let elem = mock.used().ring().ref_at(0).unwrap().load();
        assert_eq!(elem.id(), 0);
        elem.len()
    }

    fn status(&self) -> u32 {
        u32::from(self.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap())
    }

    fn guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    fn file(&self) -> Vec<u8> {
        fs::read(&self.path).unwrap()
    }
}

fn req(data: Option<Desc>) -> Vec<Desc> {
    let mut v = vec![(HDR, 16, false)];
    v.extend(data);
    v.push((STATUS, 1, true));
    v
}

#[test]
fn config_and_features() {
    let rig = Rig::new(false);
    let b = &rig.block;
    assert_eq!(b.device_type(), 2);
    assert_eq!(b.queue_max_sizes(), &[256]);
    assert_eq!(b.capacity_sectors(), SECTORS);
    let mut cap = [0u8; 8];
    b.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS);
    let mut seg = [0u8; 4];
    b.read_config(12, &mut seg);
    assert_eq!(u32::from_le_bytes(seg), 254);
    let mut past = [0xffu8; 4];
    b.read_config(14, &mut past);
    assert_eq!(past, [0, 0, 0, 0]);
    b.read_config(u64::MAX, &mut past);
    assert_eq!(past, [0; 4]);
    let f = b.features();
    assert_ne!(f & (1 << VIRTIO_F_VERSION_1), 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(&b.id()[..], b"fastvm-root\0\0\0\0\0\0\0\0\0");
    let ro = Rig::new(true);
    assert_ne!(ro.block.features() & (1 << VIRTIO_BLK_F_RO), 0);
}

#[test]
fn new_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Block::new(&dir.path().join("nope"), false);
    assert!(matches!(missing, Err(BlockError::Open { .. })));
    assert!(matches!(
        Block::new(dir.path(), true),
        Err(BlockError::NotAFile(_))
    ));
    let vm = dir.path().join("vm-1234");
    fs::create_dir(&vm).unwrap();
    fs::write(vm.join("disk"), [0u8; 1000]).unwrap();
    let b = Block::new(&vm.join("disk"), false).unwrap();
    assert_eq!(b.capacity_sectors(), 1);
    assert_eq!(&b.id()[..14], b"fastvm-vm-1234");
}

#[test]
fn read() {
    let mut rig = Rig::new(false);
    rig.header(VIRTIO_BLK_T_IN, 1);
    let used = rig.submit(&req(Some((DATA, 1024, true))));
    assert_eq!(rig.status(), VIRTIO_BLK_S_OK);
    assert_eq!(used, 1025);
    let want: Vec<u8> = (512..1536).map(pattern).collect();
    assert_eq!(rig.guest(DATA, 1024), want);
}

#[test]
fn read_with_data_and_status_in_one_descriptor() {
    let mut rig = Rig::new(false);
    rig.header(VIRTIO_BLK_T_IN, 7);
    let used = rig.submit(&[(HDR, 16, false), (DATA, 513, true)]);
    assert_eq!(used, 513);
    assert_eq!(rig.guest(DATA + 512, 1), [0]);
    let want: Vec<u8> = (7 * 512..8 * 512).map(pattern).collect();
    assert_eq!(rig.guest(DATA, 512), want);
}

#[test]
fn write() {
    let mut rig = Rig::new(false);
    rig.mem
        .write_slice(&[0xab; 1024], GuestAddress(DATA))
        .unwrap();
    rig.header(VIRTIO_BLK_T_OUT, 2);
    let used = rig.submit(&req(Some((DATA, 1024, false))));
    assert_eq!(rig.status(), VIRTIO_BLK_S_OK);
    assert_eq!(used, 1);
    let file = rig.file();
    assert_eq!(file.len(), (SECTORS * SECTOR_SIZE) as usize);
    assert_eq!(&file[1024..2048], &[0xab; 1024][..]);
    assert_eq!(file[1023], pattern(1023));
    assert_eq!(file[2048], pattern(2048));

    // Header and data in one readable descriptor (any layout).
    rig.header(VIRTIO_BLK_T_OUT, 7);
    rig.mem
        .write_slice(&[0xcd; 512], GuestAddress(HDR + 16))
        .unwrap();
    rig.submit(&[(HDR, 16 + 512, false), (STATUS, 1, true)]);
    assert_eq!(rig.status(), VIRTIO_BLK_S_OK);
    assert_eq!(&rig.file()[7 * 512..], &[0xcd; 512][..]);
}

#[test]
fn flush() {
    let mut rig = Rig::new(false);
    rig.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(rig.submit(&req(None)), 1);
    assert_eq!(rig.status(), VIRTIO_BLK_S_OK);
    rig.block.flush().unwrap();
    rig.block.file().sync_data().unwrap();
}

#[test]
fn get_id() {
    let mut rig = Rig::new(false);
    rig.block.set_id("abcdefghijklmnopqrstuvwxyz");
    rig.header(VIRTIO_BLK_T_GET_ID, 0);
    let used = rig.submit(&req(Some((DATA, 20, true))));
    assert_eq!(rig.status(), VIRTIO_BLK_S_OK);
    assert_eq!(used, 21);
    assert_eq!(rig.guest(DATA, 20), b"fastvm-abcdefghijklm");
}

#[test]
fn out_of_range_requests_fail() {
    let mut rig = Rig::new(false);
    rig.mem
        .write_slice(&[0x55; 1024], GuestAddress(DATA))
        .unwrap();
    for (ty, sector, len, write) in [
        (VIRTIO_BLK_T_IN, SECTORS - 1, 1024, true),
        (VIRTIO_BLK_T_IN, SECTORS, 512, true),
        (VIRTIO_BLK_T_IN, u64::MAX, 512, true),
        (VIRTIO_BLK_T_IN, 0, 100, true),
        (VIRTIO_BLK_T_OUT, SECTORS - 1, 1024, false),
        (VIRTIO_BLK_T_OUT, u64::MAX / 256, 512, false),
    ] {
        rig.header(ty, sector);
        let used = rig.submit(&req(Some((DATA, len, write))));
        assert_eq!(rig.status(), VIRTIO_BLK_S_IOERR, "{ty} at {sector}");
        assert_eq!(used, 1);
    }
    assert_eq!(rig.guest(DATA, 4), [0x55; 4]);
    let want: Vec<u8> = (0..(SECTORS * SECTOR_SIZE) as usize).map(pattern).collect();
    assert_eq!(rig.file(), want);
}

#[test]
fn malformed_chains_complete_cleanly() {
    let mut rig = Rig::new(false);
    // Unknown request type.
    rig.header(99, 0);
    assert_eq!(rig.submit(&req(None)), 1);
    assert_eq!(rig.status(), VIRTIO_BLK_S_UNSUPP);
    // Short header.
    rig.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(rig.submit(&[(HDR, 8, false), (STATUS, 1, true)]), 1);
    assert_eq!(rig.status(), VIRTIO_BLK_S_IOERR);
    // No writable status byte at all: completed with nothing written.
    assert_eq!(rig.submit(&[(HDR, 16, false)]), 0);
    assert_eq!(rig.status(), 0xee);
    // A readable buffer outside guest memory.
    assert_eq!(
        rig.submit(&[
            (HDR, 16, false),
            (0x1000_0000, 512, false),
            (STATUS, 1, true)
        ]),
        1
    );
    assert_eq!(rig.status(), VIRTIO_BLK_S_IOERR);
    // A writable buffer outside guest memory.
    assert_eq!(rig.submit(&[(HDR, 16, false), (0x1000_0000, 1, true)]), 0);
}

#[test]
fn read_only_refuses_writes() {
    let mut rig = Rig::new(true);
    rig.mem
        .write_slice(&[0xab; 512], GuestAddress(DATA))
        .unwrap();
    rig.header(VIRTIO_BLK_T_OUT, 0);
    assert_eq!(rig.submit(&req(Some((DATA, 512, false)))), 1);
    assert_eq!(rig.status(), VIRTIO_BLK_S_IOERR);
    assert_eq!(rig.file()[0..4], [0, 1, 2, 3]);
    rig.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(rig.submit(&req(Some((DATA, 512, true)))), 513);
    assert_eq!(rig.status(), VIRTIO_BLK_S_OK);
    assert_eq!(rig.guest(DATA, 4), [0, 1, 2, 3]);
}

#[test]
fn bogus_queue_state_does_not_hang() {
    let mut rig = Rig::new(false);
    // Notify before activation is ignored.
    rig.block.queue_notify(0);
    let mock = MockSplitQueue::create(&rig.mem, GuestAddress(0), 16);
    let queue: Queue = mock.create_queue().unwrap();
    rig.block
        .activate(rig.mem.clone(), vec![queue], rig.irq.clone(), 0)
        .unwrap();
    // The driver claims 100 new entries in a 16-entry ring.
    mock.avail().idx().store(100);
    rig.block.queue_notify(0);
    rig.block.queue_notify(3);
    assert_eq!(mock.used().idx().load(), 0);
    assert_eq!(rig.irq.status(), 0);
}

#[test]
fn through_the_mmio_transport() {
    use crate::devices::BusDevice;
    use crate::devices::virtio::mmio::MmioTransport;
    use virtio_bindings::virtio_mmio::*;

    let rig = Rig::new(false);
    rig.header(VIRTIO_BLK_T_IN, 3);
    let Rig {
        _dir,
        mem,
        block,
        irq,
        ..
    } = rig;
    let mut t = MmioTransport::new(mem.clone(), Box::new(block), irq);
    let rd = |t: &mut MmioTransport, off: u32| {
        let mut b = [0u8; 4];
        t.read(u64::from(off), &mut b);
        u32::from_le_bytes(b)
    };
    let wr = |t: &mut MmioTransport, off: u32, v: u32| t.write(u64::from(off), &v.to_le_bytes());

    assert_eq!(rd(&mut t, VIRTIO_MMIO_DEVICE_ID), 2);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_CONFIG), SECTORS as u32);
    wr(&mut t, VIRTIO_MMIO_STATUS, 1);
    wr(&mut t, VIRTIO_MMIO_STATUS, 3);
    for sel in [0, 1] {
        wr(&mut t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
        let f = rd(&mut t, VIRTIO_MMIO_DEVICE_FEATURES);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, f);
    }
    wr(&mut t, VIRTIO_MMIO_STATUS, 0xb);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 0xb);

    let mock = MockSplitQueue::create(&mem, GuestAddress(0), 16);
    let raw: Vec<RawDescriptor> = [
        SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1),
        SplitDescriptor::new(
            DATA,
            512,
            (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
            2,
        ),
        SplitDescriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
    ]
    .into_iter()
    .map(RawDescriptor::from)
    .collect();
    mock.add_desc_chains(&raw, 0).unwrap();
    assert_eq!(rd(&mut t, VIRTIO_MMIO_QUEUE_NUM_MAX), 256);
    wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, 16);
    wr(
        &mut t,
        VIRTIO_MMIO_QUEUE_DESC_LOW,
        mock.desc_table_addr().0 as u32,
    );
    wr(
        &mut t,
        VIRTIO_MMIO_QUEUE_AVAIL_LOW,
        mock.avail_addr().0 as u32,
    );
    wr(
        &mut t,
        VIRTIO_MMIO_QUEUE_USED_LOW,
        mock.used_addr().0 as u32,
    );
    wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
    wr(&mut t, VIRTIO_MMIO_STATUS, 0xf);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_STATUS), 0xf);
    wr(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);

    assert_eq!(mock.used().idx().load(), 1);
    assert_eq!(mock.used().ring().ref_at(0).unwrap().load().len(), 513);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), 0);
    let mut data = [0u8; 512];
    mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert!(
        data.iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(3 * 512 + i))
    );
    assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), Interrupt::VRING);
    wr(&mut t, VIRTIO_MMIO_INTERRUPT_ACK, Interrupt::VRING);
    assert_eq!(rd(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    assert_eq!(t.interrupt().irqfd().read().unwrap(), 1);
}
