//! The fuzz entry point of the stateful filter (run from `fastvmd/fuzz` as
//! part of the `firewall_frame` target): frames from a hostile guest and a
//! hostile network, in an order and at times the fuzzer picks, through the
//! flow table and the restricted and open filters. The monitor program
//! never calls it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fastvm_proto::api::FirewallPolicy;

use super::ipv4::{parse_ipv4, parse_quoted_ipv4};
use super::{ETHERNET_HEADER_LEN, Filter, FlowTable, MAX_FLOWS, Verdict, egress_flow};

/// Steps per input.
const MAX_STEPS: usize = 256;

/// A restricted policy with rules of each kind, compiled once (the NIC's
/// fuzz target judges with it too).
pub fn restricted() -> &'static Filter {
    static FILTER: OnceLock<Filter> = OnceLock::new();
    FILTER.get_or_init(|| {
        let policy: FirewallPolicy = serde_json::from_str(
            r#"{"mode":"restricted","ingress":[
                {"protocol":"tcp","portStart":22},
                {"protocol":"udp","portStart":5000,"portEnd":5100,"sourceCidrs":["fd00::/8"]},
                {"protocol":"tcp","portStart":8000,"sourceCidrs":["2001:db8::1"]}
            ]}"#,
        )
        .expect("a valid policy");
        Filter::compile(&policy).expect("a valid policy")
    })
}

/// `data` is read twice. As one frame: judged without flows, by the
/// restricted and the open filter, and its IP layer parsed. As steps: a
/// kind byte, a length byte and that many bytes of frame; an even kind is
/// a frame the guest sends (it may open a flow), an odd one a frame to the
/// guest, judged with the flows. Time moves `kind / 2` seconds before each
/// step.
pub fn fuzz_frames(data: &[u8]) {
    let restricted = restricted();
    let open = Filter::open();
    let stateless = restricted.check_frame(data);
    assert_eq!(open.check_frame(data), Verdict::Pass);
    if let Some(pkt) = data.get(ETHERNET_HEADER_LEN..) {
        let _ = restricted.check_ipv6(pkt);
        let _ = parse_ipv4(pkt);
        let _ = parse_quoted_ipv4(pkt);
    }
    let _ = egress_flow(data);

    let mut flows = FlowTable::new();
    let mut now = Instant::now();
    let first = restricted.check_frame_with_flows(data, &mut flows, || now);
    assert_eq!(first, stateless, "an empty table changes nothing");
    let mut steps = data;
    for _ in 0..MAX_STEPS {
        let [kind, len, rest @ ..] = steps else {
            break;
        };
        let (frame, rest) = rest.split_at(rest.len().min(usize::from(*len)));
        steps = rest;
        now += Duration::from_secs(u64::from(kind / 2));
        if kind % 2 == 0 {
            if let Some((key, tcp_flags)) = egress_flow(frame) {
                flows.record_egress(key, tcp_flags, now);
            }
        } else {
            let without = restricted.check_frame(frame);
            let with = restricted.check_frame_with_flows(frame, &mut flows, || now);
            if without == Verdict::Pass {
                assert_eq!(with, Verdict::Pass, "flows only ever admit more");
            }
            let open_verdict = open.check_frame_with_flows(frame, &mut flows, || now);
            assert_eq!(open_verdict, Verdict::Pass);
        }
        assert!(flows.len() <= MAX_FLOWS);
    }
}
