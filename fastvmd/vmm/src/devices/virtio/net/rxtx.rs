//! Moving frames: tap → filter → RX queue, and TX queue → flow table →
//! tap.
//!
//! Each frame carries the 12-byte virtio-net header on both sides (the tap
//! is opened with `IFF_VNET_HDR` and no offloads, and the driver negotiates
//! none), so TX chains go to the tap byte for byte, and RX frames get a
//! zeroed header with `num_buffers` 1. Descriptor errors are the guest's:
//! logged, the buffer returned, processing goes on.
//!
//! The flow table is the device's, used under the device's lock like the
//! queues (TX and RX both hold it already): no lock of its own. The clock
//! is read only for frames that record or look up a flow, and then once
//! for many frames of a batch ([`BatchClock`]).

use std::io::ErrorKind;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use crate::devices::virtio::{GuestMemory, Interrupt};
use crate::net::firewall::{BatchClock, Filter, FlowTable, FrameCounters, Verdict, egress_flow};
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

/// Reads frames from `tap`, filters them (replies to `flows` pass) and
/// places the ones that pass in RX buffers, until the tap is empty or the
/// buffers run out.
pub fn process_rx(
    q: &mut Queues,
    tap: &Tap,
    rx: &mut RxBuffer,
    filter: &Filter,
    flows: &mut FlowTable,
    counters: &FrameCounters,
) -> RxStop {
    let mut used = false;
    let mut clock = BatchClock::new();
    let stop = loop {
        let len = match rx.pending {
            Some(len) => len,
            None => match tap.read_frame(&mut rx.buf) {
                // End of file: only a stand-in socket whose peer is gone
                // (a tap never reads empty); stop rather than spin.
                Ok(0) => break RxStop::TapEmpty,
                Ok(n) if n < VNET_HDR_LEN => continue,
                Ok(n) => {
                    let frame = &rx.buf[VNET_HDR_LEN..n];
                    if filter.check_frame_with_flows(frame, flows, || clock.now()) != Verdict::Pass
                    {
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
    counters.publish_flows(flows);
    if used {
        notify(&mut q.rx, &q.mem, &q.interrupt);
    }
    stop
}

/// Sends every frame the guest queued on TX to `tap` (dropped when there
/// is no tap), recording the flows they open in `flows`.
pub fn process_tx(
    q: &mut Queues,
    tap: Option<&Tap>,
    scratch: &mut Vec<u8>,
    flows: &mut FlowTable,
    counters: &FrameCounters,
) {
    let mut used = false;
    let mut clock = BatchClock::new();
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
            if let Some((key, tcp_flags)) = egress_flow(&scratch[VNET_HDR_LEN..]) {
                flows.record_egress(key, tcp_flags, clock.now());
            }
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
        counters.publish_flows(flows);
        notify(&mut q.tx, &q.mem, &q.interrupt);
    }
}
