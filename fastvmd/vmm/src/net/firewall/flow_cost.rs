//! What the stateful filter's flow work costs per frame, for `fastvmd
//! bench`: a reply let in by its flow, a stranger dropped, an egress frame
//! refreshing its flow, a frame with no flow work, and a new flow in a full
//! table, with a table of a given size and the clock read as the device
//! reads it (once per batch). The monitor program never calls it.

use std::hint::black_box;
use std::time::Instant;

use fastvm_proto::api::FirewallPolicy;

use super::flows::tcp_flags::{ACK, SYN};
use super::test_frames::{GUEST4, REMOTE4, arp, ip, tcp};
use super::{
    BatchClock, DropReason, Filter, FlowKey, FlowProtocol, FlowTable, MAX_FLOWS, Verdict,
    egress_flow,
};

/// Nanoseconds per frame of each kind of flow work.
#[derive(Debug, Clone, Copy)]
pub struct FlowCost {
    /// Flows in the table while measured.
    pub flows: usize,
    /// A reply let in by its flow (the clock read per batch).
    pub reply: f64,
    /// The same, reading the clock for every frame.
    pub reply_clock_each: f64,
    /// An inbound frame no flow and no rule lets in.
    pub miss: f64,
    /// An egress frame refreshing its flow.
    pub refresh: f64,
    /// An inbound ARP frame (no flow work).
    pub no_flow_work: f64,
    /// The stateless check of the reply, for comparison.
    pub stateless: f64,
    /// A new flow in a full table (the least recently used evicted).
    pub open_in_full_table: f64,
}

/// The remote port of the flows that fill the table before new ones are
/// opened in it (never one of the new flows').
const FILL_PORT: u16 = u16::MAX;

/// Nanoseconds per call of `f`, over `rounds` calls.
fn ns_per_call(rounds: u32, mut f: impl FnMut(u32)) -> f64 {
    let start = Instant::now();
    for i in 0..rounds {
        f(i);
    }
    start.elapsed().as_nanos() as f64 / f64::from(rounds)
}

/// Measures the flow work with `size` flows in the table (at most
/// [`MAX_FLOWS`]), each kind over `rounds` frames; an error if a frame is
/// not judged as it should be.
pub fn measure(size: u16, rounds: u32) -> Result<FlowCost, String> {
    let size = size.clamp(1, MAX_FLOWS as u16);
    let policy: FirewallPolicy = serde_json::from_str(
        r#"{"mode":"restricted","ingress":[{"protocol":"tcp","portStart":22}]}"#,
    )
    .map_err(|e| e.to_string())?;
    let filter = Filter::compile(&policy).map_err(|e| e.to_string())?;
    let mut flows = FlowTable::new();
    let now = Instant::now();
    for port in 0..size {
        let syn = tcp((GUEST4, 10_000 + port), (REMOTE4, 443), SYN);
        let (key, flags) = egress_flow(&syn).ok_or("a SYN without a flow")?;
        flows.record_egress(key, flags, now);
    }
    let frames =
        |f: &dyn Fn(u16) -> Vec<u8>| -> Vec<Vec<u8>> { (0..size).map(|p| f(10_000 + p)).collect() };
    let replies = frames(&|p| tcp((REMOTE4, 443), (GUEST4, p), ACK));
    let strangers = frames(&|p| tcp((REMOTE4, 444), (GUEST4, p), ACK));
    let egress = frames(&|p| tcp((GUEST4, p), (REMOTE4, 443), ACK));
    let mut clock = BatchClock::new();
    let judged = |frame: &[u8], flows: &mut FlowTable, clock: &mut BatchClock| {
        filter.check_frame_with_flows(frame, flows, || clock.now())
    };
    if judged(&replies[0], &mut flows, &mut clock) != Verdict::Pass {
        return Err("a reply to an open flow was not let in".into());
    }
    if judged(&strangers[0], &mut flows, &mut clock) != Verdict::Drop(DropReason::NoRule) {
        return Err("a frame of no flow was let in".into());
    }
    let at = |i: u32| i as usize % usize::from(size);
    let flows = &mut flows;
    let reply = ns_per_call(rounds, |i| {
        black_box(filter.check_frame_with_flows(black_box(&replies[at(i)]), flows, || clock.now()));
    });
    let reply_clock_each = ns_per_call(rounds, |i| {
        black_box(filter.check_frame_with_flows(black_box(&replies[at(i)]), flows, Instant::now));
    });
    let miss = ns_per_call(rounds, |i| {
        black_box(
            filter.check_frame_with_flows(black_box(&strangers[at(i)]), flows, || clock.now()),
        );
    });
    let refresh = ns_per_call(rounds, |i| {
        if let Some((key, flags)) = egress_flow(black_box(&egress[at(i)])) {
            flows.record_egress(key, flags, clock.now());
        }
    });
    let arp = arp(1);
    let no_flow_work = ns_per_call(rounds, |_| {
        black_box(filter.check_frame_with_flows(black_box(&arp), flows, || clock.now()));
    });
    let stateless = ns_per_call(rounds, |i| {
        black_box(filter.check_frame(black_box(&replies[at(i)])));
    });
    if flows.len() != usize::from(size) {
        return Err(format!("the table holds {} flows, not {size}", flows.len()));
    }
    let mut churn = FlowTable::new();
    for n in 0..MAX_FLOWS {
        let key = FlowKey {
            protocol: FlowProtocol::Udp,
            guest: ip(GUEST4),
            guest_port: n as u16,
            remote: ip(REMOTE4),
            remote_port: FILL_PORT,
        };
        churn.record_egress(key, 0, now);
    }
    let open_in_full_table = ns_per_call(rounds, |i| {
        let key = FlowKey {
            protocol: FlowProtocol::Udp,
            guest: ip(GUEST4),
            guest_port: i as u16,
            remote: ip(REMOTE4),
            remote_port: (i >> 16) as u16,
        };
        churn.record_egress(key, 0, clock.now());
    });
    if churn.len() != MAX_FLOWS {
        return Err(format!("the full table holds {} flows", churn.len()));
    }
    Ok(FlowCost {
        flows: usize::from(size),
        reply,
        reply_clock_each,
        miss,
        refresh,
        no_flow_work,
        stateless,
        open_in_full_table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_each_kind_of_flow_work_with_a_table_of_the_given_size() {
        let cost = measure(16, 1_000).expect("a measurement");
        assert_eq!(cost.flows, 16);
        for ns in [
            cost.reply,
            cost.reply_clock_each,
            cost.miss,
            cost.refresh,
            cost.no_flow_work,
            cost.stateless,
            cost.open_in_full_table,
        ] {
            assert!(ns.is_finite() && ns > 0.0, "{cost:?}");
        }
        assert_eq!(
            measure(u16::MAX, 10).expect("a full table").flows,
            MAX_FLOWS
        );
    }
}
