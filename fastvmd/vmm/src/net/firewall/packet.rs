//! Reading what the filter needs from an IPv6 packet: its addresses, the
//! upper-layer protocol after the extension headers, and its ports (and
//! TCP flags) or ICMPv6 type and echo identifier. Every length is checked
//! against the packet; anything that does not parse is [`Malformed`]. The
//! transport header reader is shared with IPv4 ([`super::ipv4`]).

use std::net::Ipv6Addr;

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Most extension headers walked before a packet counts as malformed.
pub const MAX_EXTENSION_HEADERS: usize = 16;

/// IPv6 next-header values the walker knows.
pub mod proto {
    pub const HOP_BY_HOP: u8 = 0;
    /// ICMP for IPv4 (an IPv4 protocol number; IPv6 has no such header).
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const DEST_OPTIONS: u8 = 60;
}

/// What follows the extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upper {
    /// TCP or UDP with the complete transport header present; `tcp_flags`
    /// is the TCP flags byte (0 for UDP).
    Ports {
        protocol: u8,
        src_port: u16,
        dst_port: u16,
        tcp_flags: u8,
    },
    /// ICMPv6 (in IPv6) or ICMP (in IPv4) with its type and code present;
    /// `echo_id` is bytes 4-5 of the header (an echo message's identifier)
    /// when the whole 8-byte header is there.
    Icmp {
        kind: u8,
        code: u8,
        echo_id: Option<u16>,
    },
    /// A fragment other than the first: no transport header at all.
    LaterFragment,
    /// A first fragment too short to hold the whole transport header.
    ShortFirstFragment,
    /// ESP, "no next header", or a protocol the walker does not know: no
    /// port information.
    Opaque { protocol: u8 },
}

/// Why a packet does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than the fixed header, or than its payload length says.
    Truncated,
    /// The version field is not 6.
    NotVersion6,
    /// A jumbogram (payload length 0): never sent on a 1500-byte link.
    Jumbogram,
    /// An extension header runs past the end of the packet.
    ExtensionTruncated,
    /// Hop-by-hop options somewhere else than first.
    MisplacedHopByHop,
    /// More than [`MAX_EXTENSION_HEADERS`] extension headers.
    TooManyExtensions,
    /// A TCP header whose data offset is below 5 or past the packet.
    BadTcpHeader,
    /// The version field of an IPv4 frame is not 4.
    NotVersion4,
    /// An IPv4 header length (IHL) below 5 words or past the packet.
    BadHeaderLength,
    /// An IPv4 total length shorter than its header.
    BadTotalLength,
}

/// An IPv6 packet as the filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Summary {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    /// A Fragment header was present (first fragment or later).
    pub fragmented: bool,
    /// The datagram this fragment is part of, when it is one.
    pub fragment: Option<FragmentOf>,
    pub upper: Upper,
}

/// The datagram a fragment (first or later) is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentOf {
    /// The IPv4 identification or the IPv6 Fragment header's.
    pub id: u32,
    /// The upper-layer protocol.
    pub protocol: u8,
}

/// Parses the IPv6 packet at the start of `pkt` (trailing bytes beyond the
/// payload length, e.g. Ethernet padding, are ignored).
pub fn parse_ipv6(pkt: &[u8]) -> Result<Ipv6Summary, Malformed> {
    if pkt.len() < IPV6_HEADER_LEN {
        return Err(Malformed::Truncated);
    }
    if pkt[0] >> 4 != 6 {
        return Err(Malformed::NotVersion6);
    }
    let payload_len = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
    if payload_len == 0 && pkt[6] == proto::HOP_BY_HOP {
        return Err(Malformed::Jumbogram);
    }
    let end = IPV6_HEADER_LEN + payload_len;
    if pkt.len() < end {
        return Err(Malformed::Truncated);
    }
    let pkt = &pkt[..end];
    let mut summary = Ipv6Summary {
        src: ipv6_at(pkt, 8),
        dst: ipv6_at(pkt, 24),
        hop_limit: pkt[7],
        fragmented: false,
        fragment: None,
        upper: Upper::Opaque {
            protocol: proto::NO_NEXT_HEADER,
        },
    };
    let mut next = pkt[6];
    let mut at = IPV6_HEADER_LEN;
    let mut first_fragment_only = false;
    for walked in 0..=MAX_EXTENSION_HEADERS {
        let rest = &pkt[at..];
        match next {
            proto::HOP_BY_HOP | proto::ROUTING | proto::DEST_OPTIONS | proto::AH => {
                if next == proto::HOP_BY_HOP && walked != 0 {
                    return Err(Malformed::MisplacedHopByHop);
                }
                if walked == MAX_EXTENSION_HEADERS {
                    return Err(Malformed::TooManyExtensions);
                }
                if rest.len() < 8 {
                    return Err(Malformed::ExtensionTruncated);
                }
                let len = if next == proto::AH {
                    (usize::from(rest[1]) + 2) * 4
                } else {
                    (usize::from(rest[1]) + 1) * 8
                };
                if rest.len() < len {
                    return Err(Malformed::ExtensionTruncated);
                }
                next = rest[0];
                at += len;
            }
            proto::FRAGMENT => {
                if walked == MAX_EXTENSION_HEADERS {
                    return Err(Malformed::TooManyExtensions);
                }
                if rest.len() < 8 {
                    return Err(Malformed::ExtensionTruncated);
                }
                let offset = u16::from_be_bytes([rest[2], rest[3]]) >> 3;
                let more = rest[3] & 1 == 1;
                summary.fragmented = summary.fragmented || offset != 0 || more;
                if offset != 0 || more {
                    summary.fragment = Some(FragmentOf {
                        id: u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
                        protocol: rest[0],
                    });
                }
                if offset != 0 {
                    summary.upper = Upper::LaterFragment;
                    return Ok(summary);
                }
                first_fragment_only = more;
                next = rest[0];
                at += 8;
            }
            upper => {
                summary.upper = parse_transport(upper, rest, first_fragment_only, proto::ICMPV6)?;
                return Ok(summary);
            }
        }
    }
    Err(Malformed::TooManyExtensions)
}

/// The IPv6 address at `pkt[at..at + 16]` (the caller checked the length).
fn ipv6_at(pkt: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&pkt[at..at + 16]);
    Ipv6Addr::from(octets)
}

/// The transport header at the start of `rest`; `icmp` is the ICMP
/// protocol number of the network layer (58 in IPv6, 1 in IPv4). In a
/// first fragment a transport header cut short is
/// [`Upper::ShortFirstFragment`]; in a whole packet it is malformed.
pub(super) fn parse_transport(
    protocol: u8,
    rest: &[u8],
    in_fragment: bool,
    icmp: u8,
) -> Result<Upper, Malformed> {
    let short = |need: usize| rest.len() < need;
    let cut = if in_fragment {
        Ok(Upper::ShortFirstFragment)
    } else {
        Err(Malformed::Truncated)
    };
    let port = |at: usize| u16::from_be_bytes([rest[at], rest[at + 1]]);
    match protocol {
        proto::TCP => {
            if short(20) {
                return cut;
            }
            let header_len = usize::from(rest[12] >> 4) * 4;
            if header_len < 20 {
                return Err(Malformed::BadTcpHeader);
            }
            if short(header_len) {
                return if in_fragment {
                    Ok(Upper::ShortFirstFragment)
                } else {
                    Err(Malformed::BadTcpHeader)
                };
            }
            Ok(Upper::Ports {
                protocol,
                src_port: port(0),
                dst_port: port(2),
                tcp_flags: rest[13],
            })
        }
        proto::UDP => {
            if short(8) {
                return cut;
            }
            Ok(Upper::Ports {
                protocol,
                src_port: port(0),
                dst_port: port(2),
                tcp_flags: 0,
            })
        }
        p if p == icmp => {
            if short(4) {
                return cut;
            }
            Ok(Upper::Icmp {
                kind: rest[0],
                code: rest[1],
                echo_id: (!short(8)).then(|| port(4)),
            })
        }
        other => Ok(Upper::Opaque { protocol: other }),
    }
}
