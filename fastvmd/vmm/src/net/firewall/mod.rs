//! The ingress packet filter: the API's [`FirewallPolicy`] compiled into a
//! [`Filter`] that judges each Ethernet frame going to the guest, with the
//! VM's [`FlowTable`] of what the guest opened (a stateful filter, like a
//! cloud security group).
//!
//! Flows: every frame the guest sends that parses as IPv4 or IPv6 TCP,
//! UDP or ICMP/ICMPv6 echo request opens or refreshes a flow (protocol,
//! guest address and port or echo identifier, remote address and port);
//! flows expire when idle (see [`flows`]) and a VM holds at most
//! [`MAX_FLOWS`]. Flows are not part of a snapshot.
//!
//! Rules, in `restricted` mode (only untagged Ethernet frames are
//! considered; VLAN-tagged frames and every other ethertype are dropped):
//! - ARP passes when it is a well-formed request or reply for IPv4 over
//!   Ethernet (the guest resolves its gateway); any other ARP is dropped;
//! - a packet that does not parse (truncated, bad lengths, an IPv4 header
//!   length below 5 words or past the packet, misplaced or too many IPv6
//!   extension headers) is dropped; IPv6 extension headers (hop-by-hop,
//!   routing, destination options, fragment, AH) are walked to the
//!   upper-layer header, IPv4 options are skipped by the header length;
//! - first fragments without the whole transport header are dropped
//!   (their ports are unknown); a later fragment passes only when the
//!   first fragment of its datagram passed shortly before (see
//!   [`fragments`]), else it is dropped;
//! - a reply to a live flow passes and refreshes it: TCP or UDP from the
//!   flow's remote address and port to the guest's address and port, and
//!   ICMP/ICMPv6 echo replies to a recorded echo identifier;
//! - IPv6: essential ICMPv6 passes: destination unreachable, packet too
//!   big, time exceeded and parameter problem always; the neighbor
//!   discovery messages (router/neighbor solicitation and advertisement,
//!   redirect) only with hop limit 255 and unfragmented, as RFC 4861 and
//!   RFC 6980 require, so they can only come from the link. TCP and UDP
//!   pass when an allow rule matches the protocol, the destination port and
//!   the source address. Everything else is dropped: ESP, "no next header"
//!   and unknown protocols (the API has no protocol-any rule), and ICMPv6
//!   that is not essential nor an echo reply to a flow;
//! - IPv4: besides replies, only ICMP destination unreachable (fragmentation
//!   needed included) and time exceeded pass, when the packet they quote is
//!   the guest's, of a live flow, and they are addressed to the guest;
//!   everything else is dropped (the rules speak only of IPv6).
//!
//! In `open` mode every frame passes (flows are recorded all the same, so
//! what the guest opened survives a switch to `restricted`).

mod clock;
mod egress;
pub mod flow_cost;
mod flow_key;
pub mod flows;
#[cfg(test)]
mod flows_stress_tests;
#[cfg(test)]
mod flows_tests;
pub mod fragments;
#[cfg(test)]
mod fragments_tests;
mod fuzz;
mod ingress;
mod ipv4;
#[cfg(test)]
mod ipv4_tests;
mod live;
mod packet;
pub mod test_frames;
#[cfg(test)]
mod tests;

pub use clock::BatchClock;
pub use egress::egress_flow;
pub use flows::{FlowKey, FlowProtocol, FlowStats, FlowTable, MAX_FLOWS};
pub use fuzz::{fuzz_frames, restricted as fuzz_filter};
pub use ipv4::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, Ipv4Summary, QuotedIpv4, parse_ipv4, parse_quoted_ipv4,
};
pub use live::{FlowCounts, FrameCounters, LivePolicy};
pub use packet::{FragmentOf, Ipv6Summary, Malformed, Upper, parse_ipv6, proto};

use fastvm_proto::api::{FirewallMode, FirewallPolicy, FirewallProtocol, Ipv6Cidr};

/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Length of an untagged Ethernet header.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// ICMPv6 types that always pass (RFC 4443 errors).
const ICMPV6_ERRORS: [u8; 4] = [1, 2, 3, 4];
/// ICMPv6 neighbor discovery types (RFC 4861): RS, RA, NS, NA, redirect.
const ICMPV6_NDP: core::ops::RangeInclusive<u8> = 133..=137;
/// ICMPv6 echo request.
const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
const ICMPV6_ECHO_REPLY: u8 = 129;

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
    /// Not an untagged IPv6, IPv4 or ARP frame.
    OtherEthertype { ethertype: u16 },
    /// An ARP message that is not a request or reply for IPv4 over
    /// Ethernet, or is cut short.
    BadArp,
    /// The IPv6 or IPv4 packet does not parse.
    Malformed(Malformed),
    /// A fragment whose transport header is not (all) there.
    Fragment,
    /// A parsed packet that no rule allows and no flow expects.
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
}
