//! Fragments through the filter, IPv4 and IPv6: a later fragment passes
//! only after the first fragment of its datagram passed (a reply to a
//! flow, or allowed by a rule), for a while, and never for another
//! datagram, source or protocol, nor in front of its first fragment.

use std::time::{Duration, Instant};

use fastvm_proto::api::FirewallPolicy;

use super::fragments::REASSEMBLY_WINDOW;
use super::test_frames::*;
use super::*;

const FRAGMENT: Verdict = Verdict::Drop(DropReason::Fragment);

fn filter(policy: &str) -> Filter {
    let policy: FirewallPolicy = serde_json::from_str(policy).unwrap();
    Filter::compile(&policy).unwrap()
}

/// A table with the guest's UDP flow 5353 → `remote`:53.
fn flows_to(guest: &str, remote: &str) -> FlowTable {
    let mut t = FlowTable::new();
    let (key, flags) = egress_flow(&udp((guest, 5353), (remote, 53))).unwrap();
    t.record_egress(key, flags, Instant::now());
    t
}

/// An IPv4 fragment from `src` to `dst` of datagram `id` at `offset`
/// (8-byte units), more to come or not, carrying `payload`.
fn v4_fragment(src: &str, dst: &str, id: u16, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = ip_packet(src, dst, proto::UDP, payload);
    p[4..6].copy_from_slice(&id.to_be_bytes());
    let flags_offset = offset | if more { 0x2000 } else { 0 };
    p[6..8].copy_from_slice(&flags_offset.to_be_bytes());
    frame_of(&p)
}

/// An IPv6 fragment (a Fragment header, then `payload`) of UDP datagram `id`.
fn v6_fragment(src: &str, dst: &str, id: u32, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![proto::UDP, 0];
    body.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    frame_of(&ip_packet(src, dst, proto::FRAGMENT, &body))
}

/// The UDP header of a reply from port 53 to 5353, and some data.
fn reply_head() -> Vec<u8> {
    udp_datagram(53, 5353)
}

#[test]
fn ipv4_later_fragments_follow_their_first_one() {
    let f = filter(r#"{"mode":"restricted"}"#);
    let mut t = flows_to(GUEST4, REMOTE4);
    let t0 = Instant::now() + Duration::from_secs(1);
    let mut judge = |frame: &[u8], at: Instant| f.check_frame_with_flows(frame, &mut t, || at);
    let later = v4_fragment(REMOTE4, GUEST4, 7, 185, false, &[0xab; 64]);
    // Ahead of its first fragment: dropped.
    assert_eq!(judge(&later, t0), FRAGMENT);
    let first = v4_fragment(REMOTE4, GUEST4, 7, 0, true, &reply_head());
    assert_eq!(judge(&first, t0), Verdict::Pass);
    assert_eq!(judge(&later, t0), Verdict::Pass);
    let middle = v4_fragment(REMOTE4, GUEST4, 7, 100, true, &[0xab; 64]);
    assert_eq!(judge(&middle, t0), Verdict::Pass);
    // Another datagram, another source: dropped.
    let other_id = v4_fragment(REMOTE4, GUEST4, 8, 185, false, &[0xab; 64]);
    assert_eq!(judge(&other_id, t0), FRAGMENT);
    let other_src = v4_fragment("198.51.100.99", GUEST4, 7, 185, false, &[0xab; 64]);
    assert_eq!(judge(&other_src, t0), FRAGMENT);
    // Past the window: dropped.
    assert_eq!(judge(&later, t0 + REASSEMBLY_WINDOW), FRAGMENT);
    // A first fragment no flow expects does not open the way.
    let mut stranger_head = udp_datagram(54, 5353);
    stranger_head.truncate(8);
    let stranger = v4_fragment(REMOTE4, GUEST4, 9, 0, true, &stranger_head);
    assert_eq!(judge(&stranger, t0), Verdict::Drop(DropReason::NoRule));
    let stranger_later = v4_fragment(REMOTE4, GUEST4, 9, 185, false, &[0; 8]);
    assert_eq!(judge(&stranger_later, t0), FRAGMENT);
    // Without flows (a stateless check) a later fragment never passes.
    assert_eq!(f.check_frame(&later), FRAGMENT);
}

#[test]
fn ipv6_later_fragments_follow_a_first_one_let_in_by_a_flow_or_a_rule() {
    let f = filter(r#"{"mode":"restricted","ingress":[{"protocol":"udp","portStart":9000}]}"#);
    let mut t = flows_to(GUEST6, REMOTE6);
    let t0 = Instant::now() + Duration::from_secs(1);
    let mut judge = |frame: &[u8]| f.check_frame_with_flows(frame, &mut t, || t0);
    let later = v6_fragment(REMOTE6, GUEST6, 0x1234_5678, 150, false, &[0xcd; 64]);
    assert_eq!(judge(&later), FRAGMENT);
    let first = v6_fragment(REMOTE6, GUEST6, 0x1234_5678, 0, true, &reply_head());
    assert_eq!(judge(&first), Verdict::Pass);
    assert_eq!(judge(&later), Verdict::Pass);
    let other_id = v6_fragment(REMOTE6, GUEST6, 0x1234_5679, 150, false, &[0xcd; 64]);
    assert_eq!(judge(&other_id), FRAGMENT);
    // A datagram to a port a rule opens, from anyone.
    let ruled_head = udp_datagram(40000, 9000);
    let ruled_first = v6_fragment("2001:db8:77::1", GUEST6, 99, 0, true, &ruled_head);
    let ruled_later = v6_fragment("2001:db8:77::1", GUEST6, 99, 150, false, &[1; 16]);
    let mut empty = FlowTable::new();
    let mut judge_empty = |frame: &[u8]| f.check_frame_with_flows(frame, &mut empty, || t0);
    assert_eq!(judge_empty(&ruled_later), FRAGMENT);
    assert_eq!(judge_empty(&ruled_first), Verdict::Pass);
    assert_eq!(judge_empty(&ruled_later), Verdict::Pass);
}

#[test]
fn the_datagrams_remembered_stay_bounded() {
    let f = filter(r#"{"mode":"restricted","ingress":[{"protocol":"udp","portStart":9000}]}"#);
    let mut t = FlowTable::new();
    let t0 = Instant::now();
    for id in 0..10_000u32 {
        let first = v6_fragment(REMOTE6, GUEST6, id, 0, true, &udp_datagram(1, 9000));
        assert_eq!(
            f.check_frame_with_flows(&first, &mut t, || t0),
            Verdict::Pass
        );
    }
    assert_eq!(t.fragments.len(), fragments::MAX_DATAGRAMS);
    let oldest = v6_fragment(REMOTE6, GUEST6, 0, 150, false, &[0; 8]);
    assert_eq!(f.check_frame_with_flows(&oldest, &mut t, || t0), FRAGMENT);
    let newest = v6_fragment(REMOTE6, GUEST6, 9_999, 150, false, &[0; 8]);
    assert_eq!(
        f.check_frame_with_flows(&newest, &mut t, || t0),
        Verdict::Pass
    );
}
