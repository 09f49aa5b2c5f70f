//! IPv6 addressing of VMs: the host's /64 prefix (by default a ULA made at
//! first start, RFC 4193, kept in the data dir), each VM's MAC, and its
//! address: the prefix plus the modified EUI-64 interface id of the MAC
//! (RFC 4291), so the MAC alone tells a guest its address within the /64,
//! and a clone given a new MAC knows its new address.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::Path;
use std::str::FromStr;

use fastvm_proto::api::Ipv6Cidr;

/// File in the data dir holding the prefix.
pub const PREFIX_FILE: &str = "ipv6-prefix";
/// The host end of every tap, the guests' default gateway.
pub const GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A random locally administered unicast MAC (first byte 0x02).
    pub fn random() -> std::io::Result<Mac> {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).map_err(std::io::Error::other)?;
        b[0] = 0x02;
        Ok(Mac(b))
    }

    /// The modified EUI-64 interface identifier of this MAC.
    pub fn interface_id(&self) -> [u8; 8] {
        let m = self.0;
        [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]
    }

    /// The MAC whose interface identifier ends `addr`, if it is one
    /// (`ff:fe` in the middle).
    pub fn from_address(addr: Ipv6Addr) -> Option<Mac> {
        let o = addr.octets();
        (o[11] == 0xff && o[12] == 0xfe)
            .then(|| Mac([o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]]))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Why a MAC does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address (expected six hex bytes like 02:00:00:00:00:01)")]
pub struct BadMac;

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or(BadMac)?;
            if p.len() != 2 {
                return Err(BadMac);
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| BadMac)?;
        }
        if parts.next().is_some() || out[0] & 1 == 1 {
            return Err(BadMac);
        }
        Ok(Mac(out))
    }
}

/// The /64 VMs get their addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix(Ipv6Cidr);

/// Why a prefix cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    /// Not an IPv6 CIDR, or not a /64.
    #[error("IPv6 prefix {0:?}: must be an IPv6 /64 such as fd12:3456:789a:1::/64")]
    Bad(String),
    /// The prefix file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cidr: Ipv6Cidr = s.trim().parse().map_err(|_| PrefixError::Bad(s.into()))?;
        if cidr.prefix() != 64 || !s.contains('/') {
            return Err(PrefixError::Bad(s.into()));
        }
        Ok(Prefix(cidr))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Prefix {
    /// A new ULA /64: `fd` + 40 random bits of global id + subnet 0.
    pub fn random_ula() -> std::io::Result<Prefix> {
        let mut o = [0u8; 16];
        o[0] = 0xfd;
        getrandom::fill(&mut o[1..6]).map_err(std::io::Error::other)?;
        Ok(Prefix(
            Ipv6Cidr::new(Ipv6Addr::from(o), 64).expect("64 is a valid prefix length"),
        ))
    }

    /// The prefix stored in `data_dir`, created (a new ULA) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Prefix, PrefixError> {
        let path = data_dir.join(PREFIX_FILE);
        let io = |source| PrefixError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => text.parse(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let prefix = Prefix::random_ula().map_err(io)?;
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, format!("{prefix}\n")).map_err(io)?;
                std::fs::rename(&tmp, &path).map_err(io)?;
                Ok(prefix)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Whether `addr` is inside the prefix.
    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        self.0.contains(addr)
    }

    /// The address of the VM with `mac`.
    pub fn address(&self, mac: Mac) -> Ipv6Addr {
        let mut o = self.0.addr().octets();
        o[8..].copy_from_slice(&mac.interface_id());
        Ipv6Addr::from(o)
    }
}

/// The tap name of VM `id`: `fvm` and the first 12 hex digits of the id
/// (15 characters, the most Linux allows).
pub fn tap_name(vm_id: &str) -> String {
    let hex: String = vm_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    format!("fvm{hex}")
}

/// The kernel command line words that tell the guest its network:
/// `fastvm.ip6=ADDR/128 fastvm.gw6=fe80::1`. The address is a /128 with a
/// default route through the host: other VMs of the /64 are on other taps.
pub fn guest_cmdline(addr: Ipv6Addr) -> String {
    format!("fastvm.ip6={addr}/128 fastvm.gw6={GATEWAY}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_and_address_round_trip() {
        let mac: Mac = "02:12:34:56:78:9a".parse().unwrap();
        assert_eq!(mac.to_string(), "02:12:34:56:78:9a");
        assert_eq!(
            mac.interface_id(),
            [0, 0x12, 0x34, 0xff, 0xfe, 0x56, 0x78, 0x9a]
        );
        let prefix: Prefix = "fd00:1:2:3::/64".parse().unwrap();
        let addr = prefix.address(mac);
        assert_eq!(
            addr,
            "fd00:1:2:3:12:34ff:fe56:789a".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(Mac::from_address(addr), Some(mac));
        assert!(prefix.contains(addr));
        assert_eq!(Mac::from_address("fd00::1".parse().unwrap()), None);
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "01:00:00:00:00:00",
            "zz:00:00:00:00:00",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        let random = Mac::random().unwrap();
        assert_eq!(random.0[0], 0x02);
        assert_eq!(Mac::from_address(prefix.address(random)), Some(random));
    }

    #[test]
    fn prefixes_must_be_64s_and_persist() {
        for bad in ["fd00::/48", "fd00::", "10.0.0.0/8", "nonsense", "fd00::/65"] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let first = Prefix::load_or_create(dir.path()).unwrap();
        let text = first.to_string();
        assert!(text.starts_with("fd") && text.ends_with("::/64"), "{text}");
        assert_eq!(Prefix::load_or_create(dir.path()).unwrap(), first);
        let other = Prefix::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_ne!(other, first, "40 random bits differ");
        std::fs::write(dir.path().join(PREFIX_FILE), "garbage").unwrap();
        assert!(Prefix::load_or_create(dir.path()).is_err());
    }

    #[test]
    fn tap_names_fit_ifnamsiz() {
        let name = tap_name("9442203c-1d2e-4f00-8a6b-0123456789ab");
        assert_eq!(name, "fvm9442203c1d2e");
        assert!(name.len() <= 15);
        assert_eq!(
            guest_cmdline("fd00::1".parse().unwrap()),
            "fastvm.ip6=fd00::1/128 fastvm.gw6=fe80::1"
        );
    }
}
