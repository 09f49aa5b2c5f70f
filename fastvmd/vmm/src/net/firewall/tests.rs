//! The stateless filter against crafted IPv6 frames: modes, rules,
//! essential ICMPv6, extension headers, fragments, truncation and other
//! ethertypes.

use std::net::Ipv6Addr;

use fastvm_proto::api::{FirewallMode, FirewallPolicy, FirewallProtocol, FirewallRule};

use super::*;

const SRC: &str = "2001:db8:1::7";
const DST: &str = "fd12:3456:789a::2";

/// Builds Ethernet + IPv6 frames with a chain of extension headers.
struct Pkt {
    src: Ipv6Addr,
    hop_limit: u8,
    /// (next-header value of this header, its bytes) in order.
    ext: Vec<(u8, Vec<u8>)>,
    upper: u8,
    payload: Vec<u8>,
}

impl Pkt {
    fn new(upper: u8, payload: Vec<u8>) -> Pkt {
        Pkt {
            src: SRC.parse().unwrap(),
            hop_limit: 64,
            ext: Vec::new(),
            upper,
            payload,
        }
    }

    fn tcp(port: u16) -> Pkt {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&40000u16.to_be_bytes());
        h[2..4].copy_from_slice(&port.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = 0x02; // SYN
        Pkt::new(proto::TCP, h)
    }

    fn udp(port: u16) -> Pkt {
        let mut h = vec![0u8; 12];
        h[0..2].copy_from_slice(&5353u16.to_be_bytes());
        h[2..4].copy_from_slice(&port.to_be_bytes());
        h[4..6].copy_from_slice(&12u16.to_be_bytes());
        Pkt::new(proto::UDP, h)
    }

    fn icmp(kind: u8) -> Pkt {
        Pkt::new(proto::ICMPV6, vec![kind, 0, 0, 0, 0, 0, 0, 0])
    }

    fn from(mut self, src: &str) -> Pkt {
        self.src = src.parse().unwrap();
        self
    }

    fn hops(mut self, hop_limit: u8) -> Pkt {
        self.hop_limit = hop_limit;
        self
    }

    /// Appends an options-style header (hop-by-hop, routing, dest options)
    /// of `units` 8-byte units beyond the first.
    fn opts(mut self, kind: u8, units: u8) -> Pkt {
        let mut h = vec![0u8; (usize::from(units) + 1) * 8];
        h[1] = units;
        self.ext.push((kind, h));
        self
    }

    fn ah(mut self) -> Pkt {
        // AH lengths count 4-byte words minus 2: (2 + 2) * 4 = 16 bytes.
        let mut h = vec![0u8; 16];
        h[1] = 2;
        self.ext.push((proto::AH, h));
        self
    }

    fn fragment(mut self, offset_units: u16, more: bool) -> Pkt {
        let mut h = vec![0u8; 8];
        let v = (offset_units << 3) | u16::from(more);
        h[2..4].copy_from_slice(&v.to_be_bytes());
        h[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        self.ext.push((proto::FRAGMENT, h));
        self
    }

    fn ipv6(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (_, bytes)) in self.ext.iter().enumerate() {
            let mut h = bytes.clone();
            h[0] = self.ext.get(i + 1).map_or(self.upper, |(k, _)| *k);
            body.extend_from_slice(&h);
        }
        body.extend_from_slice(&self.payload);
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
        p[6] = self.ext.first().map_or(self.upper, |(k, _)| *k);
        p[7] = self.hop_limit;
        p[8..24].copy_from_slice(&self.src.octets());
        p[24..40].copy_from_slice(&DST.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&body);
        p
    }

    fn frame(&self) -> Vec<u8> {
        ethernet(ETHERTYPE_IPV6, &self.ipv6())
    }
}

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn rule(protocol: FirewallProtocol, start: u32, end: Option<u32>, cidrs: &[&str]) -> FirewallRule {
    FirewallRule {
        protocol,
        port_start: start,
        port_end: end,
        source_cidrs: (!cidrs.is_empty()).then(|| cidrs.iter().map(|s| s.to_string()).collect()),
        description: None,
    }
}

fn restricted(rules: Vec<FirewallRule>) -> Filter {
    Filter::compile(&FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress: rules,
    })
    .unwrap()
}

/// TCP 22 from anywhere, UDP 5000-5010 from 2001:db8:1::/48.
fn web_filter() -> Filter {
    restricted(vec![
        rule(FirewallProtocol::Tcp, 22, None, &[]),
        rule(
            FirewallProtocol::Udp,
            5000,
            Some(5010),
            &["2001:db8:1::/48"],
        ),
    ])
}

fn pass(f: &Filter, p: &Pkt) -> bool {
    f.check_frame(&p.frame()) == Verdict::Pass
}

#[test]
fn default_policy_drops_tcp_udp_and_echo() {
    let f = Filter::compile(&FirewallPolicy::default()).unwrap();
    assert!(!f.is_open());
    assert_eq!(
        f.check_frame(&Pkt::tcp(22).frame()),
        Verdict::Drop(DropReason::NoRule)
    );
    assert!(!pass(&f, &Pkt::udp(53)));
    assert!(!pass(&f, &Pkt::icmp(128)), "echo request is not essential");
}

#[test]
fn open_mode_passes_everything() {
    let f = Filter::compile(&FirewallPolicy {
        mode: FirewallMode::Open,
        ingress: vec![rule(FirewallProtocol::Tcp, 1, None, &[])],
    })
    .unwrap();
    assert!(pass(&f, &Pkt::tcp(8080)));
    assert!(pass(&f, &Pkt::udp(9)));
    assert!(pass(&f, &Pkt::tcp(80).fragment(3, false)));
    assert_eq!(f.check_frame(&[0u8; 3]), Verdict::Pass);
    assert_eq!(f.check_frame(&ethernet(0x0806, &[0; 28])), Verdict::Pass);
}

#[test]
fn rules_match_protocol_port_and_source() {
    let f = web_filter();
    assert!(pass(&f, &Pkt::tcp(22)));
    assert!(pass(&f, &Pkt::tcp(22).from("fe80::1")));
    assert!(!pass(&f, &Pkt::tcp(23)));
    assert!(
        !pass(&f, &Pkt::tcp(5000)),
        "the UDP rule does not admit TCP"
    );
    assert!(!pass(&f, &Pkt::udp(22)), "the TCP rule does not admit UDP");
    assert!(pass(&f, &Pkt::udp(5000)));
    assert!(pass(&f, &Pkt::udp(5010)));
    assert!(!pass(&f, &Pkt::udp(4999)));
    assert!(!pass(&f, &Pkt::udp(5011)));
    assert!(pass(&f, &Pkt::udp(5005).from("2001:db8:1:ffff::1")));
    assert!(!pass(&f, &Pkt::udp(5005).from("2001:db8:2::1")));
    assert!(!pass(&f, &Pkt::udp(5005).from("::ffff:10.0.0.1")));
}

#[test]
fn bare_address_source_is_one_host_and_empty_list_is_everyone() {
    let f = restricted(vec![
        rule(FirewallProtocol::Tcp, 443, None, &["2001:db8::5"]),
        FirewallRule {
            source_cidrs: Some(Vec::new()),
            ..rule(FirewallProtocol::Tcp, 80, None, &[])
        },
    ]);
    assert!(pass(&f, &Pkt::tcp(443).from("2001:db8::5")));
    assert!(!pass(&f, &Pkt::tcp(443).from("2001:db8::6")));
    assert!(pass(&f, &Pkt::tcp(80).from("2a00::1")));
}

#[test]
fn essential_icmpv6_passes_in_restricted_mode() {
    let f = Filter::default();
    for kind in [1, 2, 3, 4] {
        assert!(pass(&f, &Pkt::icmp(kind)), "ICMPv6 error type {kind}");
        assert!(
            pass(&f, &Pkt::icmp(kind).hops(1)),
            "type {kind}, hop limit 1"
        );
    }
    for kind in 133..=137 {
        assert!(pass(&f, &Pkt::icmp(kind).hops(255)), "NDP type {kind}");
        assert!(
            !pass(&f, &Pkt::icmp(kind).hops(254)),
            "NDP type {kind} routed from off-link"
        );
        assert!(
            !pass(&f, &Pkt::icmp(kind).hops(255).fragment(0, true)),
            "fragmented NDP type {kind}"
        );
    }
    for kind in [0, 5, 100, 127, 128, 129, 130, 138, 143, 255] {
        assert!(!pass(&f, &Pkt::icmp(kind).hops(255)), "ICMPv6 type {kind}");
    }
}

#[test]
fn extension_headers_are_walked_to_the_transport_header() {
    let f = web_filter();
    let chain = Pkt::tcp(22)
        .opts(proto::HOP_BY_HOP, 0)
        .opts(proto::DEST_OPTIONS, 2)
        .opts(proto::ROUTING, 1)
        .ah()
        .opts(proto::DEST_OPTIONS, 0);
    assert!(pass(&f, &chain));
    let blocked = Pkt::tcp(23)
        .opts(proto::HOP_BY_HOP, 0)
        .opts(proto::DEST_OPTIONS, 3);
    assert!(!pass(&f, &blocked));
    let icmp = Pkt::icmp(135).hops(255).opts(proto::HOP_BY_HOP, 0);
    assert!(pass(&f, &icmp));
    let summary = parse_ipv6(&chain.ipv6()).unwrap();
    assert_eq!(
        summary.upper,
        Upper::Ports {
            protocol: proto::TCP,
            src_port: 40000,
            dst_port: 22,
            tcp_flags: 0x02,
        }
    );
}

#[test]
fn misplaced_hop_by_hop_and_long_chains_are_malformed() {
    let f = web_filter();
    let late_hbh = Pkt::tcp(22)
        .opts(proto::DEST_OPTIONS, 0)
        .opts(proto::HOP_BY_HOP, 0);
    assert_eq!(
        f.check_frame(&late_hbh.frame()),
        Verdict::Drop(DropReason::Malformed(Malformed::MisplacedHopByHop))
    );
    let mut long = Pkt::tcp(22);
    for _ in 0..=MAX_EXT {
        long = long.opts(proto::DEST_OPTIONS, 0);
    }
    assert_eq!(
        f.check_frame(&long.frame()),
        Verdict::Drop(DropReason::Malformed(Malformed::TooManyExtensions))
    );
    let mut ok = Pkt::tcp(22);
    for _ in 0..MAX_EXT {
        ok = ok.opts(proto::DEST_OPTIONS, 0);
    }
    assert!(pass(&f, &ok), "{} extension headers are fine", MAX_EXT);
}

const MAX_EXT: usize = packet::MAX_EXTENSION_HEADERS;

#[test]
fn esp_no_next_header_and_unknown_protocols_are_dropped() {
    let f = web_filter();
    for upper in [proto::ESP, proto::NO_NEXT_HEADER, 4, 41, 132, 253] {
        // Bytes that would read as destination port 22 if misparsed as TCP.
        let mut payload = vec![0u8; 24];
        payload[2..4].copy_from_slice(&22u16.to_be_bytes());
        payload[12] = 5 << 4;
        let p = Pkt::new(upper, payload);
        assert_eq!(
            f.check_frame(&p.frame()),
            Verdict::Drop(DropReason::NoRule),
            "protocol {upper}"
        );
    }
}

#[test]
fn fragments_never_slip_past_a_rule() {
    let f = web_filter();
    // A complete first fragment of an allowed flow passes.
    assert!(pass(&f, &Pkt::tcp(22).fragment(0, true)));
    // An atomic fragment (offset 0, no more) is a whole packet.
    assert!(pass(&f, &Pkt::udp(5001).fragment(0, false)));
    // A later fragment, whatever its bytes look like, never passes.
    for more in [true, false] {
        let later = Pkt::tcp(22).fragment(1, more);
        assert_eq!(
            f.check_frame(&later.frame()),
            Verdict::Drop(DropReason::Fragment)
        );
    }
    // A first fragment that cuts the TCP header short is dropped.
    let mut short = Pkt::tcp(22).fragment(0, true);
    short.payload.truncate(12);
    assert_eq!(
        f.check_frame(&short.frame()),
        Verdict::Drop(DropReason::Fragment)
    );
    // Likewise one whose TCP options run past the fragment.
    let mut opts = Pkt::tcp(22).fragment(0, true);
    opts.payload[12] = 15 << 4;
    assert_eq!(
        f.check_frame(&opts.frame()),
        Verdict::Drop(DropReason::Fragment)
    );
    // The port of a blocked flow in a first fragment is still read.
    assert!(!pass(&f, &Pkt::tcp(23).fragment(0, true)));
    // Fragment header behind other extension headers.
    let deep = Pkt::tcp(22)
        .opts(proto::HOP_BY_HOP, 0)
        .fragment(7, false)
        .opts(proto::DEST_OPTIONS, 0);
    assert!(!pass(&f, &deep));
    // ICMPv6 errors in a first fragment still pass (they are essential).
    assert!(pass(&f, &Pkt::icmp(2).fragment(0, true)));
}

#[test]
fn truncated_packets_are_dropped() {
    let f = web_filter();
    let good = Pkt::tcp(22).opts(proto::DEST_OPTIONS, 1).frame();
    assert!(f.check_frame(&good) == Verdict::Pass);
    // Every shorter cut of a passing frame is dropped.
    for len in 0..good.len() {
        assert_ne!(
            f.check_frame(&good[..len]),
            Verdict::Pass,
            "frame cut to {len} bytes"
        );
    }
    // Payload length larger than the packet.
    let mut lying = good.clone();
    lying[14 + 4..14 + 6].copy_from_slice(&500u16.to_be_bytes());
    assert_eq!(
        f.check_frame(&lying),
        Verdict::Drop(DropReason::Malformed(Malformed::Truncated))
    );
    // Payload length that hides the TCP header behind trailing bytes.
    let mut hidden = good.clone();
    hidden[14 + 4..14 + 6].copy_from_slice(&16u16.to_be_bytes());
    assert_ne!(f.check_frame(&hidden), Verdict::Pass);
    // An extension header longer than the packet.
    let mut long_ext = good.clone();
    long_ext[14 + 40 + 1] = 200;
    assert_eq!(
        f.check_frame(&long_ext),
        Verdict::Drop(DropReason::Malformed(Malformed::ExtensionTruncated))
    );
    // TCP data offset below 5.
    let mut bad_tcp = Pkt::tcp(22);
    bad_tcp.payload[12] = 4 << 4;
    assert_eq!(
        f.check_frame(&bad_tcp.frame()),
        Verdict::Drop(DropReason::Malformed(Malformed::BadTcpHeader))
    );
    // Ethernet padding after a short packet is ignored.
    let mut padded = Pkt::udp(5000).frame();
    padded.extend_from_slice(&[0u8; 10]);
    assert!(f.check_frame(&padded) == Verdict::Pass);
}

#[test]
fn bad_versions_and_jumbograms_are_malformed() {
    let f = Filter::default();
    let mut v4 = Pkt::icmp(1).frame();
    v4[14] = 0x45;
    assert_eq!(
        f.check_frame(&v4),
        Verdict::Drop(DropReason::Malformed(Malformed::NotVersion6))
    );
    let mut jumbo = Pkt::icmp(1).opts(proto::HOP_BY_HOP, 0).frame();
    jumbo[14 + 4] = 0;
    jumbo[14 + 5] = 0;
    assert_eq!(
        f.check_frame(&jumbo),
        Verdict::Drop(DropReason::Malformed(Malformed::Jumbogram))
    );
}

#[test]
fn other_ethertypes_are_dropped_when_restricted() {
    let f = web_filter();
    for ethertype in [0x8100u16, 0x88a8, 0x0000, 0x86dc, 0x8035, 0x88cc] {
        let f2 = ethernet(ethertype, &Pkt::tcp(22).ipv6());
        assert_eq!(
            f.check_frame(&f2),
            Verdict::Drop(DropReason::OtherEthertype { ethertype })
        );
    }
    // IPv6 bytes under the IPv4 and ARP ethertypes are read as those.
    assert_eq!(
        f.check_frame(&ethernet(0x0800, &Pkt::tcp(22).ipv6())),
        Verdict::Drop(DropReason::Malformed(Malformed::NotVersion4))
    );
    assert_eq!(
        f.check_frame(&ethernet(0x0806, &Pkt::tcp(22).ipv6())),
        Verdict::Drop(DropReason::BadArp)
    );
    assert_eq!(
        f.check_frame(&[0u8; 13]),
        Verdict::Drop(DropReason::ShortFrame)
    );
}

#[test]
fn unvalidated_policies_are_refused() {
    let bad = |r: FirewallRule| {
        Filter::compile(&FirewallPolicy {
            mode: FirewallMode::Restricted,
            ingress: vec![rule(FirewallProtocol::Tcp, 80, None, &[]), r],
        })
        .unwrap_err()
    };
    assert_eq!(bad(rule(FirewallProtocol::Tcp, 0, None, &[])).index, 1);
    assert!(
        bad(rule(FirewallProtocol::Tcp, 10, Some(70000), &[]))
            .message
            .contains("outside")
    );
    assert!(
        bad(rule(FirewallProtocol::Tcp, 10, Some(9), &[]))
            .message
            .contains("below")
    );
    assert!(
        bad(rule(FirewallProtocol::Udp, 10, None, &["10.0.0.0/8"]))
            .message
            .contains("sourceCidrs")
    );
}
