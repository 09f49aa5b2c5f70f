//! Network measurements: the ingress filter's cost per frame (rules, and
//! the stateful flow work), and TCP throughput from this host to a guest
//! with the filter on and off.

use std::hint::black_box;
use std::time::Instant;

use crate::net::firewall::{Filter, Verdict};
use fastvm_proto::api::{FirewallMode, FirewallPolicy, FirewallProtocol, FirewallRule};

use super::boot::Row;

/// Frames judged per measured round.
const FRAMES: usize = 2_000_000;
/// Frames per kind of flow work in one round.
const FLOW_FRAMES: u32 = 1_000_000;

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
        Verdict::Drop(crate::net::firewall::DropReason::NoRule),
    )?;
    let mut rows = vec![(
        "ingress filter per frame (restricted, 16 rules, 2 extension headers)".into(),
        format!("{pass:.1} ns passed (matches the last rule), {drop:.1} ns dropped"),
        "-".into(),
    )];
    for flows in [16, crate::vmm::net::firewall::MAX_FLOWS as u16] {
        rows.push(flow_row(flows)?);
    }
    Ok(rows)
}

/// The stateful filter's flow work per frame with `flows` flows in the
/// table (the lowest of 3 rounds of each kind).
fn flow_row(flows: u16) -> Result<Row, String> {
    use crate::vmm::net::firewall::flow_cost::{FlowCost, measure};
    let runs = (0..3)
        .map(|_| measure(flows, FLOW_FRAMES))
        .collect::<Result<Vec<FlowCost>, String>>()?;
    let best = |f: fn(&FlowCost) -> f64| runs.iter().map(f).fold(f64::INFINITY, f64::min);
    Ok((
        format!("stateful filter per frame, {flows} flows in the table (IPv4 TCP)"),
        format!(
            "reply let in {:.1} ns ({:.1} reading the clock each frame), stranger dropped \
             {:.1} ns, egress refresh {:.1} ns, ARP (no flow work) {:.1} ns, new flow in a \
             full table {:.1} ns; stateless check {:.1} ns",
            best(|c| c.reply),
            best(|c| c.reply_clock_each),
            best(|c| c.miss),
            best(|c| c.refresh),
            best(|c| c.no_flow_work),
            best(|c| c.open_in_full_table),
            best(|c| c.stateless),
        ),
        "-".into(),
    ))
}

/// Bytes sent per throughput measurement.
const THROUGHPUT_BYTES: usize = 32 << 20;

/// Boots `kernel` with a NIC on a new tap under `policy`, routes its
/// address, and measures TCP throughput to its discard port: the time from
/// connect to the guest closing after it read everything.
fn throughput(
    kernel: &std::path::Path,
    memory_mib: u64,
    policy: &FirewallPolicy,
) -> Result<f64, String> {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    use crate::net::addr::{Mac, Prefix};
    use crate::supervisor::control_client::ControlClient;
    use crate::vmm::control::Request;

    let tap = format!("fvb{}", std::process::id() % 1_000_000);
    let mac = Mac::random().map_err(|e| e.to_string())?;
    let prefix = Prefix::random_ula().map_err(|e| e.to_string())?;
    let addr = prefix.address(mac);
    let kernel = kernel.to_path_buf();
    let policy_json = serde_json::to_string(policy).map_err(|e| e.to_string())?;
    let (m, started) = super::Monitor::spawn(|_| {
        let mut args = super::one_vcpu(&kernel, memory_mib);
        args.extend([
            "--tap".into(),
            tap.clone(),
            "--mac".into(),
            mac.to_string(),
            "--ip6".into(),
            addr.to_string(),
            "--firewall".into(),
            policy_json,
        ]);
        Ok(args)
    })?;
    let control = m.dir.join("control.sock");
    while ControlClient::connect(&control)
        .and_then(|mut c| c.call(&Request::Status))
        .is_err()
    {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("the monitor did not come up".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    crate::net::host::configure_tap(&tap, addr, None)?;
    let target = SocketAddr::from((addr, 9));
    let mut stream = loop {
        match TcpStream::connect_timeout(&target, Duration::from_millis(300)) {
            Ok(s) => break s,
            Err(e) if started.elapsed() > Duration::from_secs(20) => {
                return Err(format!("guest discard port: {e}"));
            }
            Err(_) => {}
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let chunk = vec![0x5a_u8; 64 << 10];
    let start = Instant::now();
    let mut sent = 0;
    while sent < THROUGHPUT_BYTES {
        stream.write_all(&chunk).map_err(|e| e.to_string())?;
        sent += chunk.len();
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut rest = [0u8; 64];
    while stream
        .read(&mut rest)
        .map_err(|e| format!("waiting for the guest: {e}"))?
        > 0
    {}
    let secs = start.elapsed().as_secs_f64();
    drop(m);
    Ok(sent as f64 / secs / f64::from(1 << 20))
}

/// Every network row; the throughput rows need tap permission.
pub fn measure(args: &super::BenchArgs, kernel: &std::path::Path) -> Result<Vec<Row>, String> {
    let mut rows = filter_rows()?;
    if let Some(why) = crate::net::host::tap_unavailable() {
        eprintln!("bench: no throughput rows: {why}");
        return Ok(rows);
    }
    let restricted = FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress: vec![FirewallRule {
            protocol: FirewallProtocol::Tcp,
            port_start: 9,
            port_end: None,
            source_cidrs: None,
            description: None,
        }],
    };
    let open = FirewallPolicy {
        mode: FirewallMode::Open,
        ingress: Vec::new(),
    };
    let on = throughput(kernel, args.memory_mib, &restricted)?;
    let off = throughput(kernel, args.memory_mib, &open)?;
    rows.push((
        format!(
            "host → guest TCP throughput over the tap ({} MiB to the test guest's discard port)",
            THROUGHPUT_BYTES >> 20
        ),
        format!("{on:.1} MiB/s with the filter on (restricted, 1 rule), {off:.1} MiB/s off (open)"),
        "-".into(),
    ));
    Ok(rows)
}
