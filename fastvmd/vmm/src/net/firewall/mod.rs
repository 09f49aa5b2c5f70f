//! The ingress packet filter: the API's [`FirewallPolicy`] compiled into a
//! [`Filter`] that judges each Ethernet frame going to the guest.
//!
//! Rules, in `restricted` mode:
//! - only IPv6 frames (ethertype 0x86DD, untagged) are considered; ARP,
//!   IPv4, VLAN-tagged and every other ethertype are dropped (the VM's
//!   public network is IPv6 only, and the policy speaks only of IPv6);
//! - a packet that does not parse (truncated, bad lengths, misplaced or too
//!   many extension headers) is dropped;
//! - extension headers (hop-by-hop, routing, destination options, fragment,
//!   AH) are walked to the upper-layer header;
//! - essential ICMPv6 passes: destination unreachable, packet too big, time
//!   exceeded and parameter problem always; the neighbor discovery messages
//!   (router/neighbor solicitation and advertisement, redirect) only with
//!   hop limit 255 and unfragmented, as RFC 4861 and RFC 6980 require, so
//!   they can only come from the link;
//! - TCP and UDP pass when an allow rule matches the protocol, the
//!   destination port and the source address;
//! - everything else is dropped: later fragments and first fragments without
//!   the whole transport header (their ports are unknown), ESP, "no next
//!   header" and unknown protocols (the API has no protocol-any rule), and
//!   ICMPv6 that is not essential (echo included).
//!
//! In `open` mode every frame passes.

mod live;
mod packet;
#[cfg(test)]
mod tests;

pub use live::{FrameCounters, LivePolicy};
pub use packet::{Ipv6Summary, Malformed, Upper, parse_ipv6, proto};

use fastvm_proto::api::{FirewallMode, FirewallPolicy, FirewallProtocol, Ipv6Cidr};

/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Length of an untagged Ethernet header.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// ICMPv6 types that always pass (RFC 4443 errors).
const ICMPV6_ERRORS: [u8; 4] = [1, 2, 3, 4];
/// ICMPv6 neighbor discovery types (RFC 4861): RS, RA, NS, NA, redirect.
const ICMPV6_NDP: core::ops::RangeInclusive<u8> = 133..=137;

/// What the filter decided about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it to the guest.
    Pass,
    /// Drop it, and why.
    Drop(DropReason),
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    ShortFrame,
    /// Not an untagged IPv6 frame.
    NotIpv6 { ethertype: u16 },
    /// The IPv6 packet does not parse.
    Malformed(Malformed),
    /// A fragment whose transport header is not (all) there.
    Fragment,
    /// A parsed packet that no rule allows.
    NoRule,
}

/// One compiled allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    protocol: u8,
    first_port: u16,
    last_port: u16,
    sources: Vec<Ipv6Cidr>,
}

impl Rule {
    fn matches(&self, protocol: u8, port: u16, src: std::net::Ipv6Addr) -> bool {
        self.protocol == protocol
            && (self.first_port..=self.last_port).contains(&port)
            && self.sources.iter().any(|net| net.contains(src))
    }
}

/// A policy that cannot be compiled (the API validates policies first, so
/// this is a policy that skipped validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ingress[{index}]: {message}")]
pub struct PolicyError {
    pub index: usize,
    pub message: String,
}

/// A compiled ingress policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    open: bool,
    rules: Vec<Rule>,
}

impl Default for Filter {
    /// `restricted` with no rules.
    fn default() -> Self {
        Filter {
            open: false,
            rules: Vec::new(),
        }
    }
}

impl Filter {
    /// Everything passes.
    pub fn open() -> Filter {
        Filter {
            open: true,
            rules: Vec::new(),
        }
    }

    /// Compiles `policy`; fails on a port outside 1..=65535, an end below
    /// the start, or a source that is not an IPv6 CIDR.
    pub fn compile(policy: &FirewallPolicy) -> Result<Filter, PolicyError> {
        let open = policy.mode == FirewallMode::Open;
        let mut rules = Vec::with_capacity(policy.ingress.len());
        for (index, rule) in policy.ingress.iter().enumerate() {
            let err = |message: String| PolicyError { index, message };
            let (start, end) = rule.port_range();
            let port = |p: u32| u16::try_from(p).ok().filter(|p| *p != 0);
            let (Some(first_port), Some(last_port)) = (port(start), port(end)) else {
                return Err(err(format!("ports {start}-{end} outside 1-65535")));
            };
            if last_port < first_port {
                return Err(err(format!("portEnd {end} below portStart {start}")));
            }
            let sources = rule
                .source_nets()
                .map_err(|e| err(format!("sourceCidrs: {e}")))?;
            let protocol = match rule.protocol {
                FirewallProtocol::Tcp => proto::TCP,
                FirewallProtocol::Udp => proto::UDP,
            };
            rules.push(Rule {
                protocol,
                first_port,
                last_port,
                sources,
            });
        }
        Ok(Filter { open, rules })
    }

    /// Whether everything passes.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Judges an Ethernet frame (no virtio-net header in front).
    pub fn check_frame(&self, frame: &[u8]) -> Verdict {
        if self.open {
            return Verdict::Pass;
        }
        if frame.len() < ETHERNET_HEADER_LEN {
            return Verdict::Drop(DropReason::ShortFrame);
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        if ethertype != ETHERTYPE_IPV6 {
            return Verdict::Drop(DropReason::NotIpv6 { ethertype });
        }
        self.check_ipv6(&frame[ETHERNET_HEADER_LEN..])
    }

    /// Judges a bare IPv6 packet.
    pub fn check_ipv6(&self, pkt: &[u8]) -> Verdict {
        if self.open {
            return Verdict::Pass;
        }
        let summary = match parse_ipv6(pkt) {
            Ok(s) => s,
            Err(e) => return Verdict::Drop(DropReason::Malformed(e)),
        };
        match summary.upper {
            Upper::Icmpv6 { kind, .. } if ICMPV6_ERRORS.contains(&kind) => Verdict::Pass,
            Upper::Icmpv6 { kind, .. }
                if ICMPV6_NDP.contains(&kind)
                    && summary.hop_limit == 255
                    && !summary.fragmented =>
            {
                Verdict::Pass
            }
            Upper::Ports { protocol, dst_port }
                if self
                    .rules
                    .iter()
                    .any(|r| r.matches(protocol, dst_port, summary.src)) =>
            {
                Verdict::Pass
            }
            Upper::LaterFragment | Upper::ShortFirstFragment => Verdict::Drop(DropReason::Fragment),
            _ => Verdict::Drop(DropReason::NoRule),
        }
    }
}
