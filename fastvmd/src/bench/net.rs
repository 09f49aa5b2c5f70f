//! Network measurements: the ingress filter's cost per frame.

use std::hint::black_box;
use std::time::Instant;

use fastvm_proto::api::{FirewallMode, FirewallPolicy, FirewallProtocol, FirewallRule};
use fastvmd::net::firewall::{Filter, Verdict};

use super::boot::Row;

/// Frames judged per measured round.
const FRAMES: usize = 2_000_000;

/// An Ethernet + IPv6 frame from `src` to TCP port `port`, behind a
/// hop-by-hop and a destination-options header, with 1400 bytes of data.
fn tcp_frame(src: [u8; 16], port: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd];
    let payload_len: u16 = 8 + 8 + 20 + 1400;
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
    ip[6] = 0; // hop-by-hop
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src);
    ip[24] = 0xfd;
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop -> dest options
    f.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]); // dest options -> TCP
    let mut tcp = [0u8; 20];
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[12] = 5 << 4;
    f.extend_from_slice(&tcp);
    f.resize(f.len() + 1400, 0xab);
    f
}

/// A restricted policy of 16 rules; the frames match the last one.
fn policy() -> FirewallPolicy {
    let mut ingress: Vec<FirewallRule> = (0..15)
        .map(|i| FirewallRule {
            protocol: FirewallProtocol::Udp,
            port_start: 1000 + i,
            port_end: None,
            source_cidrs: Some(vec![
                "2001:db8:ffff::/48".into(),
                "2001:db8:eeee::/48".into(),
            ]),
            description: None,
        })
        .collect();
    ingress.push(FirewallRule {
        protocol: FirewallProtocol::Tcp,
        port_start: 8000,
        port_end: Some(8100),
        source_cidrs: Some(vec!["2001:db8:aaaa::/48".into(), "2001:db8::/32".into()]),
        description: None,
    });
    FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress,
    }
}

fn ns_per_frame(filter: &Filter, frame: &[u8], expect: Verdict) -> Result<f64, String> {
    if filter.check_frame(frame) != expect {
        return Err(format!("filter bench: expected {expect:?}"));
    }
    let start = Instant::now();
    for _ in 0..FRAMES {
        black_box(filter.check_frame(black_box(frame)));
    }
    Ok(start.elapsed().as_nanos() as f64 / FRAMES as f64)
}

/// The filter's cost per frame, passed and dropped, median of 5 rounds.
pub fn filter_rows() -> Result<Vec<Row>, String> {
    let filter = Filter::compile(&policy()).map_err(|e| e.to_string())?;
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    src[15] = 7;
    let allowed = tcp_frame(src, 8080);
    let blocked = tcp_frame(src, 22);
    let rounds = |frame: &[u8], expect: Verdict| -> Result<f64, String> {
        let mut v = (0..5)
            .map(|_| ns_per_frame(&filter, frame, expect))
            .collect::<Result<Vec<_>, _>>()?;
        v.sort_by(f64::total_cmp);
        Ok(v[2])
    };
    let pass = rounds(&allowed, Verdict::Pass)?;
    let drop = rounds(
        &blocked,
        Verdict::Drop(fastvmd::net::firewall::DropReason::NoRule),
    )?;
    Ok(vec![(
        "ingress filter per frame (restricted, 16 rules, 2 extension headers)".into(),
        format!("{pass:.1} ns passed (matches the last rule), {drop:.1} ns dropped"),
        "-".into(),
    )])
}

/// Every network row.
pub fn measure(_args: &super::BenchArgs, _kernel: &std::path::Path) -> Result<Vec<Row>, String> {
    filter_rows()
}
