//! The flow a frame the guest sends belongs to: IPv4 or IPv6 (untagged
//! Ethernet) TCP, UDP, or an ICMP/ICMPv6 echo request. Frames that do not
//! parse, later fragments, and every other protocol belong to none (they
//! still leave; they just open nothing).

use std::net::IpAddr;

use super::flows::{FlowKey, FlowProtocol};
use super::ipv4::{ETHERTYPE_IPV4, icmp, parse_ipv4};
use super::packet::{Upper, parse_ipv6};
use super::{ETHERNET_HEADER_LEN, ETHERTYPE_IPV6, ICMPV6_ECHO_REQUEST};

/// The flow of the Ethernet `frame` the guest sent, and its TCP flags (0
/// for other protocols), when it has one.
pub fn egress_flow(frame: &[u8]) -> Option<(FlowKey, u8)> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let pkt = frame.get(ETHERNET_HEADER_LEN..)?;
    let (guest, remote, upper, echo_request) = match ethertype {
        ETHERTYPE_IPV6 => {
            let s = parse_ipv6(pkt).ok()?;
            (
                IpAddr::V6(s.src),
                IpAddr::V6(s.dst),
                s.upper,
                ICMPV6_ECHO_REQUEST,
            )
        }
        ETHERTYPE_IPV4 => {
            let s = parse_ipv4(pkt).ok()?;
            (
                IpAddr::V4(s.src),
                IpAddr::V4(s.dst),
                s.upper,
                icmp::ECHO_REQUEST,
            )
        }
        _ => return None,
    };
    let (protocol, guest_port, remote_port, tcp_flags) = match upper {
        Upper::Ports {
            protocol,
            src_port,
            dst_port,
            tcp_flags,
        } => (
            FlowProtocol::of_ports(protocol),
            src_port,
            dst_port,
            tcp_flags,
        ),
        Upper::Icmp {
            kind,
            echo_id: Some(id),
            ..
        } if kind == echo_request => (FlowProtocol::IcmpEcho, id, 0, 0),
        _ => return None,
    };
    Some((
        FlowKey {
            protocol,
            guest,
            guest_port,
            remote,
            remote_port,
        },
        tcp_flags,
    ))
}
