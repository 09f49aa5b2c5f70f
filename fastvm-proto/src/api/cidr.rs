//! IPv6 CIDRs for firewall `sourceCidrs`, parsed with std's [`Ipv6Addr`].
//!
//! Accepted: `addr/prefix` with prefix `0..=128` written in plain decimal
//! digits, or a bare address meaning `/128`. Host bits below the prefix are
//! allowed and masked off (`2001:db8::1/64` is `2001:db8::/64`), as ip(8) and
//! nftables do. IPv4 addresses and prefixes are rejected (this firewall only
//! sees public IPv6); IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is IPv6 and accepted.

use core::fmt;
use core::str::FromStr;
use std::net::Ipv6Addr;

/// Why a string is not an IPv6 CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part parses as IPv4.
    #[error("IPv4 addresses are not allowed (IPv6 only)")]
    Ipv4,
    /// The address part is not an IPv6 address.
    #[error("not a valid IPv6 address")]
    BadAddress,
    /// The part after `/` is empty, not decimal, or above 128.
    #[error("prefix length must be a number from 0 to 128")]
    BadPrefix,
}

/// An IPv6 network: address with host bits cleared, and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    addr: Ipv6Addr,
    prefix: u8,
}

impl Ipv6Cidr {
    /// `::/0`, every address.
    pub const ANY: Ipv6Cidr = Ipv6Cidr {
        addr: Ipv6Addr::UNSPECIFIED,
        prefix: 0,
    };

    /// The network of `addr` with `prefix` bits; `None` when `prefix > 128`.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Option<Self> {
        (prefix <= 128).then(|| Ipv6Cidr {
            addr: Ipv6Addr::from(u128::from(addr) & Self::mask(prefix)),
            prefix,
        })
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The prefix length, 0..=128.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & Self::mask(self.prefix) == u128::from(self.addr)
    }

    fn mask(prefix: u8) -> u128 {
        match prefix {
            0 => 0,
            p => u128::MAX << (128 - u32::from(p.min(128))),
        }
    }
}

impl FromStr for Ipv6Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_part, prefix_part) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: Ipv6Addr = addr_part.parse().map_err(|_| {
            if addr_part.parse::<std::net::Ipv4Addr>().is_ok() {
                CidrError::Ipv4
            } else {
                CidrError::BadAddress
            }
        })?;
        let prefix = match prefix_part {
            None => 128,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| CidrError::BadPrefix)?
            }
            Some(_) => return Err(CidrError::BadPrefix),
        };
        Ipv6Cidr::new(addr, prefix).ok_or(CidrError::BadPrefix)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl super::FirewallRule {
    /// The rule's source networks: `sourceCidrs` parsed, or `[::/0]` when
    /// absent or empty. Fails on the first entry that is not an IPv6 CIDR.
    pub fn source_nets(&self) -> Result<Vec<Ipv6Cidr>, CidrError> {
        match self.source_cidrs.as_deref() {
            None | Some([]) => Ok(vec![Ipv6Cidr::ANY]),
            Some(list) => list.iter().map(|s| s.parse()).collect(),
        }
    }
}
