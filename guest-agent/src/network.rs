//! The guest's IPv6 network on `eth0`: at boot from the kernel command line
//! (`fastvm.ip6=ADDR/LEN fastvm.gw6=GW`, written by the daemon), and again
//! when the host sends `SetNetwork` (a clone restored from a snapshot has a
//! new MAC and address). The agent applies it itself over rtnetlink
//! ([`crate::rtnl`]), so it needs no `ip` or busybox in the image;
//! duplicate address detection is turned off, as the address is the host's
//! to give and the link has no other guest on it.
//!
//! [`GuestNetwork::steps`] plans the changes from what the link has now;
//! [`GuestNetwork::apply`] runs them.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::rtnl::Rtnl;

/// The NIC the daemon's virtio-net device shows up as.
pub const DEVICE: &str = "eth0";

/// A MAC address (`02:aa:bb:cc:dd:ee`; any case when parsed, lower case
/// when shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = ();

    fn from_str(s: &str) -> Result<Mac, ()> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or(())?;
            if part.len() != 2 || !part.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ())?;
        }
        match parts.next() {
            None => Ok(Mac(mac)),
            Some(_) => Err(()),
        }
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// What the guest's network should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNetwork {
    /// New MAC for the NIC; `None` keeps the one the device reported.
    pub mac: Option<Mac>,
    /// Address and prefix length.
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    /// Default gateway (link-local on the host's tap).
    pub gateway: Ipv6Addr,
    /// The IPv4 address the host NATs, when it gives one.
    pub ipv4: Option<Ipv4Net>,
}

/// A guest's IPv4: its address (a /32), and its gateway, on the link
/// though outside the /32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}

impl Ipv4Net {
    /// Both `ip4` (`A.B.C.D[/LEN]`) and `gw4`, or neither.
    pub fn parse(ip4: Option<&str>, gw4: Option<&str>) -> Result<Option<Ipv4Net>, String> {
        let (ip4, gw4) = match (ip4, gw4) {
            (None, None) => return Ok(None),
            (Some(ip4), Some(gw4)) => (ip4, gw4),
            _ => return Err("ip4 and gw4 come together or not at all".into()),
        };
        let (addr, len) = ip4.split_once('/').unwrap_or((ip4, "32"));
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("ip4: {ip4:?} is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("ip4: {ip4:?} has a bad prefix length"))?;
        let gateway: Ipv4Addr = gw4
            .parse()
            .map_err(|_| format!("gw4: {gw4:?} is not an IPv4 address"))?;
        Ok(Some(Ipv4Net {
            addr,
            prefix_len,
            gateway,
        }))
    }
}

/// One change to the link, as [`GuestNetwork::steps`] plans them and
/// [`GuestNetwork::apply`] makes them over rtnetlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetStep {
    /// Clear `IFF_UP` (`RTM_NEWLINK`), so the MAC may change.
    LinkDown,
    /// Set the MAC (`RTM_NEWLINK` with `IFLA_ADDRESS`).
    SetMac(Mac),
    /// Set `IFF_UP` (`RTM_NEWLINK`).
    LinkUp,
    /// Delete every global-scope IPv6 address of the link (`RTM_GETADDR`
    /// dump, then `RTM_DELADDR` each).
    FlushGlobalV6,
    /// Add the address with its prefix length, without duplicate address
    /// detection (`RTM_NEWADDR`, `IFA_F_NODAD`).
    AddAddr(Ipv6Addr, u8),
    /// Create or replace `default via GW dev DEV` in the main IPv6 table
    /// (`RTM_NEWROUTE`, `NLM_F_CREATE | NLM_F_REPLACE`).
    ReplaceDefaultRoute(Ipv6Addr),
    /// Make this the link's only IPv4 address (a clone's old one goes).
    SetAddr4(Ipv4Addr, u8),
    /// Route the IPv4 gateway's /32 on the link (scope link), then
    /// `default via GW` through it.
    RoutesVia4(Ipv4Addr),
}

impl fmt::Display for NetStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetStep::LinkDown => write!(f, "link down"),
            NetStep::SetMac(mac) => write!(f, "set MAC {mac}"),
            NetStep::LinkUp => write!(f, "link up"),
            NetStep::FlushGlobalV6 => write!(f, "flush global IPv6 addresses"),
            NetStep::AddAddr(addr, len) => write!(f, "add address {addr}/{len}"),
            NetStep::ReplaceDefaultRoute(gw) => write!(f, "replace default route via {gw}"),
            NetStep::SetAddr4(addr, len) => write!(f, "set IPv4 address {addr}/{len}"),
            NetStep::RoutesVia4(gw) => write!(f, "route IPv4 through {gw}"),
        }
    }
}

impl NetStep {
    /// Makes this change to link `index` over `rtnl`; the error is the
    /// kernel's (its errno text), or each address that could not go.
    fn run(self, rtnl: &mut Rtnl, index: u32) -> Result<(), String> {
        let result = match self {
            NetStep::LinkDown => rtnl.set_link(index, Some(false), None),
            NetStep::SetMac(mac) => rtnl.set_link(index, None, Some(mac.0)),
            NetStep::LinkUp => rtnl.set_link(index, Some(true), None),
            NetStep::FlushGlobalV6 => {
                let addrs = rtnl.addresses6(index).map_err(|e| e.to_string())?;
                let failed: Vec<String> = addrs
                    .iter()
                    .filter(|a| a.global)
                    .filter_map(|a| match rtnl.del_address6(index, a.addr, a.prefix_len) {
                        Ok(()) => None,
                        // Gone since the dump: that is what was wanted.
                        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => None,
                        Err(e) => Some(format!("{}/{}: {e}", a.addr, a.prefix_len)),
                    })
                    .collect();
                return if failed.is_empty() {
                    Ok(())
                } else {
                    Err(failed.join(", "))
                };
            }
            NetStep::AddAddr(addr, len) => rtnl.add_address6(index, addr, len),
            NetStep::ReplaceDefaultRoute(gw) => rtnl.replace_default_route6(index, gw),
            NetStep::SetAddr4(addr, len) => {
                let old = rtnl.addresses4(index).map_err(|e| e.to_string())?;
                for (other, other_len) in old.into_iter().filter(|a| *a != (addr, len)) {
                    match rtnl.del_address4(index, other, other_len) {
                        Err(e) if e.raw_os_error() != Some(libc::EADDRNOTAVAIL) => {
                            return Err(format!("{other}/{other_len}: {e}"));
                        }
                        _ => {}
                    }
                }
                rtnl.add_address4(index, addr, len)
            }
            NetStep::RoutesVia4(gw) => rtnl
                .replace_route4(index, gw, 32, None)
                .and_then(|()| rtnl.replace_route4(index, Ipv4Addr::UNSPECIFIED, 0, Some(gw))),
        };
        result.map_err(|e| e.to_string())
    }
}

impl GuestNetwork {
    /// Checks the host's values: an address with a prefix length of at most
    /// 128, a gateway address, a MAC of six hex bytes.
    pub fn parse(mac: Option<&str>, ip6: &str, gw6: &str) -> Result<GuestNetwork, String> {
        let (addr, len) = ip6.split_once('/').unwrap_or((ip6, "128"));
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("ip6: {ip6:?} is not an IPv6 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 128)
            .ok_or_else(|| format!("ip6: {ip6:?} has a bad prefix length"))?;
        let gateway: Ipv6Addr = gw6
            .parse()
            .map_err(|_| format!("gw6: {gw6:?} is not an IPv6 address"))?;
        let mac = mac
            .map(|m| {
                m.parse::<Mac>()
                    .map_err(|()| format!("mac: {m:?} is not a MAC address"))
            })
            .transpose()?;
        Ok(GuestNetwork {
            mac,
            addr,
            prefix_len,
            gateway,
            ipv4: None,
        })
    }

    /// The network given on a kernel command line, if any.
    pub fn from_cmdline(cmdline: &str) -> Option<Result<GuestNetwork, String>> {
        let value = |key: &str| {
            cmdline
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        };
        let ip6 = value("fastvm.ip6")?;
        let gw6 = value("fastvm.gw6").unwrap_or("fe80::1");
        Some(GuestNetwork::parse(None, ip6, gw6).and_then(|mut net| {
            net.ipv4 = Ipv4Net::parse(value("fastvm.ip4"), value("fastvm.gw4"))?;
            Ok(net)
        }))
    }

    /// The steps that take a link from `now` to this network, in order.
    /// Nothing that is already right is redone: the link goes down only to
    /// change its MAC, and an address already in place stays (a flush
    /// would cut the guest's connections). Taking the link down drops its
    /// IPv6 addresses (unless `keep_addr_on_down` is set), so after a MAC
    /// change the address is always set again.
    pub fn steps(&self, now: &LinkState) -> Vec<NetStep> {
        let mut steps = Vec::new();
        let new_mac = self.mac.filter(|mac| now.mac != Some(*mac));
        if let Some(mac) = new_mac {
            steps.push(NetStep::LinkDown);
            steps.push(NetStep::SetMac(mac));
        }
        if new_mac.is_some() || !now.up {
            steps.push(NetStep::LinkUp);
        }
        let has_addr = new_mac.is_none() && now.addrs.contains(&(self.addr, self.prefix_len));
        if !has_addr {
            steps.push(NetStep::FlushGlobalV6);
            steps.push(NetStep::AddAddr(self.addr, self.prefix_len));
        }
        steps.push(NetStep::ReplaceDefaultRoute(self.gateway));
        if let Some(v4) = self.ipv4 {
            steps.push(NetStep::SetAddr4(v4.addr, v4.prefix_len));
            steps.push(NetStep::RoutesVia4(v4.gateway));
        }
        steps
    }

    /// Applies it to `dev`. Every step runs even when one before it failed
    /// (a MAC that cannot be set must not leave the link down); the error
    /// names each step that failed.
    pub fn apply(&self, dev: &str) -> Result<(), String> {
        let dad = format!("/proc/sys/net/ipv6/conf/{dev}/accept_dad");
        let _ = std::fs::write(&dad, "0");
        let mut rtnl = Rtnl::open().map_err(|e| format!("netlink socket: {e}"))?;
        let (index, now) = LinkState::read(&mut rtnl, dev)?;
        let failed: Vec<String> = self
            .steps(&now)
            .into_iter()
            .filter_map(|step| {
                step.run(&mut rtnl, index)
                    .err()
                    .map(|e| format!("{step} on {dev}: {e}"))
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

/// What a link has now, as far as [`GuestNetwork::steps`] cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    /// Its MAC (`None` when it has none of six bytes).
    pub mac: Option<Mac>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Its IPv6 addresses with prefix lengths.
    pub addrs: Vec<(Ipv6Addr, u8)>,
}

impl LinkState {
    /// Reads `dev`'s state over `rtnl` (`RTM_GETLINK`, `RTM_GETADDR`), with
    /// its interface index. A link that cannot be found is an error;
    /// addresses that cannot be listed count as none.
    pub fn read(rtnl: &mut Rtnl, dev: &str) -> Result<(u32, LinkState), String> {
        let link = rtnl.link(dev).map_err(|e| format!("{dev}: {e}"))?;
        let addrs = rtnl
            .addresses6(link.index)
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.addr, a.prefix_len))
            .collect();
        let mac = link
            .mac
            .and_then(|m| <[u8; 6]>::try_from(m.as_slice()).ok())
            .map(Mac);
        Ok((
            link.index,
            LinkState {
                mac,
                up: link.up,
                addrs,
            },
        ))
    }
}

/// At boot: applies the network on the kernel command line, if any
/// (failures are printed; the guest still boots).
pub fn configure_from_cmdline() {
    let Ok(cmdline) = std::fs::read_to_string("/proc/cmdline") else {
        return;
    };
    match GuestNetwork::from_cmdline(&cmdline) {
        None => {}
        Some(Err(e)) => eprintln!("guest-agent: network on the command line: {e}"),
        Some(Ok(net)) => {
            if let Err(e) = net.apply(DEVICE) {
                eprintln!("guest-agent: network: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> Mac {
        s.parse().unwrap()
    }

    #[test]
    fn command_line_values_are_read_and_checked() {
        let net = GuestNetwork::from_cmdline(
            "console=ttyS0 fastvm.ip6=fd00:1::ff:fe00:1/128 fastvm.gw6=fe80::1 quiet",
        )
        .unwrap()
        .unwrap();
        assert_eq!(net.addr, "fd00:1::ff:fe00:1".parse::<Ipv6Addr>().unwrap());
        assert_eq!((net.prefix_len, net.mac), (128, None));
        assert!(GuestNetwork::from_cmdline("console=ttyS0").is_none());
        assert!(
            GuestNetwork::from_cmdline("fastvm.ip6=10.0.0.1/24")
                .unwrap()
                .is_err()
        );
        assert!(GuestNetwork::parse(None, "fd00::1/129", "fe80::1").is_err());
        assert!(GuestNetwork::parse(Some("02:00:00:00:00"), "fd00::1", "fe80::1").is_err());
        assert!(GuestNetwork::parse(Some("02:00:00:00:00:zz"), "fd00::1", "fe80::1").is_err());
        assert!(GuestNetwork::parse(Some("02:00:00:00:00:00:00"), "fd00::1", "fe80::1").is_err());
        assert!(GuestNetwork::parse(Some("02:00:00:00:00:+f"), "fd00::1", "fe80::1").is_err());
    }

    #[test]
    fn macs_parse_in_any_case_and_show_in_lower_case() {
        assert_eq!(
            mac("02:AA:bb:0C:dd:EE").0,
            [0x02, 0xaa, 0xbb, 0x0c, 0xdd, 0xee]
        );
        assert_eq!(mac("02:AA:bb:0C:dd:EE").to_string(), "02:aa:bb:0c:dd:ee");
    }

    #[test]
    fn a_new_mac_takes_the_link_down_first() {
        let net = GuestNetwork::parse(Some("02:aa:bb:cc:dd:ee"), "fd00::2/128", "fe80::1").unwrap();
        let now = LinkState {
            mac: Some(mac("02:11:22:33:44:55")),
            up: true,
            addrs: vec![("fd00::1".parse().unwrap(), 128)],
        };
        assert_eq!(
            net.steps(&now),
            [
                NetStep::LinkDown,
                NetStep::SetMac(mac("02:aa:bb:cc:dd:ee")),
                NetStep::LinkUp,
                NetStep::FlushGlobalV6,
                NetStep::AddAddr("fd00::2".parse().unwrap(), 128),
                NetStep::ReplaceDefaultRoute("fe80::1".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn nothing_that_is_already_right_is_redone() {
        let net = GuestNetwork::parse(Some("02:AA:bb:cc:dd:ee"), "fd00::2/128", "fe80::1").unwrap();
        let now = LinkState {
            mac: Some(mac("02:aa:bb:cc:dd:ee")),
            up: true,
            addrs: vec![("fd00::2".parse().unwrap(), 128)],
        };
        assert_eq!(
            net.steps(&now),
            [NetStep::ReplaceDefaultRoute("fe80::1".parse().unwrap())]
        );
        let down = LinkState {
            up: false,
            addrs: vec![],
            ..now
        };
        assert_eq!(
            net.steps(&down),
            [
                NetStep::LinkUp,
                NetStep::FlushGlobalV6,
                NetStep::AddAddr("fd00::2".parse().unwrap(), 128),
                NetStep::ReplaceDefaultRoute("fe80::1".parse().unwrap()),
            ]
        );
        // No MAC asked for: the device's stays, whatever it is.
        let keep = GuestNetwork { mac: None, ..net };
        let unknown = LinkState {
            mac: None,
            up: true,
            addrs: vec![("fd00::2".parse().unwrap(), 128)],
        };
        assert_eq!(
            keep.steps(&unknown),
            [NetStep::ReplaceDefaultRoute("fe80::1".parse().unwrap())]
        );
    }

    #[test]
    fn an_address_kept_across_a_new_mac_is_set_again() {
        // Taking the link down to change the MAC drops its addresses.
        let net = GuestNetwork::parse(Some("02:aa:bb:cc:dd:ee"), "fd00::2/128", "fe80::1").unwrap();
        let now = LinkState {
            mac: Some(mac("02:11:22:33:44:55")),
            up: true,
            addrs: vec![("fd00::2".parse().unwrap(), 128)],
        };
        let steps = net.steps(&now);
        assert_eq!(
            steps[..3],
            [
                NetStep::LinkDown,
                NetStep::SetMac(mac("02:aa:bb:cc:dd:ee")),
                NetStep::LinkUp
            ]
        );
        assert!(steps.contains(&NetStep::AddAddr("fd00::2".parse().unwrap(), 128)));
    }

    #[test]
    fn steps_name_themselves_for_error_messages() {
        let names: Vec<String> = [
            NetStep::LinkDown,
            NetStep::SetMac(mac("02:AA:bb:cc:dd:ee")),
            NetStep::LinkUp,
            NetStep::FlushGlobalV6,
            NetStep::AddAddr("fd00::2".parse().unwrap(), 128),
            NetStep::ReplaceDefaultRoute("fe80::1".parse().unwrap()),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            [
                "link down",
                "set MAC 02:aa:bb:cc:dd:ee",
                "link up",
                "flush global IPv6 addresses",
                "add address fd00::2/128",
                "replace default route via fe80::1",
            ]
        );
    }
}
