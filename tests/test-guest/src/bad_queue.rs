//! `desc-spam`: the virtio-blk device driven by hand, with requests whose
//! only descriptor points outside guest memory, so the monitor must refuse
//! (and warn about) each one without growing anything. The device is reset
//! before and after; the caller then opens it again with its usual driver.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::string::String;
use core::sync::atomic::{Ordering, fence};

// virtio-mmio (version 2) registers.
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const STATUS: u64 = 0x070;
const QUEUE_DESC: u64 = 0x080;
const QUEUE_DRIVER: u64 = 0x090;
const QUEUE_DEVICE: u64 = 0x0a0;

// Device status bits.
const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;

/// VIRTIO_F_VERSION_1, bit 0 of the second feature word.
const VERSION_1: u32 = 1;
/// VIRTQ_DESC_F_WRITE: a buffer the device writes.
const DESC_WRITE: u16 = 2;
const QUEUE_SIZE: u16 = 8;
/// A guest-physical address far above any RAM a monitor gives a guest.
const OUTSIDE_RAM: u64 = 0x7fff_0000_0000;

// Where the queue's parts sit in its page.
const AVAIL_OFFSET: u64 = 1024;
const USED_OFFSET: u64 = 2048;

fn write(base: u64, offset: u64, value: u32) {
    // SAFETY: `base` is a virtio-mmio window the monitor announced,
    // identity-mapped for user access; register writes have no other effect
    // on guest memory.
    unsafe { core::ptr::write_volatile((base + offset) as *mut u32, value) }
}

fn read(base: u64, offset: u64) -> u32 {
    // SAFETY: as in `write`: a register of an announced MMIO window.
    unsafe { core::ptr::read_volatile((base + offset) as *const u32) }
}

fn write_addr(base: u64, offset: u64, addr: u64) {
    write(base, offset, addr as u32);
    write(base, offset + 4, (addr >> 32) as u32);
}

/// How long the device may take to answer one request.
const ANSWER_MS: u64 = 1000;

/// Posts `requests` bad requests to the virtio-blk device at `base`, one
/// at a time (each notified, and answered before the next), and leaves the
/// device reset.
pub fn post(base: u64, requests: u32) -> Result<(), String> {
    let layout = Layout::from_size_align(4096, 4096).map_err(|_| "bad layout")?;
    // SAFETY: the layout has a non-zero size.
    let page = unsafe { alloc_zeroed(layout) };
    if page.is_null() {
        return Err("out of memory".into());
    }
    let posted = drive(base, page as u64, requests);
    // The device forgets the queue before its page is freed.
    write(base, STATUS, 0);
    // SAFETY: `page` came from `alloc_zeroed` with this layout.
    unsafe { dealloc(page, layout) };
    posted
}

fn drive(base: u64, page: u64, requests: u32) -> Result<(), String> {
    write(base, STATUS, 0);
    write(base, STATUS, ACKNOWLEDGE);
    write(base, STATUS, ACKNOWLEDGE | DRIVER);
    write(base, DRIVER_FEATURES_SEL, 1);
    write(base, DRIVER_FEATURES, VERSION_1);
    write(base, DRIVER_FEATURES_SEL, 0);
    write(base, DRIVER_FEATURES, 0);
    write(base, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    if read(base, STATUS) & FEATURES_OK == 0 {
        return Err("the device refused the features".into());
    }
    write(base, QUEUE_SEL, 0);
    if read(base, QUEUE_NUM_MAX) < u32::from(QUEUE_SIZE) {
        return Err("the device's queue is too small".into());
    }
    write(base, QUEUE_NUM, u32::from(QUEUE_SIZE));
    write_addr(base, QUEUE_DESC, page);
    write_addr(base, QUEUE_DRIVER, page + AVAIL_OFFSET);
    write_addr(base, QUEUE_DEVICE, page + USED_OFFSET);
    write(base, QUEUE_READY, 1);
    write(base, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);

    let desc = page as *mut u8;
    let avail_idx = (page + AVAIL_OFFSET + 2) as *mut u16;
    let avail_ring = (page + AVAIL_OFFSET + 4) as *mut u16;
    let used_idx = (page + USED_OFFSET + 2) as *const u16;
    // SAFETY: every pointer is inside the page `post` allocated, which
    // lives until the device is reset; the fields are naturally aligned.
    unsafe {
        // Descriptor 0: a writable buffer outside guest memory, alone.
        (desc as *mut u64).write_volatile(OUTSIDE_RAM);
        (desc.add(8) as *mut u32).write_volatile(512);
        (desc.add(12) as *mut u16).write_volatile(DESC_WRITE);
        (desc.add(14) as *mut u16).write_volatile(0);
        for i in 0..requests {
            avail_ring
                .add(usize::from(i as u16 % QUEUE_SIZE))
                .write_volatile(0);
            fence(Ordering::SeqCst);
            avail_idx.write_volatile((i as u16).wrapping_add(1));
            fence(Ordering::SeqCst);
            write(base, QUEUE_NOTIFY, 0);
            let deadline = crate::cpu::now() + crate::cpu::ticks(ANSWER_MS);
            while used_idx.read_volatile() != (i as u16).wrapping_add(1) {
                if crate::cpu::now() > deadline {
                    return Err(alloc::format!("request {i} was not answered"));
                }
                core::hint::spin_loop();
            }
        }
    }
    Ok(())
}
