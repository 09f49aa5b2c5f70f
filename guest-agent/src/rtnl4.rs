//! The IPv4 half of [`crate::rtnl::Rtnl`]: a link's IPv4 addresses (list,
//! add, delete) and IPv4 routes (a host route to the gateway on the link,
//! and the default route through it), for the egress the host NATs.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::rtnl::Rtnl;

fn address_message(index: u32, addr: Ipv4Addr, prefix_len: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(addr)),
        AddressAttribute::Address(IpAddr::V4(addr)),
    ];
    msg
}

impl Rtnl {
    /// The IPv4 addresses of link `index` with prefix lengths (`RTM_GETADDR`).
    pub fn addresses4(&mut self, index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.index = index;
        let mut addrs = Vec::new();
        self.dump(RouteNetlinkMessage::GetAddress(msg), &mut |reply| {
            let RouteNetlinkMessage::NewAddress(a) = reply else {
                return;
            };
            if a.header.family != AddressFamily::Inet || a.header.index != index {
                return;
            }
            let local = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            if let Some(addr) = local {
                addrs.push((addr, a.header.prefix_len));
            }
        })?;
        Ok(addrs)
    }

    /// Adds (or updates) `addr/prefix_len` on link `index`.
    pub fn add_address4(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let msg = address_message(index, addr, prefix_len);
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            &mut |_| {},
        )
    }

    /// Deletes `addr/prefix_len` from link `index`.
    pub fn del_address4(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let msg = address_message(index, addr, prefix_len);
        self.request(RouteNetlinkMessage::DelAddress(msg), 0, &mut |_| {})
    }

    /// Creates or replaces the route to `dst/dst_len` out of link `index`:
    /// through `gateway`, or on the link (scope link) without one.
    pub fn replace_route4(
        &mut self,
        index: u32,
        dst: Ipv4Addr,
        dst_len: u8,
        gateway: Option<Ipv4Addr>,
    ) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = dst_len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = match gateway {
            Some(_) => RouteScope::Universe,
            None => RouteScope::Link,
        };
        msg.attributes = vec![RouteAttribute::Oif(index)];
        if dst_len > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        }
        if let Some(gw) = gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            &mut |_| {},
        )
    }
}
