//! IPv4 and ARP in `restricted` mode: ARP requests and replies pass and
//! nothing else ARP does; IPv4 passes only as a reply, and malformed
//! packets (version, header length, total length, truncation), fragments
//! and unknown protocols are dropped with their reason.

use std::time::{Duration, Instant};

use fastvm_proto::api::FirewallPolicy;

use super::flows::tcp_flags::{ACK, SYN};
use super::test_frames::*;
use super::*;

fn restricted() -> Filter {
    Filter::compile(&FirewallPolicy::default()).unwrap()
}

/// A table with the guest's TCP flow 40000 → REMOTE4:443 and UDP flow
/// 5353 → REMOTE4:53.
fn flows() -> FlowTable {
    let mut t = FlowTable::new();
    for frame in [
        tcp((GUEST4, 40000), (REMOTE4, 443), SYN),
        udp((GUEST4, 5353), (REMOTE4, 53)),
    ] {
        let (key, flags) = egress_flow(&frame).unwrap();
        t.record_egress(key, flags, Instant::now());
    }
    t
}

/// The verdict on `frame` with the flows of [`flows`].
fn judge(frame: &[u8]) -> Verdict {
    let now = Instant::now() + Duration::from_secs(1);
    restricted().check_frame_with_flows(frame, &mut flows(), || now)
}

fn malformed(m: Malformed) -> Verdict {
    Verdict::Drop(DropReason::Malformed(m))
}

/// The TCP reply to the guest's flow, as a bare IPv4 packet.
fn reply_packet() -> Vec<u8> {
    ip_packet(
        REMOTE4,
        GUEST4,
        proto::TCP,
        &tcp_header(443, 40000, SYN | ACK),
    )
}

#[test]
fn arp_requests_and_replies_pass() {
    let f = restricted();
    assert_eq!(f.check_frame(&arp(1)), Verdict::Pass);
    assert_eq!(f.check_frame(&arp(2)), Verdict::Pass);
    let mut padded = arp(1);
    padded.resize(60, 0);
    assert_eq!(f.check_frame(&padded), Verdict::Pass, "Ethernet padding");
}

#[test]
fn malformed_or_foreign_arp_is_dropped() {
    let f = restricted();
    let bad = Verdict::Drop(DropReason::BadArp);
    for op in [0, 3, 8, 0x0101] {
        assert_eq!(f.check_frame(&arp(op)), bad, "operation {op}");
    }
    // Hardware type, protocol type, address lengths.
    for (at, value) in [(15, 6), (16, 0x86), (17, 0xdd), (18, 8), (19, 16)] {
        let mut frame = arp(1);
        frame[at] = value;
        assert_eq!(f.check_frame(&frame), bad, "byte {at} = {value}");
    }
    let whole = arp(2);
    for len in 14..whole.len() {
        assert_eq!(f.check_frame(&whole[..len]), bad, "cut to {len}");
    }
    // ARP behind a VLAN tag is not considered.
    let mut tagged = whole[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    tagged.extend_from_slice(&whole[12..]);
    assert_eq!(
        f.check_frame(&tagged),
        Verdict::Drop(DropReason::OtherEthertype { ethertype: 0x8100 })
    );
}

#[test]
fn ipv4_without_a_flow_is_dropped() {
    let no_rule = Verdict::Drop(DropReason::NoRule);
    for frame in [
        tcp((REMOTE4, 443), (GUEST4, 40001), SYN | ACK),
        tcp((REMOTE4, 50000), (GUEST4, 22), SYN),
        udp((REMOTE4, 53), (GUEST4, 5354)),
        udp(("100.64.0.1", 67), (GUEST4, 68)),
        echo(REMOTE4, GUEST4, true, 1),
        echo(REMOTE4, GUEST4, false, 1),
        icmp(REMOTE4, GUEST4, 5, 1, [100, 64, 0, 9], &[]),
        icmp(REMOTE4, GUEST4, 13, 0, [0; 4], &[0; 12]),
        frame_of(&ip_packet(REMOTE4, GUEST4, 47, &[0; 8])),
        frame_of(&ip_packet(REMOTE4, GUEST4, proto::ICMPV6, &[128, 0, 0, 0])),
    ] {
        assert_eq!(judge(&frame), no_rule, "{frame:02x?}");
    }
    // The flows admit their own replies.
    assert_eq!(judge(&frame_of(&reply_packet())), Verdict::Pass);
    assert_eq!(judge(&udp((REMOTE4, 53), (GUEST4, 5353))), Verdict::Pass);
}

#[test]
fn ipv4_options_are_skipped_by_the_header_length() {
    let mut pkt = reply_packet();
    // Two words of options (NOPs and an end-of-options) after the header.
    pkt.splice(20..20, [1, 1, 1, 0, 0, 0, 0, 0]);
    pkt[0] = 0x47;
    let total = pkt.len() as u16;
    pkt[2..4].copy_from_slice(&total.to_be_bytes());
    assert_eq!(judge(&frame_of(&pkt)), Verdict::Pass);
    let summary = parse_ipv4(&pkt).unwrap();
    assert_eq!(summary.upper_at, 28);
    assert!(matches!(
        summary.upper,
        Upper::Ports {
            src_port: 443,
            dst_port: 40000,
            ..
        }
    ));
}

#[test]
fn malformed_ipv4_is_dropped_with_its_reason() {
    let good = reply_packet();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = good.clone();
        f(&mut p);
        judge(&frame_of(&p))
    };
    assert_eq!(
        with(&|p| p[0] = 0x44),
        malformed(Malformed::BadHeaderLength),
        "IHL 4"
    );
    assert_eq!(
        with(&|p| p[0] = 0x40),
        malformed(Malformed::BadHeaderLength),
        "IHL 0"
    );
    assert_eq!(
        with(&|p| p[0] = 0x4f),
        malformed(Malformed::BadHeaderLength),
        "IHL 15 past a 40-byte packet"
    );
    // IHL 9 fits the packet but its "options" eat the TCP header.
    assert_eq!(with(&|p| p[0] = 0x49), malformed(Malformed::Truncated));
    assert_eq!(
        with(&|p| p[2..4].copy_from_slice(&19u16.to_be_bytes())),
        malformed(Malformed::BadTotalLength)
    );
    assert_eq!(
        with(&|p| p[2..4].copy_from_slice(&41u16.to_be_bytes())),
        malformed(Malformed::Truncated)
    );
    assert_eq!(
        with(&|p| p[2..4].copy_from_slice(&30u16.to_be_bytes())),
        malformed(Malformed::Truncated),
        "a total length that cuts the TCP header"
    );
    assert_eq!(
        with(&|p| p[20 + 12] = 4 << 4),
        malformed(Malformed::BadTcpHeader)
    );
    // The version nibble must say 4 under the IPv4 ethertype.
    let mut v6 = frame_of(&good);
    v6[14] = 0x65;
    assert_eq!(judge(&v6), malformed(Malformed::NotVersion4));
    // Every cut of a passing frame is dropped.
    let whole = frame_of(&good);
    assert_eq!(judge(&whole), Verdict::Pass);
    for len in 0..whole.len() {
        assert_ne!(judge(&whole[..len]), Verdict::Pass, "cut to {len}");
    }
    // Ethernet padding after the packet is ignored.
    let mut padded = whole.clone();
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(judge(&padded), Verdict::Pass);
}

#[test]
fn ipv4_fragments_never_slip_past_a_flow() {
    let fragment = Verdict::Drop(DropReason::Fragment);
    let frag = |flags_offset: u16, pkt: &mut Vec<u8>| {
        pkt[6..8].copy_from_slice(&flags_offset.to_be_bytes());
    };
    // Later fragments, with or without more to come, whatever they hold.
    for flags_offset in [0x0001, 0x2001, 0x1fff, 0x4010] {
        let mut p = reply_packet();
        frag(flags_offset, &mut p);
        assert_eq!(judge(&frame_of(&p)), fragment, "{flags_offset:#06x}");
    }
    // A whole first fragment of a flow passes; so does "don't fragment".
    for flags_offset in [0x2000, 0x4000] {
        let mut p = reply_packet();
        frag(flags_offset, &mut p);
        assert_eq!(judge(&frame_of(&p)), Verdict::Pass, "{flags_offset:#06x}");
    }
    // A first fragment that cuts the TCP header short is dropped.
    let mut short = reply_packet();
    frag(0x2000, &mut short);
    short.truncate(20 + 12);
    short[2..4].copy_from_slice(&32u16.to_be_bytes());
    assert_eq!(judge(&frame_of(&short)), fragment);
    // Likewise one whose TCP options run past it.
    let mut opts = reply_packet();
    frag(0x2000, &mut opts);
    opts[20 + 12] = 15 << 4;
    assert_eq!(judge(&frame_of(&opts)), fragment);
    // And a UDP first fragment shorter than the UDP header.
    let mut udp_short = ip_packet(REMOTE4, GUEST4, proto::UDP, &[0, 53, 0x14, 0xe9]);
    frag(0x2000, &mut udp_short);
    assert_eq!(judge(&frame_of(&udp_short)), fragment);
}

#[test]
fn ipv4_replies_pass_only_to_the_guest_address() {
    // The same ports toward another private address are no reply.
    let other = tcp((REMOTE4, 443), ("100.64.0.3", 40000), SYN | ACK);
    assert_eq!(judge(&other), Verdict::Drop(DropReason::NoRule));
    // Nor is the IPv4-mapped form of the flow's addresses in IPv6.
    let mapped = tcp(
        ("::ffff:198.51.100.7", 443),
        ("::ffff:100.64.0.2", 40000),
        SYN | ACK,
    );
    assert_eq!(judge(&mapped), Verdict::Drop(DropReason::NoRule));
}
