//! The stateful filter: frames the guest sends open flows, replies to them
//! pass a restricted policy and nothing else new does; flows expire by
//! protocol on an injected clock, the table stays bounded, ICMP errors
//! pass only about a live flow, and `open` mode is unchanged.

use std::time::{Duration, Instant};

use fastvm_proto::api::FirewallPolicy;

use super::flows::{ICMP_ECHO_IDLE, SHORT_IDLE, TCP_ESTABLISHED_IDLE, tcp_flags::*};
use super::ipv4::icmp as icmp4;
use super::test_frames::*;
use super::*;

const SEC: Duration = Duration::from_secs(1);

/// A restricted filter with no rules and an empty table at a fixed start.
struct Vm {
    filter: Filter,
    flows: FlowTable,
    start: Instant,
}

impl Vm {
    fn new() -> Vm {
        Vm::with(Filter::compile(&FirewallPolicy::default()).unwrap())
    }

    fn with(filter: Filter) -> Vm {
        Vm {
            filter,
            flows: FlowTable::new(),
            start: Instant::now(),
        }
    }

    /// The guest sends `frame` at `at` after the start.
    fn send(&mut self, frame: &[u8], at: Duration) {
        let (key, flags) = egress_flow(frame).expect("a frame that opens a flow");
        self.flows.record_egress(key, flags, self.start + at);
    }

    /// What the filter says of `frame` arriving at `at`.
    fn receive(&mut self, frame: &[u8], at: Duration) -> Verdict {
        let now = self.start + at;
        self.filter
            .check_frame_with_flows(frame, &mut self.flows, || now)
    }

    fn passes(&mut self, frame: &[u8], at: Duration) -> bool {
        self.receive(frame, at) == Verdict::Pass
    }
}

const NO_RULE: Verdict = Verdict::Drop(DropReason::NoRule);

#[test]
fn tcp_reply_passes_only_for_the_connection_the_guest_opened() {
    for (guest, remote, other) in [
        (GUEST4, REMOTE4, "198.51.100.8"),
        (GUEST6, REMOTE6, "2001:db8:ff::81"),
    ] {
        let mut vm = Vm::new();
        let syn_ack = tcp((remote, 443), (guest, 40000), SYN | ACK);
        assert_eq!(vm.receive(&syn_ack, SEC), NO_RULE, "{guest}: no flow yet");
        vm.send(&tcp((guest, 40000), (remote, 443), SYN), SEC);
        assert!(vm.passes(&syn_ack, 2 * SEC), "{guest}: the reply");
        let data = tcp((remote, 443), (guest, 40000), ACK);
        assert!(vm.passes(&data, 3 * SEC));
        for stranger in [
            tcp((remote, 444), (guest, 40000), ACK),
            tcp((other, 443), (guest, 40000), ACK),
            tcp((remote, 443), (guest, 40001), ACK),
            udp((remote, 443), (guest, 40000)),
        ] {
            assert_eq!(vm.receive(&stranger, 4 * SEC), NO_RULE, "{guest}");
        }
        assert_eq!(vm.flows.stats().replies, 2);
        // The stateless check never admits a reply.
        assert_eq!(vm.filter.check_frame(&data), NO_RULE);
    }
}

#[test]
fn udp_reply_passes_only_for_the_guest_flow() {
    for (guest, remote) in [(GUEST4, REMOTE4), (GUEST6, REMOTE6)] {
        let mut vm = Vm::new();
        let answer = udp((remote, 53), (guest, 5353));
        assert_eq!(vm.receive(&answer, SEC), NO_RULE);
        vm.send(&udp((guest, 5353), (remote, 53)), SEC);
        assert!(vm.passes(&answer, 2 * SEC), "{guest}: the DNS answer");
        assert!(!vm.passes(&udp((remote, 54), (guest, 5353)), 2 * SEC));
        assert!(!vm.passes(&udp((remote, 53), (guest, 5354)), 2 * SEC));
        assert!(!vm.passes(&tcp((remote, 53), (guest, 5353), ACK), 2 * SEC));
    }
}

#[test]
fn echo_reply_passes_only_for_a_recorded_identifier() {
    for (guest, remote) in [(GUEST4, REMOTE4), (GUEST6, REMOTE6)] {
        let mut vm = Vm::new();
        let reply = echo(remote, guest, false, 7);
        assert_eq!(vm.receive(&reply, SEC), NO_RULE);
        vm.send(&echo(guest, remote, true, 7), SEC);
        assert!(vm.passes(&reply, 2 * SEC), "{guest}: echo reply");
        assert!(
            !vm.passes(&echo(remote, guest, false, 8), 2 * SEC),
            "other id"
        );
        assert!(
            !vm.passes(&echo(remote, guest, true, 7), 2 * SEC),
            "an echo request from outside is no reply"
        );
    }
}

#[test]
fn tcp_flows_expire_by_state() {
    let (g, r) = ((GUEST4, 40000), (REMOTE4, 443));
    let reply = |flags| tcp(r, g, flags);

    // A SYN nobody answers lives SHORT_IDLE.
    let mut vm = Vm::new();
    vm.send(&tcp(g, r, SYN), Duration::ZERO);
    assert_eq!(vm.receive(&reply(SYN | ACK), SHORT_IDLE), NO_RULE);
    assert_eq!(vm.flows.len(), 0);

    // Answered, it lives TCP_ESTABLISHED_IDLE from the last frame.
    let mut vm = Vm::new();
    vm.send(&tcp(g, r, SYN), Duration::ZERO);
    assert!(vm.passes(&reply(SYN | ACK), SHORT_IDLE - SEC));
    let last = SHORT_IDLE - SEC + TCP_ESTABLISHED_IDLE - SEC;
    assert!(vm.passes(&reply(ACK), last));
    assert_eq!(
        vm.receive(&reply(ACK), last + TCP_ESTABLISHED_IDLE),
        NO_RULE
    );

    // A FIN from the guest shortens it to SHORT_IDLE.
    let mut vm = Vm::new();
    vm.send(&tcp(g, r, SYN), Duration::ZERO);
    assert!(vm.passes(&reply(SYN | ACK), SEC));
    vm.send(&tcp(g, r, FIN | ACK), 10 * SEC);
    assert_eq!(vm.receive(&reply(ACK), 10 * SEC + SHORT_IDLE), NO_RULE);

    // So does an RST from the remote end (which itself passes).
    let mut vm = Vm::new();
    vm.send(&tcp(g, r, SYN), Duration::ZERO);
    assert!(vm.passes(&reply(SYN | ACK), SEC));
    assert!(vm.passes(&reply(RST), 2 * SEC));
    assert!(vm.passes(&reply(ACK), 2 * SEC + SHORT_IDLE - SEC));
    assert_eq!(vm.receive(&reply(ACK), 2 * SEC + 2 * SHORT_IDLE), NO_RULE);

    // A new SYN on the ports of a closing flow starts it afresh.
    let mut vm = Vm::new();
    vm.send(&tcp(g, r, SYN), Duration::ZERO);
    assert!(vm.passes(&reply(SYN | ACK), SEC));
    vm.send(&tcp(g, r, RST), 2 * SEC);
    vm.send(&tcp(g, r, SYN), 3 * SEC);
    assert!(vm.passes(&reply(SYN | ACK), 4 * SEC));
    assert!(vm.passes(&reply(ACK), 4 * SEC + TCP_ESTABLISHED_IDLE - SEC));
}

#[test]
fn udp_and_echo_flows_expire() {
    let mut vm = Vm::new();
    vm.send(&udp((GUEST6, 5353), (REMOTE6, 53)), Duration::ZERO);
    vm.send(&echo(GUEST6, REMOTE6, true, 9), Duration::ZERO);
    let answer = udp((REMOTE6, 53), (GUEST6, 5353));
    let pong = echo(REMOTE6, GUEST6, false, 9);
    // Each reply refreshes its flow (time only moves forward).
    let pong_1 = ICMP_ECHO_IDLE - SEC;
    let pong_2 = pong_1 + ICMP_ECHO_IDLE - SEC;
    assert!(vm.passes(&pong, pong_1));
    assert!(vm.passes(&pong, pong_2));
    let answer_1 = SHORT_IDLE - SEC;
    assert!(vm.passes(&answer, answer_1));
    assert_eq!(vm.receive(&pong, pong_2 + ICMP_ECHO_IDLE), NO_RULE);
    let answer_2 = answer_1 + SHORT_IDLE - SEC;
    assert!(vm.passes(&answer, answer_2));
    assert_eq!(vm.receive(&answer, answer_2 + SHORT_IDLE), NO_RULE);
    assert!(vm.flows.is_empty());
    assert_eq!(vm.flows.stats().expired, 2);
}

/// The guest's UDP flow from port `n` to REMOTE4 port 53, at `ms`.
fn udp_flow(vm: &mut Vm, n: u16, ms: u64) {
    vm.send(&udp((GUEST4, n), (REMOTE4, 53)), Duration::from_millis(ms));
}

fn udp_answer(n: u16) -> Vec<u8> {
    udp((REMOTE4, 53), (GUEST4, n))
}

#[test]
fn a_full_table_evicts_the_least_recently_used_flow() {
    let mut vm = Vm::new();
    let max = MAX_FLOWS as u16;
    for n in 1..=max {
        udp_flow(&mut vm, n, u64::from(n));
    }
    assert_eq!(vm.flows.len(), MAX_FLOWS);
    // Flow 1, the first opened, was used since: flow 2 is now the oldest.
    assert!(vm.passes(&udp_answer(1), Duration::from_millis(5000)));
    udp_flow(&mut vm, max + 1, 5001);
    assert_eq!(vm.flows.len(), MAX_FLOWS);
    assert_eq!(vm.flows.stats().evicted, 1);
    let later = Duration::from_millis(6000);
    assert_eq!(vm.receive(&udp_answer(2), later), NO_RULE, "evicted");
    assert!(vm.passes(&udp_answer(1), later));
    assert!(vm.passes(&udp_answer(3), later));
    assert!(vm.passes(&udp_answer(max + 1), later));
}

#[test]
fn eviction_compares_flows_of_every_timeout() {
    let tcp_reply = tcp((REMOTE6, 443), (GUEST6, 40000), SYN | ACK);
    let pong = echo(REMOTE6, GUEST6, false, 5);
    let fill = |vm: &mut Vm, at: Duration| {
        for n in 0..MAX_FLOWS as u16 - 2 {
            vm.send(&udp((GUEST4, n), (REMOTE4, 53)), at);
        }
    };
    // An established TCP flow and an echo flow, used before any UDP flow.
    let mut vm = Vm::new();
    vm.send(&tcp((GUEST6, 40000), (REMOTE6, 443), SYN), Duration::ZERO);
    assert!(vm.passes(&tcp_reply, SEC));
    vm.send(&echo(GUEST6, REMOTE6, true, 5), 2 * SEC);
    fill(&mut vm, 3 * SEC);
    vm.send(&udp((GUEST4, 60_000), (REMOTE4, 53)), 4 * SEC);
    assert_eq!(vm.receive(&tcp_reply, 4 * SEC), NO_RULE, "the oldest");
    assert!(vm.passes(&pong, 4 * SEC));
    vm.send(&udp((GUEST4, 60_001), (REMOTE4, 53)), 5 * SEC);
    assert_eq!(
        vm.receive(&udp_answer(0), 5 * SEC),
        NO_RULE,
        "now the oldest"
    );
    assert!(vm.passes(&pong, 5 * SEC));
    assert_eq!(vm.flows.stats().evicted, 2);

    // Used after them, the TCP flow outlives the UDP flows.
    let mut vm = Vm::new();
    vm.send(&tcp((GUEST6, 40000), (REMOTE6, 443), SYN), Duration::ZERO);
    vm.send(&echo(GUEST6, REMOTE6, true, 5), SEC);
    fill(&mut vm, 2 * SEC);
    assert!(vm.passes(&tcp_reply, 3 * SEC));
    vm.send(&udp((GUEST4, 60_000), (REMOTE4, 53)), 4 * SEC);
    assert_eq!(
        vm.receive(&pong, 4 * SEC),
        NO_RULE,
        "the echo flow was oldest"
    );
    assert!(vm.passes(&tcp_reply, 4 * SEC));
}

#[test]
fn a_full_table_expires_stale_flows_before_evicting() {
    let mut vm = Vm::new();
    vm.send(&echo(GUEST4, REMOTE4, true, 1), Duration::ZERO);
    for n in 1..MAX_FLOWS as u16 {
        vm.send(&udp((GUEST4, n), (REMOTE4, 53)), SEC);
    }
    assert_eq!(vm.flows.len(), MAX_FLOWS);
    // The echo flow is stale by now; the UDP flows are not.
    vm.send(&udp((GUEST4, 0), (REMOTE4, 53)), ICMP_ECHO_IDLE);
    assert_eq!(vm.flows.len(), MAX_FLOWS);
    assert_eq!(vm.flows.stats().evicted, 0);
    assert_eq!(vm.flows.stats().expired, 1);
    assert!(vm.passes(&udp_answer(1), ICMP_ECHO_IDLE));
}

#[test]
fn a_guest_opening_flows_endlessly_stays_bounded() {
    let mut vm = Vm::new();
    for port in 0..3 * MAX_FLOWS as u16 {
        vm.send(&tcp((GUEST4, port), (REMOTE4, 80), SYN), Duration::ZERO);
    }
    assert_eq!(vm.flows.len(), MAX_FLOWS);
    assert!(vm.flows.slot_capacity() <= MAX_FLOWS);
    assert_eq!(vm.flows.stats().evicted, 2 * MAX_FLOWS as u64);
}

#[test]
fn icmp_errors_pass_only_about_a_live_flow() {
    let mut vm = Vm::new();
    let syn = tcp((GUEST4, 40000), (REMOTE4, 443), SYN);
    let datagram = udp((GUEST4, 33434), (REMOTE4, 33435));
    let ping = echo(GUEST4, REMOTE4, true, 77);
    let router = "203.0.113.1";
    let need_frag = |quoted: &[u8]| icmp(router, GUEST4, 3, 4, [0, 0, 5, 0xdc], quoted);
    let ttl_exceeded = |quoted: &[u8]| icmp(router, GUEST4, 11, 0, [0; 4], quoted);
    let unreachable = |quoted: &[u8]| icmp(REMOTE4, GUEST4, 3, 3, [0; 4], quoted);
    let errors = [
        need_frag(&quote(&syn)),
        ttl_exceeded(&quote(&datagram)),
        unreachable(&quote(&ping)),
    ];
    for e in &errors {
        assert_eq!(vm.receive(e, SEC), NO_RULE, "no flow yet");
    }
    vm.send(&syn, SEC);
    vm.send(&datagram, SEC);
    vm.send(&ping, SEC);
    for e in &errors {
        assert!(vm.passes(e, 2 * SEC));
    }
    // The whole packet quoted, not just 8 bytes of it, is fine too.
    assert!(vm.passes(&need_frag(&syn[14..]), 2 * SEC));
    // An error does not keep a flow alive.
    assert_eq!(vm.receive(&errors[2], SEC + ICMP_ECHO_IDLE), NO_RULE);
    // Quoting another flow, cut short, or addressed to someone else.
    let other = tcp((GUEST4, 40001), (REMOTE4, 443), SYN);
    assert_eq!(vm.receive(&need_frag(&quote(&other)), 3 * SEC), NO_RULE);
    let short = &quote(&syn)[..24];
    assert_eq!(vm.receive(&need_frag(short), 3 * SEC), NO_RULE);
    let elsewhere = icmp(router, "100.64.0.3", 3, 4, [0; 4], &quote(&syn));
    assert_eq!(vm.receive(&elsewhere, 3 * SEC), NO_RULE);
    // Other ICMP types about a live flow: redirect, parameter problem.
    for kind in [5, 12, icmp4::ECHO_REQUEST] {
        let msg = icmp(router, GUEST4, kind, 0, [0; 4], &quote(&syn));
        assert_eq!(vm.receive(&msg, 3 * SEC), NO_RULE, "ICMP type {kind}");
    }
    // ICMPv6 errors pass whatever they quote, as before.
    let v6_syn = tcp((GUEST6, 40000), (REMOTE6, 443), SYN);
    for kind in [1, 2, 3, 4] {
        let msg = icmp(REMOTE6, GUEST6, kind, 0, [0; 4], &quote(&v6_syn));
        assert!(vm.passes(&msg, 3 * SEC), "ICMPv6 type {kind}");
    }
}

#[test]
fn rules_and_flows_both_admit_ipv6() {
    let rules = restricted_tcp_22();
    let mut vm = Vm::with(rules);
    let inbound = tcp((REMOTE6, 50000), (GUEST6, 22), SYN);
    assert!(vm.passes(&inbound, SEC), "by the rule");
    let reply = tcp((REMOTE6, 443), (GUEST6, 40000), SYN | ACK);
    assert_eq!(vm.receive(&reply, SEC), NO_RULE);
    vm.send(&tcp((GUEST6, 40000), (REMOTE6, 443), SYN), SEC);
    assert!(vm.passes(&reply, 2 * SEC), "by the flow");
    assert!(vm.passes(&inbound, 2 * SEC), "still by the rule");
}

fn restricted_tcp_22() -> Filter {
    Filter::compile(
        &serde_json::from_str(
            r#"{"mode":"restricted","ingress":[{"protocol":"tcp","portStart":22}]}"#,
        )
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn open_mode_passes_everything_without_looking_at_flows() {
    let mut vm = Vm::with(Filter::open());
    vm.send(&udp((GUEST4, 5353), (REMOTE4, 53)), SEC);
    for frame in [
        udp((REMOTE4, 53), (GUEST4, 5353)),
        udp((REMOTE4, 99), (GUEST4, 99)),
        tcp((REMOTE6, 1), (GUEST6, 2), SYN),
        echo(REMOTE4, GUEST4, true, 1),
        arp(3),
        vec![0; 5],
    ] {
        let mut clock_read = false;
        let verdict = vm.filter.check_frame_with_flows(&frame, &mut vm.flows, || {
            clock_read = true;
            vm.start
        });
        assert_eq!(verdict, Verdict::Pass);
        assert!(!clock_read, "open mode looks nothing up");
    }
    assert_eq!(vm.flows.stats().replies, 0);
}

#[test]
fn frames_needing_no_flow_never_read_the_clock() {
    let mut vm = Vm::new();
    vm.send(&udp((GUEST4, 5353), (REMOTE4, 53)), SEC);
    for frame in [
        arp(1),
        icmp(REMOTE6, GUEST6, 1, 0, [0; 4], &[]),
        ethernet(0x88cc, &[0; 46]),
        vec![0; 20],
    ] {
        let mut clock_read = false;
        let _ = vm.filter.check_frame_with_flows(&frame, &mut vm.flows, || {
            clock_read = true;
            vm.start
        });
        assert!(!clock_read);
    }
    // Nor does anything while the table is empty.
    let mut empty = FlowTable::new();
    let mut clock_read = false;
    let frame = udp((REMOTE4, 53), (GUEST4, 5353));
    let verdict = vm.filter.check_frame_with_flows(&frame, &mut empty, || {
        clock_read = true;
        vm.start
    });
    assert_eq!(verdict, NO_RULE);
    assert!(!clock_read);
}

#[test]
fn only_tcp_udp_and_echo_requests_open_flows() {
    let opens = [
        tcp((GUEST4, 1), (REMOTE4, 2), SYN),
        udp((GUEST6, 1), (REMOTE6, 2)),
        echo(GUEST4, REMOTE4, true, 1),
        echo(GUEST6, REMOTE6, true, 1),
    ];
    for frame in &opens {
        assert!(egress_flow(frame).is_some());
    }
    let (key, flags) = egress_flow(&opens[0]).unwrap();
    assert_eq!(flags, SYN);
    assert_eq!(
        key,
        FlowKey {
            protocol: FlowProtocol::Tcp,
            guest: ip(GUEST4),
            guest_port: 1,
            remote: ip(REMOTE4),
            remote_port: 2,
        }
    );
    let mut later_fragment = ip_packet(GUEST4, REMOTE4, proto::UDP, &[0; 16]);
    later_fragment[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
    let mut bad_ihl = ip_packet(GUEST4, REMOTE4, proto::UDP, &[0; 16]);
    bad_ihl[0] = 0x44;
    for frame in [
        echo(GUEST4, REMOTE4, false, 1),
        echo(GUEST6, REMOTE6, false, 1),
        icmp(GUEST4, REMOTE4, 3, 3, [0; 4], &[]),
        arp(1),
        frame_of(&later_fragment),
        frame_of(&bad_ihl),
        frame_of(&ip_packet(GUEST4, REMOTE4, 47, &[0; 8])),
        tcp((GUEST4, 1), (REMOTE4, 2), SYN)[..30].to_vec(),
        vec![0; 13],
    ] {
        assert_eq!(egress_flow(&frame), None, "{frame:02x?}");
    }
}

#[test]
fn a_batch_clock_is_read_once_per_reuse_uses() {
    let mut clock = BatchClock::new();
    let first = clock.now();
    for _ in 1..BatchClock::REUSE {
        assert_eq!(clock.now(), first);
    }
    std::thread::sleep(Duration::from_millis(2));
    assert!(clock.now() > first, "read again");
}
