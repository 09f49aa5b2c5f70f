//! A virtio-mmio device driven by a hostile guest: the guest's memory
//! (descriptor table, rings, buffers) and its register accesses come from
//! the fuzzer. The harness does the driver's handshake with the queue at
//! fixed addresses, so the fuzzer spends its time on what a guest controls.

use std::sync::OnceLock;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK,
};
use virtio_bindings::virtio_mmio::*;

use crate::vmm::devices::BusDevice;
use crate::vmm::devices::virtio::VirtioDevice;
use crate::vmm::devices::virtio::blk::Block;
use crate::vmm::devices::virtio::fuzz_queues::{guest_memory, interrupt};
use crate::vmm::devices::virtio::mmio::MmioTransport;

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
/// Register accesses per input, after the handshake.
const MAX_OPS: usize = 64;

fn write32(t: &mut MmioTransport, offset: u32, value: u32) {
    t.write(u64::from(offset), &value.to_le_bytes());
}

/// The driver's handshake: features, queue 0 of `size` at the fixed
/// addresses, DRIVER_OK.
fn handshake(t: &mut MmioTransport, size: u16) {
    let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
    write32(t, VIRTIO_MMIO_STATUS, s);
    for sel in 0..2 {
        write32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
        let mut f = [0u8; 4];
        t.read(u64::from(VIRTIO_MMIO_DEVICE_FEATURES), &mut f);
        write32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
        write32(t, VIRTIO_MMIO_DRIVER_FEATURES, u32::from_le_bytes(f));
    }
    write32(t, VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_FEATURES_OK);
    write32(t, VIRTIO_MMIO_QUEUE_SEL, 0);
    write32(t, VIRTIO_MMIO_QUEUE_NUM, u32::from(size));
    for (lo, hi, addr) in [
        (
            VIRTIO_MMIO_QUEUE_DESC_LOW,
            VIRTIO_MMIO_QUEUE_DESC_HIGH,
            DESC,
        ),
        (
            VIRTIO_MMIO_QUEUE_AVAIL_LOW,
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
            AVAIL,
        ),
        (
            VIRTIO_MMIO_QUEUE_USED_LOW,
            VIRTIO_MMIO_QUEUE_USED_HIGH,
            USED,
        ),
    ] {
        write32(t, lo, addr as u32);
        write32(t, hi, (addr >> 32) as u32);
    }
    write32(t, VIRTIO_MMIO_QUEUE_READY, 1);
    write32(
        t,
        VIRTIO_MMIO_STATUS,
        s | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK,
    );
}

/// Runs `device` behind the transport: the first 64 KiB of `data` are
/// guest memory, then one byte picks the queue size, then each 5 bytes are
/// a register access (kind, offset, value) or a queue notify.
fn drive(device: Box<dyn VirtioDevice>, data: &[u8]) {
    let (Some((mem, rest)), Some(interrupt)) = (guest_memory(data), interrupt()) else {
        return;
    };
    let mut t = MmioTransport::new(mem, device, interrupt);
    let (size, ops) = rest
        .split_first()
        .map_or((16, &[][..]), |(s, o)| (u16::from(*s), o));
    handshake(&mut t, size.clamp(1, 256));
    write32(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    for op in ops.chunks_exact(5).take(MAX_OPS) {
        let offset = u32::from(op[1]) * 4;
        let value = u32::from_le_bytes([op[2], op[3], op[4], 0]);
        match op[0] % 4 {
            0 => write32(&mut t, offset, value),
            1 => {
                let mut buf = [0u8; 4];
                t.read(u64::from(offset), &mut buf);
            }
            2 => t.write(u64::from(offset), &op[2..3]),
            _ => write32(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, value & 1),
        }
    }
}

/// A small disk file shared by every run of this process.
fn disk() -> Option<&'static std::path::Path> {
    static DISK: OnceLock<Option<tempfile::TempPath>> = OnceLock::new();
    DISK.get_or_init(|| {
        let file = tempfile::NamedTempFile::new().ok()?;
        file.as_file().set_len(1 << 20).ok()?;
        Some(file.into_temp_path())
    })
    .as_deref()
}

/// virtio-blk: requests of any shape in any memory, over a 1 MiB disk.
pub fn virtio_blk(data: &[u8]) {
    let Some(path) = disk() else { return };
    let Ok(block) = Block::new(path, false) else {
        return;
    };
    drive(Box::new(block), data);
}
