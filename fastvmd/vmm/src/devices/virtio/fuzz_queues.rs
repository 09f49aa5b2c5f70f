//! What the virtio queue fuzz targets share: guest memory filled by the
//! fuzzer, and queues placed at fixed addresses in it as a driver would
//! have configured them, so the fuzzer spends its time on what a guest
//! controls (descriptors, rings, buffers) rather than on the handshake.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::{GuestMemory, Interrupt};

/// Guest memory the fuzzer fills: the queues' tables and the buffers.
pub const MEMORY: usize = 0x1_0000;
/// Each queue's descriptor table, avail and used rings take a page each,
/// from here on.
const FIRST_QUEUE: u64 = 0x1000;

/// Guest memory holding `image` (the rest zero) and the bytes after it.
pub fn guest_memory(data: &[u8]) -> Option<(GuestMemory, &[u8])> {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEMORY)]).ok()?;
    let (image, rest) = data.split_at(data.len().min(MEMORY));
    mem.write_slice(image, GuestAddress(0)).ok()?;
    Some((mem, rest))
}

/// Queue `index` of `size` entries (clamped to 1..=256), ready, at its
/// fixed addresses.
pub fn queue(index: u64, size: u16) -> Option<Queue> {
    let mut q = Queue::new(256).ok()?;
    let base = FIRST_QUEUE + index * 0x3000;
    q.set_size(size.clamp(1, 256));
    q.set_desc_table_address(Some(base as u32), Some(0));
    q.set_avail_ring_address(Some((base + 0x1000) as u32), Some(0));
    q.set_used_ring_address(Some((base + 0x2000) as u32), Some(0));
    q.set_ready(true);
    Some(q)
}

/// An interrupt line nobody listens to.
pub fn interrupt() -> Option<Arc<Interrupt>> {
    Some(Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).ok()?)))
}
