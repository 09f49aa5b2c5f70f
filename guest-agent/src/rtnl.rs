//! A small synchronous rtnetlink client, all the agent needs to set up its
//! own network without any tool from the image: look a link up by name, set
//! its flags and MAC, list, add and delete its IPv6 addresses, and replace
//! the IPv6 default route.
//!
//! Messages are built and parsed by `netlink-packet-route`; the socket is
//! `netlink-sys`'s. Every change asks for an ACK and waits for it, so a
//! kernel refusal comes back as the errno it carries. Reads are bounded: one
//! fixed-size receive buffer (a larger datagram is an error, not a silent
//! truncation), a cap on the messages one request may bring back, and a
//! receive timeout.

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Size of the one receive buffer. The kernel sizes dump datagrams after
/// the largest read it has seen, up to 32 KiB, so this holds any of them.
pub const RECV_BUFFER: usize = 32 * 1024;
/// Most messages (and reads) one request may bring back. A dump of one
/// link's addresses is a handful.
pub const MAX_MESSAGES: usize = 4096;
/// How long one read waits for the kernel's answer.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Hardware address (`IFLA_ADDRESS`), when it has one.
    pub mac: Option<Vec<u8>>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// An IPv6 address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr6 {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    /// Scope global (`RT_SCOPE_UNIVERSE`), as opposed to link or host.
    pub global: bool,
}

/// A `NETLINK_ROUTE` socket with its receive buffer and sequence numbers.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Box<[u8]>,
}

impl Rtnl {
    /// Opens a socket to the kernel (in the calling thread's network
    /// namespace).
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Hints an older kernel may not know: ACKs without the request
        // copied back, and dumps filtered by the kernel (the results are
        // filtered here as well).
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_netlink_get_strict_chk(true);
        set_recv_timeout(&socket, RECV_TIMEOUT)?;
        Ok(Rtnl {
            socket,
            seq: 0,
            buf: vec![0; RECV_BUFFER].into_boxed_slice(),
        })
    }

    /// The link named `name` (`RTM_GETLINK`).
    pub fn link(&mut self, name: &str) -> io::Result<Link> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let mut found = None;
        self.request(RouteNetlinkMessage::GetLink(msg), 0, &mut |reply| {
            if let RouteNetlinkMessage::NewLink(link) = reply {
                found.get_or_insert(link);
            }
        })?;
        let link = found.ok_or_else(|| io::Error::other("the kernel sent no link"))?;
        let mac = link.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(mac),
            _ => None,
        });
        Ok(Link {
            index: link.header.index,
            mac,
            up: link.header.flags.contains(LinkFlags::Up),
        })
    }

    /// Sets or clears `IFF_UP` (`up`) and sets the MAC (`mac`) of link
    /// `index` (`RTM_NEWLINK` on the existing link); `None` leaves either.
    pub fn set_link(
        &mut self,
        index: u32,
        up: Option<bool>,
        mac: Option<[u8; 6]>,
    ) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(up) = up {
            msg.header.change_mask = LinkFlags::Up;
            if up {
                msg.header.flags = LinkFlags::Up;
            }
        }
        if let Some(mac) = mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        self.request(RouteNetlinkMessage::NewLink(msg), 0, &mut |_| {})
    }

    /// The IPv6 addresses of link `index` (`RTM_GETADDR` dump).
    pub fn addresses6(&mut self, index: u32) -> io::Result<Vec<Addr6>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.index = index;
        let mut addrs = Vec::new();
        self.dump(RouteNetlinkMessage::GetAddress(msg), &mut |reply| {
            let RouteNetlinkMessage::NewAddress(a) = reply else {
                return;
            };
            if a.header.family != AddressFamily::Inet6 || a.header.index != index {
                return;
            }
            // IFA_LOCAL is the address itself when the link has a peer;
            // otherwise only IFA_ADDRESS is sent.
            let mut local = None;
            let mut address = None;
            for attr in &a.attributes {
                match attr {
                    AddressAttribute::Local(IpAddr::V6(ip)) => local = Some(*ip),
                    AddressAttribute::Address(IpAddr::V6(ip)) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(addr) = local.or(address) {
                addrs.push(Addr6 {
                    addr,
                    prefix_len: a.header.prefix_len,
                    global: a.header.scope == AddressScope::Universe,
                });
            }
        })?;
        Ok(addrs)
    }

    /// Adds `addr/prefix_len` to link `index`, without duplicate address
    /// detection (`RTM_NEWADDR`, `IFA_F_NODAD`); one already there is
    /// updated.
    pub fn add_address6(&mut self, index: u32, addr: Ipv6Addr, prefix_len: u8) -> io::Result<()> {
        let mut msg = address_message(index, addr, prefix_len);
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            &mut |_| {},
        )
    }

    /// Deletes `addr/prefix_len` from link `index` (`RTM_DELADDR`).
    pub fn del_address6(&mut self, index: u32, addr: Ipv6Addr, prefix_len: u8) -> io::Result<()> {
        let msg = address_message(index, addr, prefix_len);
        self.request(RouteNetlinkMessage::DelAddress(msg), 0, &mut |_| {})
    }

    /// Creates or replaces `default via gateway dev index` in the main IPv6
    /// table (`RTM_NEWROUTE` with `NLM_F_CREATE | NLM_F_REPLACE`).
    pub fn replace_default_route6(&mut self, index: u32, gateway: Ipv6Addr) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet6;
        msg.header.destination_prefix_length = 0;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet6(gateway)),
            RouteAttribute::Oif(index),
        ];
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            &mut |_| {},
        )
    }

    /// Sends `msg` with `NLM_F_ACK` and `flags`; every message of the
    /// answer goes to `each` until the ACK, whose error is returned.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        each: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        self.exchange(msg, NLM_F_ACK | flags, each)
    }

    /// Sends `msg` as a dump request; every message of the dump goes to
    /// `each` until `NLMSG_DONE`.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        each: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        self.exchange(msg, NLM_F_DUMP, each)
    }

    /// Sends `msg` with `flags` and reads its answer, skipping messages of
    /// other sequence numbers (what is left of an earlier answer).
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        each: &mut dyn FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut seen = 0usize;
        loop {
            seen += 1;
            if seen > MAX_MESSAGES {
                return Err(too_many());
            }
            let n = match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel in {RECV_TIMEOUT:?}"),
                    ));
                }
                Err(e) => return Err(e),
            };
            if n > self.buf.len() {
                return Err(io::Error::other(format!(
                    "a reply of {n} bytes exceeds the {RECV_BUFFER}-byte receive buffer"
                )));
            }
            let mut offset = 0;
            while offset < n {
                let datagram = &self.buf[offset..n];
                let raw = NetlinkBuffer::new_checked(datagram).map_err(malformed)?;
                let len = raw.length() as usize;
                let ours = raw.sequence_number() == seq;
                offset += len.next_multiple_of(4);
                if !ours {
                    continue;
                }
                seen += 1;
                if seen > MAX_MESSAGES {
                    return Err(too_many());
                }
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[..len])
                    .map_err(malformed)?;
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                    NetlinkPayload::Done(done) if dump => {
                        return match done.code {
                            0 => Ok(()),
                            code => Err(io::Error::from_raw_os_error(code.abs())),
                        };
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(io::Error::other("the kernel reported an overrun"));
                    }
                    NetlinkPayload::InnerMessage(m) => each(m),
                    _ => {}
                }
            }
        }
    }
}

/// An address message for `addr/prefix_len` on link `index`, scope global.
fn address_message(index: u32, addr: Ipv6Addr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.prefix_len = prefix_len;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V6(addr)),
        AddressAttribute::Address(IpAddr::V6(addr)),
    ];
    msg
}

fn malformed(e: netlink_packet_core::DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed reply: {e}"))
}

fn too_many() -> io::Error {
    io::Error::other(format!("the answer ran past {MAX_MESSAGES} messages"))
}

/// Bounds every read on `socket` to `timeout` (`SO_RCVTIMEO`).
fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: the pointer and length describe `tv`, a valid timeval that
    // outlives the call; the descriptor is the socket's own.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
