//! Judging a frame going to the guest: the rules of the module
//! documentation, in two steps. The stateless step parses the frame and
//! applies the policy; when a flow could still admit the frame (a reply,
//! or an ICMP error about a flow) it names the flow to look up and what
//! happens without one. The lookup step asks the [`FlowTable`], or nobody
//! ([`Filter::check_frame`]): frames that need no flow never touch the
//! table or the clock.

use std::net::IpAddr;
use std::time::Instant;

use super::flows::{FlowKey, FlowProtocol, FlowTable};
use super::fragments::DatagramKey;
use super::ipv4::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ICMP_HEADER_LEN, fragment_of, icmp, is_ipv4_ethernet_arp,
    parse_ipv4, parse_quoted_ipv4,
};
use super::packet::{FragmentOf, Upper, parse_ipv6, proto};
use super::{
    DropReason, ETHERNET_HEADER_LEN, ETHERTYPE_IPV6, Filter, ICMPV6_ECHO_REPLY, ICMPV6_ERRORS,
    ICMPV6_NDP, Verdict,
};

/// The flow that could admit a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlowQuery {
    /// A frame of the flow coming back (TCP: with its flags).
    Reply { key: FlowKey, tcp_flags: u8 },
    /// An ICMP error about a packet of the flow.
    Error { key: FlowKey },
}

/// The stateless step's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    Final(Verdict),
    /// Passes when `query` finds a live flow, else gets `otherwise`; when
    /// it passes as the first `fragment` of a datagram, the datagram's
    /// later fragments may follow (only the fragment's id and protocol
    /// are kept: the addresses are the query's, and the enum stays small
    /// for the frames that are no fragment at all).
    AskFlows {
        query: FlowQuery,
        otherwise: Verdict,
        fragment: Option<FragmentOf>,
    },
    /// A later fragment of `datagram`: passes when its first one did.
    LaterFragment {
        datagram: DatagramKey,
    },
}

const FRAGMENT: Verdict = Verdict::Drop(DropReason::Fragment);

const NO_RULE: Judgement = Judgement::Final(Verdict::Drop(DropReason::NoRule));

impl Judgement {
    /// The verdict without any flow.
    fn without_flows(self) -> Verdict {
        match self {
            Judgement::Final(v) => v,
            Judgement::AskFlows { otherwise, .. } => otherwise,
            Judgement::LaterFragment { .. } => FRAGMENT,
        }
    }

    /// The verdict with the flows (and admitted datagrams) of `flows`;
    /// `now` is read only when one is looked up or recorded.
    fn with_flows(self, flows: &mut FlowTable, now: impl FnOnce() -> Instant) -> Verdict {
        let (query, otherwise, fragment) = match self {
            Judgement::Final(v) => return v,
            Judgement::LaterFragment { datagram } => {
                if flows.fragments.is_empty() {
                    return FRAGMENT;
                }
                return if flows.fragments.admits_later(&datagram, now()) {
                    Verdict::Pass
                } else {
                    FRAGMENT
                };
            }
            Judgement::AskFlows {
                query,
                otherwise,
                fragment,
            } => (query, otherwise, fragment),
        };
        if flows.is_empty() && (fragment.is_none() || otherwise != Verdict::Pass) {
            return otherwise;
        }
        let now = now();
        let admitted = match query {
            FlowQuery::Reply { key, tcp_flags } => flows.admit_reply(&key, tcp_flags, now),
            FlowQuery::Error { key } => flows.admit_error(&key, now),
        };
        let verdict = if admitted { Verdict::Pass } else { otherwise };
        if let (Verdict::Pass, Some(fragment), FlowQuery::Reply { key, .. }) =
            (verdict, fragment, query)
        {
            let datagram = DatagramKey {
                src: key.remote,
                dst: key.guest,
                protocol: fragment.protocol,
                id: fragment.id,
            };
            flows.fragments.admit_first(datagram, now);
        }
        verdict
    }
}

/// A TCP or UDP frame from `src` to the guest at `dst`, as a reply;
/// `ports` are its (source, destination) ports.
fn reply(protocol: u8, src: IpAddr, dst: IpAddr, ports: (u16, u16), tcp_flags: u8) -> FlowQuery {
    FlowQuery::Reply {
        key: FlowKey {
            protocol: FlowProtocol::of_ports(protocol),
            guest: dst,
            guest_port: ports.1,
            remote: src,
            remote_port: ports.0,
        },
        tcp_flags,
    }
}

/// An echo reply to the guest's echo request `id`.
fn echo_reply(src: IpAddr, dst: IpAddr, id: u16) -> FlowQuery {
    FlowQuery::Reply {
        key: FlowKey {
            protocol: FlowProtocol::IcmpEcho,
            guest: dst,
            guest_port: id,
            remote: src,
            remote_port: 0,
        },
        tcp_flags: 0,
    }
}

impl Filter {
    /// Judges an Ethernet frame (no virtio-net header in front) as if no
    /// flow were open: nothing passes as a reply.
    pub fn check_frame(&self, frame: &[u8]) -> Verdict {
        self.judge_frame(frame).without_flows()
    }

    /// Judges an Ethernet frame, letting replies to the flows of `flows`
    /// pass (and refreshing them); `now` is called only when a flow is
    /// looked up.
    pub fn check_frame_with_flows(
        &self,
        frame: &[u8],
        flows: &mut FlowTable,
        now: impl FnOnce() -> Instant,
    ) -> Verdict {
        self.judge_frame(frame).with_flows(flows, now)
    }

    /// Judges a bare IPv6 packet, as if no flow were open.
    pub fn check_ipv6(&self, pkt: &[u8]) -> Verdict {
        if self.open {
            return Verdict::Pass;
        }
        self.judge_ipv6(pkt).without_flows()
    }

    fn judge_frame(&self, frame: &[u8]) -> Judgement {
        if self.open {
            return Judgement::Final(Verdict::Pass);
        }
        if frame.len() < ETHERNET_HEADER_LEN {
            return Judgement::Final(Verdict::Drop(DropReason::ShortFrame));
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let pkt = &frame[ETHERNET_HEADER_LEN..];
        match ethertype {
            ETHERTYPE_IPV6 => self.judge_ipv6(pkt),
            ETHERTYPE_IPV4 => judge_ipv4(pkt),
            ETHERTYPE_ARP if is_ipv4_ethernet_arp(pkt) => Judgement::Final(Verdict::Pass),
            ETHERTYPE_ARP => Judgement::Final(Verdict::Drop(DropReason::BadArp)),
            _ => Judgement::Final(Verdict::Drop(DropReason::OtherEthertype { ethertype })),
        }
    }

    fn judge_ipv6(&self, pkt: &[u8]) -> Judgement {
        let summary = match parse_ipv6(pkt) {
            Ok(s) => s,
            Err(e) => return Judgement::Final(Verdict::Drop(DropReason::Malformed(e))),
        };
        let (src, dst) = (IpAddr::V6(summary.src), IpAddr::V6(summary.dst));
        let fragment = summary.fragment;
        match summary.upper {
            Upper::Icmp { kind, .. } if ICMPV6_ERRORS.contains(&kind) => {
                Judgement::Final(Verdict::Pass)
            }
            Upper::Icmp { kind, .. }
                if ICMPV6_NDP.contains(&kind)
                    && summary.hop_limit == 255
                    && !summary.fragmented =>
            {
                Judgement::Final(Verdict::Pass)
            }
            Upper::Icmp {
                kind: ICMPV6_ECHO_REPLY,
                echo_id: Some(id),
                ..
            } => Judgement::AskFlows {
                query: echo_reply(src, dst, id),
                otherwise: Verdict::Drop(DropReason::NoRule),
                fragment,
            },
            Upper::Ports {
                protocol,
                src_port,
                dst_port,
                tcp_flags,
            } => {
                let allowed = self
                    .rules
                    .iter()
                    .any(|r| r.matches(protocol, dst_port, summary.src));
                Judgement::AskFlows {
                    query: reply(protocol, src, dst, (src_port, dst_port), tcp_flags),
                    otherwise: if allowed {
                        Verdict::Pass
                    } else {
                        Verdict::Drop(DropReason::NoRule)
                    },
                    fragment,
                }
            }
            Upper::LaterFragment => later_fragment(src, dst, fragment),
            Upper::ShortFirstFragment => Judgement::Final(FRAGMENT),
            _ => NO_RULE,
        }
    }
}

/// IPv4 passes only as a reply to a flow, or as an ICMP error about one.
fn judge_ipv4(pkt: &[u8]) -> Judgement {
    let summary = match parse_ipv4(pkt) {
        Ok(s) => s,
        Err(e) => return Judgement::Final(Verdict::Drop(DropReason::Malformed(e))),
    };
    let (src, dst) = (IpAddr::V4(summary.src), IpAddr::V4(summary.dst));
    let fragment = fragment_of(pkt, &summary);
    let query = match summary.upper {
        Upper::Ports {
            protocol,
            src_port,
            dst_port,
            tcp_flags,
        } => reply(protocol, src, dst, (src_port, dst_port), tcp_flags),
        Upper::Icmp {
            kind: icmp::ECHO_REPLY,
            echo_id: Some(id),
            ..
        } => echo_reply(src, dst, id),
        Upper::Icmp {
            kind: icmp::DEST_UNREACHABLE | icmp::TIME_EXCEEDED,
            ..
        } => {
            let quoted_at = summary.upper_at + ICMP_HEADER_LEN;
            let Some(quoted) = pkt
                .get(quoted_at..summary.total_len)
                .and_then(parse_quoted_ipv4)
            else {
                return NO_RULE;
            };
            // An error about the guest's packet is addressed to the guest.
            if quoted.src != summary.dst {
                return NO_RULE;
            }
            let protocol = match quoted.protocol {
                proto::TCP => FlowProtocol::Tcp,
                proto::UDP => FlowProtocol::Udp,
                proto::ICMP => FlowProtocol::IcmpEcho,
                _ => return NO_RULE,
            };
            FlowQuery::Error {
                key: FlowKey {
                    protocol,
                    guest: IpAddr::V4(quoted.src),
                    guest_port: quoted.src_port,
                    remote: IpAddr::V4(quoted.dst),
                    remote_port: quoted.dst_port,
                },
            }
        }
        Upper::LaterFragment => return later_fragment(src, dst, fragment),
        Upper::ShortFirstFragment => return Judgement::Final(FRAGMENT),
        _ => return NO_RULE,
    };
    Judgement::AskFlows {
        query,
        otherwise: Verdict::Drop(DropReason::NoRule),
        fragment,
    }
}

/// A later fragment from `src` to `dst`: judged by its datagram's first
/// fragment.
fn later_fragment(src: IpAddr, dst: IpAddr, fragment: Option<FragmentOf>) -> Judgement {
    match fragment {
        Some(f) => Judgement::LaterFragment {
            datagram: DatagramKey {
                src,
                dst,
                protocol: f.protocol,
                id: f.id,
            },
        },
        None => Judgement::Final(FRAGMENT),
    }
}
