//! Reading what the filter needs from IPv4 and ARP: an IPv4 packet's
//! addresses and transport header (options skipped by the header length,
//! fragments told apart), the packet an ICMP error quotes, and whether an
//! ARP message is a well-formed IPv4-over-Ethernet one. Every length is
//! checked against the bytes; nothing here indexes past a slice.

use std::net::Ipv4Addr;

use super::packet::{FragmentOf, Malformed, Upper, parse_transport, proto};

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Length of an IPv4 header without options.
pub const IPV4_MIN_HEADER_LEN: usize = 20;
/// Length of an ARP message for IPv4 over Ethernet.
pub const ARP_IPV4_LEN: usize = 28;
/// Length of an ICMP header (type, code, checksum, 4 more bytes).
pub const ICMP_HEADER_LEN: usize = 8;

/// ICMP (IPv4) message types the filter knows.
pub mod icmp {
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (code 4: fragmentation needed).
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
}

/// An IPv4 packet as the filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Summary {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    /// More fragments follow, or this is not the first one.
    pub fragmented: bool,
    pub upper: Upper,
    /// Where the transport header starts (the header length).
    pub upper_at: usize,
    /// The packet's total length (trailing bytes beyond it are padding).
    pub total_len: usize,
}

/// Parses the IPv4 packet at the start of `pkt` (trailing bytes beyond the
/// total length, e.g. Ethernet padding, are ignored).
pub fn parse_ipv4(pkt: &[u8]) -> Result<Ipv4Summary, Malformed> {
    if pkt.len() < IPV4_MIN_HEADER_LEN {
        return Err(Malformed::Truncated);
    }
    if pkt[0] >> 4 != 4 {
        return Err(Malformed::NotVersion4);
    }
    let header_len = usize::from(pkt[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN || header_len > pkt.len() {
        return Err(Malformed::BadHeaderLength);
    }
    let total_len = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if total_len < header_len {
        return Err(Malformed::BadTotalLength);
    }
    if total_len > pkt.len() {
        return Err(Malformed::Truncated);
    }
    let pkt = &pkt[..total_len];
    let flags_offset = u16::from_be_bytes([pkt[6], pkt[7]]);
    let more_fragments = flags_offset & 0x2000 != 0;
    let offset = flags_offset & 0x1fff;
    let upper = if offset != 0 {
        Upper::LaterFragment
    } else {
        parse_transport(pkt[9], &pkt[header_len..], more_fragments, proto::ICMP)?
    };
    Ok(Ipv4Summary {
        src: ipv4_at(pkt, 12),
        dst: ipv4_at(pkt, 16),
        ttl: pkt[8],
        fragmented: more_fragments || offset != 0,
        upper,
        upper_at: header_len,
        total_len,
    })
}

/// The datagram of the IPv4 packet `pkt` (parsed as `summary`), when it
/// is a fragment: its identification and protocol. Read here rather than
/// in [`parse_ipv4`], which every frame the guest sends goes through.
pub fn fragment_of(pkt: &[u8], summary: &Ipv4Summary) -> Option<FragmentOf> {
    if !summary.fragmented {
        return None;
    }
    let id = pkt.get(4..6)?;
    Some(FragmentOf {
        id: u32::from(u16::from_be_bytes([id[0], id[1]])),
        protocol: *pkt.get(9)?,
    })
}

/// The IPv4 address at `pkt[at..at + 4]` (the caller checked the length).
fn ipv4_at(pkt: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(pkt[at], pkt[at + 1], pkt[at + 2], pkt[at + 3])
}

/// What an ICMP error quotes of the packet that caused it: the guest's
/// packet, so `src` is the guest and `dst` the remote end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedIpv4 {
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// TCP/UDP source port, or the echo identifier of an echo request.
    pub src_port: u16,
    /// TCP/UDP destination port; 0 for an echo request.
    pub dst_port: u16,
}

/// Reads the packet quoted after an ICMP error header: an IPv4 header and
/// at least the first 8 bytes of its transport header (RFC 792), which is
/// all the error need carry, so its total length may exceed what is
/// there. Only the first fragment (or a whole packet) of TCP, UDP or an
/// echo request is of use; anything else is `None`.
pub fn parse_quoted_ipv4(quoted: &[u8]) -> Option<QuotedIpv4> {
    if quoted.len() < IPV4_MIN_HEADER_LEN || quoted[0] >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(quoted[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return None;
    }
    let transport = quoted.get(header_len..header_len + 8)?;
    let offset = u16::from_be_bytes([quoted[6], quoted[7]]) & 0x1fff;
    if offset != 0 {
        return None;
    }
    let field = |at: usize| u16::from_be_bytes([transport[at], transport[at + 1]]);
    let protocol = quoted[9];
    let (src_port, dst_port) = match protocol {
        proto::TCP | proto::UDP => (field(0), field(2)),
        proto::ICMP if transport[0] == icmp::ECHO_REQUEST => (field(4), 0),
        _ => return None,
    };
    Some(QuotedIpv4 {
        protocol,
        src: ipv4_at(quoted, 12),
        dst: ipv4_at(quoted, 16),
        src_port,
        dst_port,
    })
}

/// Whether `msg` (after the Ethernet header) is a well-formed ARP request
/// or reply for IPv4 over Ethernet: hardware type 1, protocol 0x0800,
/// address lengths 6 and 4, operation 1 or 2.
pub fn is_ipv4_ethernet_arp(msg: &[u8]) -> bool {
    let Some(head) = msg.get(..8) else {
        return false;
    };
    msg.len() >= ARP_IPV4_LEN
        && head[0..2] == [0, 1]
        && head[2..4] == ETHERTYPE_IPV4.to_be_bytes()
        && head[4] == 6
        && head[5] == 4
        && (head[6..8] == [0, 1] || head[6..8] == [0, 2])
}
