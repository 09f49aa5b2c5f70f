//! Moving packets between the muxer and the virtqueues.
//!
//! TX (guest -> host) is drained on QueueNotify and by the backend thread;
//! RX (host -> guest) is filled whenever buffers and data are both there.
//! Descriptor and packet errors are the guest's fault: they are logged, the
//! buffer is returned with length 0, and processing goes on.

use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::{PKT_HEADER_SIZE, VsockPacket};
use vm_memory::Bytes;

use super::muxer::{ConnectJob, Key, MAX_CTRL_RX, Muxer};
use super::packet::{EVENT_TRANSPORT_RESET, Hdr, MAX_PKT_DATA};
use crate::devices::virtio::{GuestMemory, Interrupt};

/// The active device's queues.
#[derive(Debug)]
pub struct Queues {
    pub mem: GuestMemory,
    pub rx: Queue,
    pub tx: Queue,
    pub evq: Queue,
    pub interrupt: Arc<Interrupt>,
}

/// Outcome of offering one packet to the RX queue.
enum RxPut {
    /// No RX buffer available.
    NoBuffer,
    /// The producer had nothing to send (the buffer was given back).
    Nothing,
    /// A packet was placed.
    Sent,
}

fn notify(queue: &mut Queue, mem: &GuestMemory, interrupt: &Interrupt) {
    // Without EVENT_IDX this is always true; on error, notify anyway.
    if queue.needs_notification(mem).unwrap_or(true) {
        if let Err(e) = interrupt.trigger(Interrupt::VRING) {
            crate::guest_warn!("vsock: interrupt", "vsock: interrupt: {e}");
        }
    }
}

/// Pops one RX buffer and lets `produce` fill it: `produce` gets the payload
/// room and a buffer for the payload, and returns the header (with `len` set).
fn put_rx(
    q: &mut Queues,
    used: &mut bool,
    buf: &mut Vec<u8>,
    produce: impl FnOnce(usize, &mut Vec<u8>) -> Option<Hdr>,
) -> RxPut {
    loop {
        let Some(mut chain) = q.rx.pop_descriptor_chain(&q.mem) else {
            return RxPut::NoBuffer;
        };
        let head = chain.head_index();
        let pkt = VsockPacket::from_rx_virtq_chain(&q.mem, &mut chain, MAX_PKT_DATA);
        let mut pkt = match pkt {
            Ok(p) => p,
            Err(e) => {
                crate::guest_warn!(
                    "vsock: bad RX descriptor chain",
                    "vsock: bad RX descriptor chain: {e}"
                );
                if let Err(e) = q.rx.add_used(&q.mem, head, 0) {
                    crate::guest_warn!("vsock: RX add_used", "vsock: RX add_used: {e}");
                }
                *used = true;
                continue;
            }
        };
        let room = pkt.data_slice().map_or(0, |s| s.len());
        let Some(mut hdr) = produce(room, buf) else {
            q.rx.go_to_previous_position();
            return RxPut::Nothing;
        };
        let n = buf.len().min(room);
        hdr.len = n as u32;
        let mut ok = pkt.set_header_from_raw(&hdr.to_bytes()).is_ok();
        if n > 0 {
            ok &= pkt
                .data_slice()
                .is_some_and(|s| s.write_slice(&buf[..n], 0).is_ok());
        }
        let len = if ok {
            (PKT_HEADER_SIZE + n) as u32
        } else {
            crate::guest_warn!(
                "vsock: writing an RX packet failed",
                "vsock: writing an RX packet failed"
            );
            0
        };
        if let Err(e) = q.rx.add_used(&q.mem, head, len) {
            crate::guest_warn!("vsock: RX add_used", "vsock: RX add_used: {e}");
        }
        *used = true;
        return RxPut::Sent;
    }
}

impl Muxer {
    /// Handles the packets the guest queued on TX; guest-initiated connects
    /// are returned in `jobs` to be done without the lock.
    pub fn process_tx(&mut self, q: &mut Queues, jobs: &mut Vec<ConnectJob>) {
        let mut used = false;
        let mut data = Vec::new();
        while self.ctrl_rx.len() < MAX_CTRL_RX {
            let Some(mut chain) = q.tx.pop_descriptor_chain(&q.mem) else {
                break;
            };
            let head = chain.head_index();
            let hdr = match VsockPacket::from_tx_virtq_chain(&q.mem, &mut chain, MAX_PKT_DATA) {
                Ok(pkt) => {
                    data.clear();
                    let read = match pkt.data_slice() {
                        Some(s) => {
                            data.resize(s.len(), 0);
                            s.read_slice(&mut data, 0).is_ok()
                        }
                        None => true,
                    };
                    if read {
                        Some(Hdr::from_packet(&pkt))
                    } else {
                        crate::guest_warn!(
                            "vsock: unreadable TX payload",
                            "vsock: unreadable TX payload"
                        );
                        None
                    }
                }
                Err(e) => {
                    crate::guest_warn!("vsock: bad TX packet", "vsock: bad TX packet: {e}");
                    None
                }
            };
            if let Err(e) = q.tx.add_used(&q.mem, head, 0) {
                crate::guest_warn!("vsock: TX add_used", "vsock: TX add_used: {e}");
            }
            used = true;
            if let Some(hdr) = hdr {
                self.handle_guest_pkt(hdr, &data, jobs);
            }
        }
        if used {
            notify(&mut q.tx, &q.mem, &q.interrupt);
        }
    }

    fn fill_all(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(&key) {
                let v = conn.fill_rx();
                self.apply(key, v);
            }
        }
    }

    /// Moves pending packets and host data into the guest's RX buffers.
    pub fn process_rx(&mut self, q: &mut Queues) {
        let mut used = false;
        let mut buf = Vec::new();
        self.fill_all();
        'outer: loop {
            let mut progress = false;
            while let Some(&hdr) = self.ctrl_rx.front() {
                match put_rx(q, &mut used, &mut buf, |_, b| {
                    b.clear();
                    Some(hdr)
                }) {
                    RxPut::Sent => {
                        self.ctrl_rx.pop_front();
                        progress = true;
                    }
                    _ => break 'outer,
                }
            }
            let held = self.host_connects_held(std::time::Instant::now());
            let ready: Vec<Key> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.has_rx() && !(held && c.state == super::connection::State::LocalInit)
                })
                .map(|(k, _)| *k)
                .collect();
            for key in ready {
                let Some(conn) = self.conns.get_mut(&key) else {
                    continue;
                };
                match put_rx(q, &mut used, &mut buf, |room, b| conn.next_rx(room, b)) {
                    RxPut::NoBuffer => break 'outer,
                    RxPut::Nothing => {}
                    RxPut::Sent => {
                        progress = true;
                        let v = conn.fill_rx();
                        self.apply(key, v);
                    }
                }
            }
            if !progress {
                break;
            }
        }
        if used {
            notify(&mut q.rx, &q.mem, &q.interrupt);
        }
    }

    /// Delivers a pending TRANSPORT_RESET event if the driver gave a buffer.
    pub fn process_evq(&mut self, q: &mut Queues) {
        // The driver posted a new event buffer: it has taken the reset.
        if let Some((_, idx)) = self.reset_unacked
            && avail_idx(q) != Some(idx)
        {
            self.reset_unacked = None;
        }
        let mut used = false;
        while self.pending_reset_event {
            let Some(mut chain) = q.evq.pop_descriptor_chain(&q.mem) else {
                break;
            };
            let head = chain.head_index();
            let mut len = 0;
            match chain.next() {
                Some(d) if d.is_write_only() && d.len() >= 4 => {
                    match q.mem.write_obj(EVENT_TRANSPORT_RESET.to_le(), d.addr()) {
                        Ok(()) => {
                            len = 4;
                            self.pending_reset_event = false;
                            if let Some(idx) = avail_idx(q) {
                                self.reset_unacked = Some((std::time::Instant::now(), idx));
                            }
                        }
                        Err(e) => {
                            crate::guest_warn!("vsock: event buffer", "vsock: event buffer: {e}")
                        }
                    }
                }
                _ => crate::guest_warn!(
                    "vsock: unusable event buffer",
                    "vsock: unusable event buffer"
                ),
            }
            if let Err(e) = q.evq.add_used(&q.mem, head, len) {
                crate::guest_warn!("vsock: event add_used", "vsock: event add_used: {e}");
            }
            used = true;
        }
        if used {
            notify(&mut q.evq, &q.mem, &q.interrupt);
        }
    }
}

/// The event queue's available index (how many buffers the driver posted).
fn avail_idx(q: &Queues) -> Option<u16> {
    q.evq
        .avail_idx(&q.mem, std::sync::atomic::Ordering::Acquire)
        .map(|i| i.0)
        .ok()
}
