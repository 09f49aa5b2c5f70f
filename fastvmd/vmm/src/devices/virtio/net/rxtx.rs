//! Moving frames: tap → filter → RX queue, and TX queue → tap.
//!
//! Each frame carries the 12-byte virtio-net header on both sides (the tap
//! is opened with `IFF_VNET_HDR` and no offloads, and the driver negotiates
//! none), so TX chains go to the tap byte for byte, and RX frames get a
//! zeroed header with `num_buffers` 1. Descriptor errors are the guest's:
//! logged, the buffer returned, processing goes on.

use std::io::ErrorKind;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use crate::devices::virtio::{GuestMemory, Interrupt};
use crate::net::firewall::{FrameCounters, Verdict};
use crate::net::tap::{Tap, VNET_HDR_LEN};

/// Largest frame with its header: the header, a 65535-byte packet and the
/// Ethernet header, rounded up.
pub const MAX_FRAME: usize = 65_562;

/// The active device's queues.
#[derive(Debug)]
pub struct Queues {
    pub mem: GuestMemory,
    pub rx: Queue,
    pub tx: Queue,
    pub interrupt: Arc<Interrupt>,
}

fn notify(queue: &mut Queue, mem: &GuestMemory, interrupt: &Interrupt) {
    if queue.needs_notification(mem).unwrap_or(true)
        && let Err(e) = interrupt.trigger(Interrupt::VRING)
    {
        crate::guest_warn!("virtio-net: interrupt", "virtio-net: interrupt: {e}");
    }
}

/// A frame read from the tap that passed the filter, waiting for a buffer.
#[derive(Debug)]
pub struct RxBuffer {
    buf: Vec<u8>,
    /// Length of the frame in `buf` (header included), when there is one.
    pending: Option<usize>,
}

impl Default for RxBuffer {
    fn default() -> Self {
        RxBuffer {
            buf: vec![0; MAX_FRAME],
            pending: None,
        }
    }
}

impl RxBuffer {
    /// Forgets a waiting frame (device reset).
    pub fn clear(&mut self) {
        self.pending = None;
    }
}

/// What stopped the receive loop.
#[derive(Debug, PartialEq, Eq)]
pub enum RxStop {
    /// The tap has nothing more.
    TapEmpty,
    /// A frame waits and the guest gave no buffer.
    NoBuffer,
}

/// Reads frames from `tap`, filters them and places the ones that pass in
/// RX buffers, until the tap is empty or the buffers run out.
pub fn process_rx(
    q: &mut Queues,
    tap: &Tap,
    rx: &mut RxBuffer,
    filter: &crate::net::firewall::Filter,
    counters: &FrameCounters,
) -> RxStop {
    let mut used = false;
    let stop = loop {
        let len = match rx.pending {
            Some(len) => len,
            None => match tap.read_frame(&mut rx.buf) {
                Ok(n) if n < VNET_HDR_LEN => continue,
                Ok(n) => {
                    if filter.check_frame(&rx.buf[VNET_HDR_LEN..n]) != Verdict::Pass {
                        FrameCounters::bump(&counters.rx_dropped);
                        continue;
                    }
                    rx.pending = Some(n);
                    n
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break RxStop::TapEmpty,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::guest_warn!(
                        "virtio-net: reading the tap",
                        "virtio-net: reading the tap: {e}"
                    );
                    break RxStop::TapEmpty;
                }
            },
        };
        let Some(chain) = q.rx.pop_descriptor_chain(&q.mem) else {
            break RxStop::NoBuffer;
        };
        let head = chain.head_index();
        let frame = &mut rx.buf[..len];
        frame[..VNET_HDR_LEN].fill(0);
        frame[10..12].copy_from_slice(&1u16.to_le_bytes());
        let mut written = 0usize;
        let mut ok = true;
        for desc in chain {
            if written == len {
                break;
            }
            if !desc.is_write_only() {
                ok = false;
                break;
            }
            let n = (desc.len() as usize).min(len - written);
            if q.mem
                .write_slice(&frame[written..written + n], desc.addr())
                .is_err()
            {
                ok = false;
                break;
            }
            written += n;
        }
        rx.pending = None;
        if ok && written == len {
            FrameCounters::bump(&counters.rx_passed);
        } else {
            crate::guest_warn!(
                "virtio-net: RX buffer unusable or too small",
                "virtio-net: RX buffer unusable or too small for {len} bytes"
            );
            written = 0;
        }
        if let Err(e) = q.rx.add_used(&q.mem, head, written as u32) {
            crate::guest_warn!("virtio-net: RX add_used", "virtio-net: RX add_used: {e}");
        }
        used = true;
    };
    if used {
        notify(&mut q.rx, &q.mem, &q.interrupt);
    }
    stop
}

/// Sends every frame the guest queued on TX to `tap` (dropped when there
/// is no tap).
pub fn process_tx(
    q: &mut Queues,
    tap: Option<&Tap>,
    scratch: &mut Vec<u8>,
    counters: &FrameCounters,
) {
    let mut used = false;
    while let Some(chain) = q.tx.pop_descriptor_chain(&q.mem) {
        let head = chain.head_index();
        scratch.clear();
        let mut ok = true;
        for desc in chain {
            let len = desc.len() as usize;
            if desc.is_write_only() || scratch.len() + len > MAX_FRAME {
                ok = false;
                break;
            }
            let at = scratch.len();
            scratch.resize(at + len, 0);
            if q.mem.read_slice(&mut scratch[at..], desc.addr()).is_err() {
                ok = false;
                break;
            }
        }
        if !ok || scratch.len() <= VNET_HDR_LEN {
            crate::guest_warn!(
                "virtio-net: bad TX chain",
                "virtio-net: bad TX chain ({} bytes)",
                scratch.len()
            );
        } else if let Some(tap) = tap {
            FrameCounters::bump(&counters.tx_frames);
            if let Err(e) = tap.write_frame(scratch) {
                // The host side is down or full: the frame is lost, as on a wire.
                tracing::debug!("virtio-net: writing the tap: {e}");
            }
        }
        if let Err(e) = q.tx.add_used(&q.mem, head, 0) {
            crate::guest_warn!("virtio-net: TX add_used", "virtio-net: TX add_used: {e}");
        }
        used = true;
    }
    if used {
        notify(&mut q.tx, &q.mem, &q.interrupt);
    }
}
