//! IPv4 addressing of VMs, for egress through the host's NAT: a range
//! (100.64.0.0/10, the shared address space of RFC 6598, by default: no
//! network a host is likely to use), each VM's address in it a function of
//! its MAC (so a clone with a new MAC has a new address, as with IPv6),
//! and the range's first address the gateway every VM's tap answers as.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::addr::Mac;

/// The range VMs get IPv4 addresses from unless told otherwise.
pub const DEFAULT_RANGE: &str = "100.64.0.0/10";

/// An IPv4 range of at least 8 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Range {
    base: Ipv4Addr,
    len: u8,
}

/// Why a range cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "IPv4 range {0:?}: must be a network in CIDR form with a prefix of 8 to 29 bits, such as 100.64.0.0/10"
)]
pub struct RangeError(String);

impl FromStr for Ipv4Range {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RangeError(s.to_string());
        let (addr, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let base: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=29).contains(&len) || u32::from(base) & !mask(len) != 0 {
            return Err(bad());
        }
        Ok(Ipv4Range { base, len })
    }
}

impl fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.len)
    }
}

fn mask(len: u8) -> u32 {
    u32::MAX << (32 - u32::from(len))
}

impl Ipv4Range {
    /// The gateway: the range's first address after its network address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// Whether `addr` is in the range.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.len) == u32::from(self.base)
    }

    /// The address of the VM with `mac`: the MAC's last 32 bits within the
    /// range's host part. `None` when that lands on the network address,
    /// the gateway or the broadcast address (the caller picks another MAC).
    pub fn address(&self, mac: Mac) -> Option<Ipv4Addr> {
        let m = mac.0;
        let bits = u32::from_be_bytes([m[2], m[3], m[4], m[5]]);
        let host = bits & !mask(self.len);
        let reserved = [0, 1, !mask(self.len)];
        (!reserved.contains(&host)).then(|| Ipv4Addr::from(u32::from(self.base) | host))
    }
}

/// A range, or none (`off`): the daemon's `--ipv4-range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Setting(pub Option<Ipv4Range>);

impl FromStr for Ipv4Setting {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" | "none" => Ok(Ipv4Setting(None)),
            range => range.parse().map(|r| Ipv4Setting(Some(r))),
        }
    }
}

/// The kernel command line words that tell a guest its IPv4 network:
/// `fastvm.ip4=ADDR/32 fastvm.gw4=GATEWAY`.
pub fn guest_cmdline(addr: Ipv4Addr, gateway: Ipv4Addr) -> String {
    format!("fastvm.ip4={addr}/32 fastvm.gw4={gateway}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_reject_what_is_not_a_network() {
        let r: Ipv4Range = DEFAULT_RANGE.parse().unwrap();
        assert_eq!(r.to_string(), "100.64.0.0/10");
        assert_eq!(r.gateway(), Ipv4Addr::new(100, 64, 0, 1));
        for bad in [
            "100.64.0.1/10",
            "100.64.0.0",
            "1.2.3.4/31",
            "10.0.0.0/7",
            "x/10",
        ] {
            assert!(bad.parse::<Ipv4Range>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_vms_address_comes_from_its_mac_and_avoids_the_reserved_ones() {
        let r: Ipv4Range = DEFAULT_RANGE.parse().unwrap();
        let mac: Mac = "02:00:12:34:56:78".parse().unwrap();
        let a = r.address(mac).unwrap();
        assert!(r.contains(a));
        assert_eq!(a, Ipv4Addr::new(100, 116, 86, 120));
        let small: Ipv4Range = "192.168.7.0/29".parse().unwrap();
        for last in [0u8, 1, 7] {
            let mac = Mac([2, 0, 0, 0, 0, last]);
            assert_eq!(small.address(mac), None, "host {last}");
        }
        assert_eq!(
            small.address(Mac([2, 0, 0, 0, 0, 10])),
            Some(Ipv4Addr::new(192, 168, 7, 2))
        );
        assert_eq!(
            guest_cmdline(a, r.gateway()),
            "fastvm.ip4=100.116.86.120/32 fastvm.gw4=100.64.0.1"
        );
    }
}
