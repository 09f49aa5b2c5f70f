//! The guest's network configuration from the kernel command line, as the
//! daemon gives it: `fastvm.ip6=ADDR/LEN fastvm.gw6=GW`, and for IPv4
//! `fastvm.ip4=A.B.C.D/32 fastvm.gw4=E.F.G.H` (both or neither).
//!
//! The IPv6 address's interface id is the modified EUI-64 of the NIC's
//! MAC, so when a clone gets a new MAC its address is the same /64 with the
//! new MAC's id. A restored guest's command line cannot change: the daemon
//! sends a clone its addresses in `setNetwork` ([`from_setting`], the same
//! words as the command line), which is how a clone gets its own IPv4.
//!
//! An IPv4 /32 has no on-link peers, yet the gateway must be reached over
//! the link. The stack (smoltcp) only takes ARP from addresses inside one
//! of its subnets, so the interface's IPv4 subnet is widened to the longest
//! prefix around the address that also holds the gateway
//! ([`Ipv4Config::link_prefix`]); everything outside it goes via the gateway.

use alloc::format;
use alloc::string::String;
use core::net::{Ipv4Addr, Ipv6Addr};

/// What the command line says about the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv6Addr>,
    /// IPv4, when the command line gives it.
    pub ipv4: Option<Ipv4Config>,
}

/// The guest's IPv4 address and gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Config {
    pub addr: Ipv4Addr,
    /// The prefix the command line gave (normally 32).
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The prefix the interface uses: `prefix_len` when that subnet holds
    /// the gateway, else the longest that does (see [`link_prefix`]).
    pub link_prefix: u8,
}

/// Reads `fastvm.ip6=` (required), `fastvm.gw6=`, and `fastvm.ip4=` with
/// `fastvm.gw4=` from `cmdline`; why not, if they are missing or wrong.
pub fn parse(cmdline: &str) -> Result<NetConfig, String> {
    let mut v6 = None;
    let mut gateway = None;
    let mut ip4 = None;
    let mut gw4 = None;
    for word in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "fastvm.ip6" => v6 = Some(parse_v6(value).ok_or_else(|| bad(word))?),
            "fastvm.gw6" => gateway = Some(value.parse::<Ipv6Addr>().map_err(|_| bad(word))?),
            "fastvm.ip4" => ip4 = Some(parse_v4(value).ok_or_else(|| bad(word))?),
            "fastvm.gw4" => gw4 = Some(value.parse::<Ipv4Addr>().map_err(|_| bad(word))?),
            _ => {}
        }
    }
    let (addr, prefix_len) =
        v6.ok_or_else(|| String::from("no fastvm.ip6= on the command line"))?;
    let ipv4 = match (ip4, gw4) {
        (None, None) => None,
        (Some((addr, prefix_len)), Some(gateway)) => Some(ipv4_config(addr, prefix_len, gateway)?),
        (Some(_), None) => return Err(String::from("fastvm.ip4= without fastvm.gw4=")),
        (None, Some(_)) => return Err(String::from("fastvm.gw4= without fastvm.ip4=")),
    };
    Ok(NetConfig {
        addr,
        prefix_len,
        gateway,
        ipv4,
    })
}

/// The configuration of a `setNetwork` frame: the command line's values,
/// checked the same way.
pub fn from_setting(
    ip6: &str,
    gw6: &str,
    ip4: Option<&str>,
    gw4: Option<&str>,
) -> Result<NetConfig, String> {
    let mut line = format!("fastvm.ip6={ip6} fastvm.gw6={gw6}");
    for (key, value) in [("fastvm.ip4", ip4), ("fastvm.gw4", gw4)] {
        if let Some(value) = value {
            line.push_str(&format!(" {key}={value}"));
        }
    }
    if line.split_ascii_whitespace().count()
        != 2 + usize::from(ip4.is_some()) + usize::from(gw4.is_some())
    {
        return Err(format!("setNetwork with a space in a value: {line}"));
    }
    parse(&line)
}

fn bad(word: &str) -> String {
    format!("bad {word}")
}

fn parse_v6(v: &str) -> Option<(Ipv6Addr, u8)> {
    let (addr, len) = v.split_once('/').unwrap_or((v, "128"));
    let prefix_len: u8 = len.parse().ok().filter(|l| *l <= 128)?;
    Some((addr.parse().ok()?, prefix_len))
}

fn parse_v4(v: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = v.split_once('/').unwrap_or((v, "32"));
    let prefix_len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((addr.parse().ok()?, prefix_len))
}

/// Checks `addr` and `gateway` are unicast and distinct, and finds the
/// interface's prefix.
fn ipv4_config(addr: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Result<Ipv4Config, String> {
    for (name, a) in [("fastvm.ip4", addr), ("fastvm.gw4", gateway)] {
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
            return Err(format!("{name}={a} is not a unicast address"));
        }
    }
    if addr == gateway {
        return Err(format!("fastvm.gw4={gateway} is the guest's own address"));
    }
    let link_prefix = if contains(addr, prefix_len, gateway) {
        prefix_len
    } else {
        link_prefix(addr, gateway)
            .ok_or_else(|| format!("no subnet around {addr} holds the gateway {gateway}"))?
    };
    Ok(Ipv4Config {
        addr,
        prefix_len,
        gateway,
        link_prefix,
    })
}

/// Whether `addr/len` holds `other`.
fn contains(addr: Ipv4Addr, len: u8, other: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    addr.to_bits() & mask == other.to_bits() & mask
}

/// The longest prefix whose subnet around `addr` holds `gateway`, neither
/// of them being that subnet's network or broadcast address (a /31 has
/// neither); none if `addr == gateway`. At worst it is /0 (a gateway that
/// shares no leading bit with the address): then every address is on the
/// link, which works when the host answers ARP for them (proxy ARP).
pub fn link_prefix(addr: Ipv4Addr, gateway: Ipv4Addr) -> Option<u8> {
    let (a, g) = (addr.to_bits(), gateway.to_bits());
    let common = (a ^ g).leading_zeros();
    if common >= 32 {
        return None;
    }
    if common == 31 {
        return Some(31);
    }
    (0..=common).rev().find_map(|len| {
        let host = u32::MAX >> len;
        let inside = |x: u32| x & host != 0 && x & host != host;
        (inside(a) && inside(g)).then_some(len as u8)
    })
}

/// The modified EUI-64 interface id of `mac`.
pub fn interface_id(mac: [u8; 6]) -> [u8; 8] {
    [
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

/// `addr`'s upper 64 bits with `mac`'s interface id.
pub fn address_for_mac(addr: Ipv6Addr, mac: [u8; 6]) -> Ipv6Addr {
    let mut o = addr.octets();
    o[8..].copy_from_slice(&interface_id(mac));
    Ipv6Addr::from(o)
}

/// The link-local address of `mac` (`fe80::` + its interface id).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    address_for_mac(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), mac)
}

#[cfg(test)]
#[path = "netcfg_tests.rs"]
mod tests;
