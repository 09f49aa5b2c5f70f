//! The NIC's queue processing driven by a hostile guest and a hostile
//! network: the fuzzer fills guest memory (descriptors, rings, TX frames),
//! writes the frames that arrive from the tap, and picks the order of
//! transmit and receive rounds. Frames the guest sends open flows in the
//! device's flow table, so frames from the wire can pass as their replies.
//! The "tap" is a seqpacket socket (a frame a read, as from a tap), so it
//! runs anywhere, on one thread.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;

use super::rxtx::{Queues, RxBuffer, process_rx, process_tx};
use crate::devices::virtio::fuzz_queues::{guest_memory, interrupt, queue};
use crate::net::firewall::{Filter, FlowTable, FrameCounters, MAX_FLOWS, fuzz_filter};
use crate::net::tap::Tap;

/// Steps per input.
const MAX_OPS: usize = 64;

/// Two connected seqpacket sockets: the device's "tap" end and the wire.
pub(super) fn frame_pair() -> Option<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socketpair writes two descriptors into `fds`, which has room.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: both descriptors were just created and belong to nobody else.
    Some(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The first 64 KiB of `data` are guest memory, then the RX and TX queue
/// sizes, a byte choosing the filter, then steps: a kind byte and, for a
/// frame from the wire, a length byte and the frame.
pub fn virtio_net(data: &[u8]) {
    let Some((mem, rest)) = guest_memory(data) else {
        return;
    };
    let [rx_size, tx_size, open, steps @ ..] = rest else {
        return;
    };
    let (Some(rx), Some(tx), Some(interrupt)) = (
        queue(0, u16::from(*rx_size)),
        queue(1, u16::from(*tx_size)),
        interrupt(),
    ) else {
        return;
    };
    let Some((device_end, wire_end)) = frame_pair() else {
        return;
    };
    let tap = Tap::from_frame_socket(device_end, "fuzz");
    let wire = UnixDatagram::from(wire_end);
    let open_filter = Filter::open();
    let filter = if open % 2 == 0 {
        fuzz_filter()
    } else {
        &open_filter
    };
    let mut q = Queues {
        mem,
        rx,
        tx,
        interrupt,
    };
    let mut rx_buffer = RxBuffer::default();
    let mut scratch = Vec::new();
    let counters = FrameCounters::default();
    let mut flows = FlowTable::new();
    let mut wire_buf = vec![0u8; super::rxtx::MAX_FRAME];
    let mut steps = steps;
    for _ in 0..MAX_OPS {
        let Some((kind, rest)) = steps.split_first() else {
            break;
        };
        steps = rest;
        match kind % 3 {
            0 => {
                process_tx(&mut q, Some(&tap), &mut scratch, &mut flows, &counters);
                // What the guest sent leaves on the wire.
                while wire.recv(&mut wire_buf).is_ok() {}
            }
            1 => {
                let _ = process_rx(&mut q, &tap, &mut rx_buffer, filter, &mut flows, &counters);
            }
            _ => {
                let Some((&len, rest)) = steps.split_first() else {
                    break;
                };
                let (frame, rest) = rest.split_at(rest.len().min(usize::from(len) * 4));
                let _ = wire.send(frame);
                steps = rest;
            }
        }
    }
    assert!(flows.len() <= MAX_FLOWS);
}
