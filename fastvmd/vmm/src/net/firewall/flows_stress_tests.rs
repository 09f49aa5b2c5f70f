//! The flow table under load: a long random workload keeps its lists
//! consistent (the cost of the flow work per frame is `fastvmd bench`'s,
//! [`super::flow_cost`]).

use std::time::{Duration, Instant};

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
