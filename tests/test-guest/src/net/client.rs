//! The built-ins' outbound TCP connections and pings
//! ([`test_guest::network::Network`] over smoltcp): a socket each, made
//! on demand and taken back once its program let go of it (a connection
//! still open is closed first: a FIN after the peer's, a RST otherwise).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use smoltcp::iface::SocketHandle;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{icmp, tcp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, Icmpv4Repr, Icmpv6Message, Icmpv6Packet, Icmpv6Repr, IpAddress,
};
use test_guest::netcfg::NetConfig;
use test_guest::network::{Handle, Network, Owner, TcpState};

use super::{Net, tcp_socket};

/// Most outbound connections open at once.
const MAX_CONNS: usize = 16;
/// Most pings running at once.
const MAX_PINGS: usize = 4;
/// Receive and send buffers of an outbound connection.
const CONN_RX: usize = 64 * 1024;
const CONN_TX: usize = 4 * 1024;
/// Local ports of outbound connections.
const EPHEMERAL: core::ops::RangeInclusive<u16> = 49152..=65535;
/// The stack aborts a connection whose peer stays silent this long while
/// it waits for an answer (a handshake, an acknowledgement), so a closing
/// one is never kept for ever; programs give up sooner.
const CONN_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a ping without a reply asks again.
const PING_EVERY: Duration = Duration::from_millis(1000);
/// The data of an echo request.
const PING_DATA: &[u8] = b"fastvm test-guest";

/// One outbound connection.
struct Conn {
    owner: Owner,
    socket: SocketHandle,
    /// It got as far as established.
    established: bool,
    /// The peer closed its side.
    peer_fin: bool,
    /// Aborted because the guest's address changed.
    lost: bool,
    /// Its program let go and it is being closed.
    closing: bool,
}

/// One ping.
struct Ping {
    owner: Owner,
    socket: SocketHandle,
    to: IpAddress,
    ident: u16,
    seq: u16,
    replied: bool,
    next_send: Instant,
}

/// The outbound connections and pings, each in the slot its handle names.
#[derive(Default)]
pub(super) struct Clients {
    conns: Vec<Option<Conn>>,
    pings: Vec<Option<Ping>>,
    next_port: u16,
    next_ident: u16,
}

/// A free slot of `slots`, with room for `max` in all.
fn free_slot<T>(slots: &mut Vec<Option<T>>, max: usize) -> Option<usize> {
    if let Some(i) = slots.iter().position(Option::is_none) {
        return Some(i);
    }
    (slots.len() < max).then(|| {
        slots.push(None);
        slots.len() - 1
    })
}

impl Clients {
    /// When a ping without a reply asks again.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        let waiting = self.pings.iter().flatten().filter(|p| !p.replied);
        waiting.map(|p| p.next_send).min()
    }
}

impl Conn {
    fn track(&mut self, state: tcp::State) {
        use tcp::State::*;
        match state {
            Established | FinWait1 | FinWait2 => self.established = true,
            CloseWait | Closing | LastAck | TimeWait => {
                self.established = true;
                self.peer_fin = true;
            }
            Closed | Listen | SynSent | SynReceived => {}
        }
    }
}

impl Net {
    /// Takes back what programs let go, follows the connections' states and
    /// serves the pings; between two polls of the interface.
    pub(super) fn poll_clients(&mut self, now: Instant) {
        for slot in &mut self.clients.conns {
            let Some(conn) = slot else { continue };
            let socket = self.sockets.get_mut::<tcp::Socket>(conn.socket);
            conn.track(socket.state());
            if !conn.owner.released() {
                continue;
            }
            if !conn.closing {
                conn.closing = true;
                if socket.state() == tcp::State::CloseWait {
                    socket.close();
                } else {
                    socket.abort();
                }
            } else if socket.state() == tcp::State::Closed {
                self.sockets.remove(conn.socket);
                *slot = None;
            }
        }
        for slot in &mut self.clients.pings {
            let Some(ping) = slot else { continue };
            if ping.owner.released() {
                self.sockets.remove(ping.socket);
                *slot = None;
                continue;
            }
            let socket = self.sockets.get_mut::<icmp::Socket>(ping.socket);
            while let Ok((packet, from)) = socket.recv() {
                ping.replied |= from == ping.to && is_reply(packet, ping.to, ping.ident);
            }
            if !ping.replied && now >= ping.next_send {
                send_echo(socket, ping, now);
            }
        }
    }

    /// Aborts every outbound connection (the guest's address changed).
    pub(super) fn lose_clients(&mut self) {
        for conn in self.clients.conns.iter_mut().flatten() {
            conn.lost = true;
            self.sockets.get_mut::<tcp::Socket>(conn.socket).abort();
        }
    }

    /// Why `to` cannot be reached at all, if it cannot.
    fn unroutable(&self, to: IpAddr) -> Option<String> {
        if to.is_unspecified() || to.is_multicast() || to == IpAddr::from([255, 255, 255, 255]) {
            Some(format!("cannot connect to {to}"))
        } else if to.is_ipv4() && self.config.ipv4.is_none() {
            Some(String::from("no route (no IPv4 address)"))
        } else {
            None
        }
    }

    /// A local port no outbound connection uses.
    fn free_port(&mut self) -> u16 {
        loop {
            let c = &mut self.clients;
            if !EPHEMERAL.contains(&c.next_port) {
                c.next_port = *EPHEMERAL.start() + (self.boot % 1000) as u16;
            }
            let port = c.next_port;
            c.next_port = c.next_port.wrapping_add(1);
            let taken = c.conns.iter().flatten().any(|conn| {
                let socket = self.sockets.get::<tcp::Socket>(conn.socket);
                socket.local_endpoint().is_some_and(|e| e.port == port)
            });
            if !taken {
                return port;
            }
        }
    }

    fn conn(&self, handle: &Handle) -> Option<&Conn> {
        self.clients.conns.get(handle.id())?.as_ref()
    }
}

impl Network for Net {
    fn connect(&mut self, to: SocketAddr) -> Result<Handle, String> {
        if let Some(why) = self.unroutable(to.ip()) {
            return Err(why);
        }
        let Some(slot) = free_slot(&mut self.clients.conns, MAX_CONNS) else {
            return Err(format!("too many connections ({MAX_CONNS} at most)"));
        };
        let port = self.free_port();
        let socket = tcp_socket(&mut self.sockets, CONN_RX, CONN_TX);
        let tcp = self.sockets.get_mut::<tcp::Socket>(socket);
        tcp.set_timeout(Some(CONN_TIMEOUT));
        if let Err(e) = tcp.connect(self.iface.context(), to, port) {
            self.sockets.remove(socket);
            return Err(format!("cannot connect to {to}: {e}"));
        }
        let (handle, owner) = Handle::new(slot);
        self.clients.conns[slot] = Some(Conn {
            owner,
            socket,
            established: false,
            peer_fin: false,
            lost: false,
            closing: false,
        });
        Ok(handle)
    }

    fn state(&mut self, handle: &Handle) -> TcpState {
        let Some(Some(conn)) = self.clients.conns.get_mut(handle.id()) else {
            return TcpState::Failed("connection lost");
        };
        let socket = self.sockets.get::<tcp::Socket>(conn.socket);
        conn.track(socket.state());
        use tcp::State::*;
        match socket.state() {
            SynSent | SynReceived => TcpState::Connecting,
            Established | FinWait1 | FinWait2 => TcpState::Open,
            CloseWait | Closing | LastAck | TimeWait if socket.can_recv() => TcpState::Open,
            CloseWait | Closing | LastAck | TimeWait => TcpState::PeerClosed,
            Closed | Listen if conn.lost => {
                TcpState::Failed("connection lost (the guest's address changed)")
            }
            Closed | Listen if conn.peer_fin => TcpState::PeerClosed,
            Closed | Listen if conn.established => TcpState::Failed("connection reset by peer"),
            Closed | Listen => TcpState::Failed("connection refused"),
        }
    }

    fn send(&mut self, handle: &Handle, bytes: &[u8]) -> usize {
        let Some(socket) = self.conn(handle).map(|c| c.socket) else {
            return 0;
        };
        let tcp = self.sockets.get_mut::<tcp::Socket>(socket);
        tcp.send_slice(bytes).unwrap_or(0)
    }

    fn recv(&mut self, handle: &Handle, buf: &mut [u8]) -> usize {
        let Some(socket) = self.conn(handle).map(|c| c.socket) else {
            return 0;
        };
        let tcp = self.sockets.get_mut::<tcp::Socket>(socket);
        tcp.recv_slice(buf).unwrap_or(0)
    }

    fn ping(&mut self, to: IpAddr) -> Result<Handle, String> {
        if let Some(why) = self.unroutable(to) {
            return Err(why);
        }
        let Some(slot) = free_slot(&mut self.clients.pings, MAX_PINGS) else {
            return Err(format!("too many pings ({MAX_PINGS} at most)"));
        };
        let rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
        let tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 2], vec![0; 256]);
        let mut socket = icmp::Socket::new(rx, tx);
        let ident = self.clients.next_ident.wrapping_add(0x4656 + slot as u16);
        self.clients.next_ident = ident;
        if let Err(e) = socket.bind(icmp::Endpoint::Ident(ident)) {
            return Err(format!("cannot ping {to}: {e}"));
        }
        let (handle, owner) = Handle::new(slot);
        let now = self.now();
        let mut ping = Ping {
            owner,
            socket: self.sockets.add(socket),
            to: to.into(),
            ident,
            seq: 0,
            replied: false,
            next_send: now,
        };
        send_echo(self.sockets.get_mut(ping.socket), &mut ping, now);
        self.clients.pings[slot] = Some(ping);
        Ok(handle)
    }

    fn ping_replied(&mut self, handle: &Handle) -> bool {
        let ping = self.clients.pings.get(handle.id()).and_then(Option::as_ref);
        ping.is_some_and(|p| p.replied)
    }

    fn reconfigure(&mut self, config: NetConfig) -> Result<(), String> {
        self.apply(config);
        Ok(())
    }
}

/// Queues ping `ping`'s next echo request.
fn send_echo(socket: &mut icmp::Socket<'static>, ping: &mut Ping, now: Instant) {
    ping.seq = ping.seq.wrapping_add(1);
    ping.next_send = now + PING_EVERY;
    let caps = ChecksumCapabilities::default();
    let (ident, seq_no) = (ping.ident, ping.seq);
    let _ = match ping.to {
        IpAddress::Ipv4(_) => {
            let repr = Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data: PING_DATA,
            };
            socket.send_with(repr.buffer_len(), ping.to, |buf| {
                repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
                repr.buffer_len()
            })
        }
        IpAddress::Ipv6(dst) => {
            let repr = Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data: PING_DATA,
            };
            // The stack fills in the source and the checksum as it sends.
            let src = core::net::Ipv6Addr::UNSPECIFIED;
            socket.send_with(repr.buffer_len(), ping.to, |buf| {
                repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(buf), &caps);
                repr.buffer_len()
            })
        }
    };
}

/// Whether `packet`, from `from`, is an echo reply to `ident`.
fn is_reply(packet: &[u8], from: IpAddress, ident: u16) -> bool {
    match from {
        IpAddress::Ipv4(_) => Icmpv4Packet::new_checked(packet)
            .is_ok_and(|p| p.msg_type() == Icmpv4Message::EchoReply && p.echo_ident() == ident),
        IpAddress::Ipv6(_) => Icmpv6Packet::new_checked(packet)
            .is_ok_and(|p| p.msg_type() == Icmpv6Message::EchoReply && p.echo_ident() == ident),
    }
}
