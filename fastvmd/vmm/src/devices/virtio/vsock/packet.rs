//! Vsock wire constants and an owned copy of the packet header.
//!
//! Parsing and placing packets in descriptor chains is left to
//! `virtio_vsock::packet::VsockPacket`; this module only converts between its
//! accessors and a plain value that can be queued.

use virtio_vsock::packet::{PKT_HEADER_SIZE, VsockPacket};
use vm_memory::bitmap::BitmapSlice;

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// The only socket type supported: stream.
pub const TYPE_STREAM: u16 = 1;

/// Connection request.
pub const OP_REQUEST: u16 = 1;
/// Connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// Connection reset / refused.
pub const OP_RST: u16 = 3;
/// Orderly shutdown of one or both directions.
pub const OP_SHUTDOWN: u16 = 4;
/// Payload.
pub const OP_RW: u16 = 5;
/// Unsolicited credit information.
pub const OP_CREDIT_UPDATE: u16 = 6;
/// Asks the peer for a credit update.
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// Largest payload accepted from (and sent to) the guest in one packet.
pub const MAX_PKT_DATA: u32 = 64 * 1024;

/// Event queue event: the transport was reset (after a snapshot restore).
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// An owned vsock packet header (host byte order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hdr {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Hdr {
    /// Copies the header of a parsed packet.
    pub fn from_packet<B: BitmapSlice>(pkt: &VsockPacket<'_, B>) -> Self {
        Hdr {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }

    /// The little-endian wire form.
    pub fn to_bytes(self) -> [u8; PKT_HEADER_SIZE] {
        let mut b = [0u8; PKT_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Parses the wire form (used by the tests acting as the guest driver).
    #[cfg(test)]
    pub fn from_bytes(b: &[u8; PKT_HEADER_SIZE]) -> Self {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        Hdr {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// A reply RST for `self` (ports and CIDs swapped), as sent for packets
    /// that belong to no connection.
    pub fn rst_reply(&self) -> Hdr {
        Hdr {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: TYPE_STREAM,
            op: OP_RST,
            ..Hdr::default()
        }
    }
}
