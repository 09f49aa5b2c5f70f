//! Ethernet frames for the flow, IPv4 and device tests and the flow
//! benchmark ([`super::flow_cost`]): TCP, UDP, ICMP echo and ICMP errors
//! over IPv4 or IPv6 (the family follows the addresses), between a guest
//! and remote hosts. The monitor program never calls them.

use std::net::IpAddr;

use super::ipv4::{ETHERTYPE_ARP, ETHERTYPE_IPV4};
use super::packet::proto;
use super::{ETHERTYPE_IPV6, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST};

pub const GUEST4: &str = "100.64.0.2";
pub const REMOTE4: &str = "198.51.100.7";
pub const GUEST6: &str = "2001:db8:aa::2";
pub const REMOTE6: &str = "2001:db8:ff::80";

/// An address of the tests.
pub fn ip(addr: &str) -> IpAddr {
    addr.parse().expect("a test address")
}

/// `payload` behind an Ethernet header of `ethertype`.
pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A bare IPv4 (20-byte header) or IPv6 packet from `src` to `dst`.
pub fn ip_packet(src: &str, dst: &str, protocol: u8, transport: &[u8]) -> Vec<u8> {
    match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0u8; 20];
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(20 + transport.len() as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
            p[8] = 64;
            p[9] = protocol;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            p.extend_from_slice(transport);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0u8; 40];
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(transport.len() as u16).to_be_bytes());
            p[6] = protocol;
            p[7] = 64;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
            p.extend_from_slice(transport);
            p
        }
        _ => panic!("mixed address families: {src} -> {dst}"),
    }
}

/// The IP packet in an Ethernet frame, ethertype after its version.
pub fn frame_of(pkt: &[u8]) -> Vec<u8> {
    let ethertype = if pkt[0] >> 4 == 4 {
        ETHERTYPE_IPV4
    } else {
        ETHERTYPE_IPV6
    };
    ethernet(ethertype, pkt)
}

/// A 20-byte TCP header with `flags`.
pub fn tcp_header(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&src_port.to_be_bytes());
    h[2..4].copy_from_slice(&dst_port.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h
}

/// A UDP header and 4 bytes of data.
pub fn udp_datagram(src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut h = vec![0u8; 12];
    h[0..2].copy_from_slice(&src_port.to_be_bytes());
    h[2..4].copy_from_slice(&dst_port.to_be_bytes());
    h[4..6].copy_from_slice(&12u16.to_be_bytes());
    h
}

/// TCP segment from `src` to `dst` (address, port) with `flags`.
pub fn tcp(src: (&str, u16), dst: (&str, u16), flags: u8) -> Vec<u8> {
    frame_of(&ip_packet(
        src.0,
        dst.0,
        proto::TCP,
        &tcp_header(src.1, dst.1, flags),
    ))
}

/// UDP datagram from `src` to `dst` (address, port).
pub fn udp(src: (&str, u16), dst: (&str, u16)) -> Vec<u8> {
    frame_of(&ip_packet(
        src.0,
        dst.0,
        proto::UDP,
        &udp_datagram(src.1, dst.1),
    ))
}

/// An ICMP (IPv4) or ICMPv6 message of `kind`/`code` whose 4 bytes after
/// the checksum are `rest`, followed by `body`.
pub fn icmp(src: &str, dst: &str, kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let protocol = if ip(src).is_ipv4() {
        proto::ICMP
    } else {
        proto::ICMPV6
    };
    frame_of(&ip_packet(src, dst, protocol, &m))
}

/// An echo request (`request`) or reply with identifier `id`.
pub fn echo(src: &str, dst: &str, request: bool, id: u16) -> Vec<u8> {
    let kind = match (ip(src).is_ipv4(), request) {
        (true, true) => 8,
        (true, false) => 0,
        (false, true) => ICMPV6_ECHO_REQUEST,
        (false, false) => ICMPV6_ECHO_REPLY,
    };
    let [a, b] = id.to_be_bytes();
    icmp(src, dst, kind, 0, [a, b, 0, 1], b"ping")
}

/// What an ICMP error quotes of the IP packet in `frame`: its IP header and
/// the first 8 bytes after it.
pub fn quote(frame: &[u8]) -> Vec<u8> {
    let pkt = &frame[14..];
    let header = if pkt[0] >> 4 == 4 {
        usize::from(pkt[0] & 0x0f) * 4
    } else {
        40
    };
    pkt[..(header + 8).min(pkt.len())].to_vec()
}

/// An ARP message for IPv4 over Ethernet with operation `op`.
pub fn arp(op: u16) -> Vec<u8> {
    let mut m = vec![0, 1, 0x08, 0x00, 6, 4];
    m.extend_from_slice(&op.to_be_bytes());
    m.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 100, 64, 0, 1]);
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 100, 64, 0, 2]);
    ethernet(ETHERTYPE_ARP, &m)
}
