//! The flow table under load: a long random workload keeps its lists
//! consistent, and the cost of the flow work per frame (an ignored
//! measurement).

use std::hint::black_box;
use std::time::{Duration, Instant};

use fastvm_proto::api::FirewallPolicy;

use super::flows::tcp_flags::*;
use super::test_frames::*;
use super::*;

#[test]
fn the_lists_stay_consistent_under_a_random_workload() {
    let mut table = FlowTable::new();
    let start = Instant::now();
    let mut now = start;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let key = |n: u64| FlowKey {
        protocol: [FlowProtocol::Tcp, FlowProtocol::Udp, FlowProtocol::IcmpEcho][(n % 3) as usize],
        guest: ip(GUEST6),
        guest_port: (n / 3) as u16,
        remote: ip(REMOTE6),
        remote_port: 443,
    };
    let flags = [SYN, SYN | ACK, ACK, FIN | ACK, RST, 0];
    for step in 0..90_000u64 {
        let k = key(next(3 * 10_000));
        let f = flags[next(flags.len() as u64) as usize];
        match next(8) {
            0..=3 => table.record_egress(k, f, now),
            4 | 5 => {
                let _ = table.admit_reply(&k, f, now);
            }
            6 => {
                let _ = table.admit_error(&k, now);
            }
            // Busy phases fill the table; quiet ones let flows expire.
            _ if step % 30_000 < 20_000 => now += Duration::from_millis(next(4)),
            _ => now += Duration::from_millis(next(2_000)),
        }
        if step % 3_000 == 0 {
            table.check_invariants();
        }
    }
    table.check_invariants();
    let stats = table.stats();
    assert!(
        stats.evicted > 0 && stats.expired > 0 && stats.replies > 0,
        "{stats:?}"
    );
    assert!(table.slot_capacity() <= MAX_FLOWS);
}

/// Nanoseconds per call of `f`, over `rounds` calls.
fn ns_per_call(rounds: u32, mut f: impl FnMut(u32)) -> f64 {
    let start = Instant::now();
    for i in 0..rounds {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / f64::from(rounds)
}

/// The cost of the flow work per frame, with a table of 16 flows and a
/// full one, the clock read as the device reads it; run with
/// `cargo test --release -p fastvm-vmm flow_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn flow_cost() {
    for size in [16, MAX_FLOWS as u16] {
        println!("{}", measure_flow_cost(size));
    }
}

fn measure_flow_cost(size: u16) -> String {
    let policy: FirewallPolicy = serde_json::from_str(
        r#"{"mode":"restricted","ingress":[{"protocol":"tcp","portStart":22}]}"#,
    )
    .unwrap();
    let filter = Filter::compile(&policy).unwrap();
    let mut flows = FlowTable::new();
    let now = Instant::now();
    for port in 0..size {
        let syn = tcp((GUEST4, 10_000 + port), (REMOTE4, 443), SYN);
        let (key, flags) = egress_flow(&syn).unwrap();
        flows.record_egress(key, flags, now);
    }
    let frames =
        |f: &dyn Fn(u16) -> Vec<u8>| -> Vec<Vec<u8>> { (0..size).map(|p| f(10_000 + p)).collect() };
    let replies = frames(&|p| tcp((REMOTE4, 443), (GUEST4, p), ACK));
    let strangers = frames(&|p| tcp((REMOTE4, 444), (GUEST4, p), ACK));
    let egress = frames(&|p| tcp((GUEST4, p), (REMOTE4, 443), ACK));
    let rounds = 2_000_000;
    let at = |i: u32| i as usize % usize::from(size);
    let flows = &mut flows;
    let mut clock = BatchClock::new();
    let reply = ns_per_call(rounds, |i| {
        let frame = black_box(&replies[at(i)]);
        let v = filter.check_frame_with_flows(frame, flows, || clock.now());
        assert_eq!(v, Verdict::Pass);
    });
    let reply_clock_each = ns_per_call(rounds, |i| {
        let frame = black_box(&replies[at(i)]);
        let v = filter.check_frame_with_flows(frame, flows, Instant::now);
        assert_eq!(v, Verdict::Pass);
    });
    let miss = ns_per_call(rounds, |i| {
        let frame = black_box(&strangers[at(i)]);
        black_box(filter.check_frame_with_flows(frame, flows, || clock.now()));
    });
    let refresh = ns_per_call(rounds, |i| {
        let (key, flags) = egress_flow(black_box(&egress[at(i)])).unwrap();
        flows.record_egress(key, flags, clock.now());
    });
    let arp = arp(1);
    let no_flow_work = ns_per_call(rounds, |_| {
        black_box(filter.check_frame_with_flows(black_box(&arp), flows, || clock.now()));
    });
    let stateless = ns_per_call(rounds, |i| {
        black_box(filter.check_frame(black_box(&replies[at(i)])));
    });
    let instant = ns_per_call(rounds, |_| {
        black_box(Instant::now());
    });
    assert_eq!(flows.len(), usize::from(size));
    let mut churn = FlowTable::new();
    let opens = ns_per_call(rounds, |i| {
        let key = FlowKey {
            protocol: FlowProtocol::Udp,
            guest: ip(GUEST4),
            guest_port: i as u16,
            remote: ip(REMOTE4),
            remote_port: (i >> 16) as u16,
        };
        churn.record_egress(key, 0, clock.now());
    });
    assert_eq!(churn.len(), MAX_FLOWS);
    format!(
        "{size} flows (ns per frame): RX reply {reply:.1} ({reply_clock_each:.1} reading \
         the clock each frame), RX miss {miss:.1}, TX refresh {refresh:.1}, RX ARP (no \
         flow work) {no_flow_work:.1}, stateless check of the reply {stateless:.1}; \
         TX new flow in a full table {opens:.1}; Instant::now {instant:.1}"
    )
}
