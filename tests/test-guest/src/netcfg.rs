//! The guest's network configuration from the kernel command line, as the
//! daemon gives it: `fastvm.ip6=ADDR/LEN fastvm.gw6=GW`. The address's
//! interface id is the modified EUI-64 of the NIC's MAC, so when a clone
//! gets a new MAC its address is the same /64 with the new MAC's id.

use core::net::Ipv6Addr;

/// What the command line says about the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv6Addr>,
}

/// Reads `fastvm.ip6=` (required) and `fastvm.gw6=` from `cmdline`.
pub fn parse(cmdline: &str) -> Option<NetConfig> {
    let mut config = None;
    let mut gateway = None;
    for word in cmdline.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix("fastvm.ip6=") {
            let (addr, len) = v.split_once('/').unwrap_or((v, "128"));
            let prefix_len: u8 = len.parse().ok().filter(|l| *l <= 128)?;
            config = Some((addr.parse::<Ipv6Addr>().ok()?, prefix_len));
        } else if let Some(v) = word.strip_prefix("fastvm.gw6=") {
            gateway = Some(v.parse::<Ipv6Addr>().ok()?);
        }
    }
    let (addr, prefix_len) = config?;
    Some(NetConfig {
        addr,
        prefix_len,
        gateway,
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
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_and_gateway() {
        let c = parse("console=ttyS0 fastvm.ip6=fd00:1::12:34ff:fe56:789a/128 fastvm.gw6=fe80::1")
            .unwrap();
        assert_eq!(
            c.addr,
            "fd00:1::12:34ff:fe56:789a".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(c.prefix_len, 128);
        assert_eq!(c.gateway, Some("fe80::1".parse().unwrap()));
        assert_eq!(parse("fastvm.ip6=fd00::5").unwrap().prefix_len, 128);
        assert_eq!(parse("console=ttyS0"), None);
        assert_eq!(parse("fastvm.ip6=nonsense/64"), None);
        assert_eq!(parse("fastvm.ip6=fd00::1/129"), None);
        assert_eq!(parse("fastvm.ip6=fd00::1/64 fastvm.gw6=x"), None);
    }

    #[test]
    fn a_new_mac_gives_the_same_prefix_with_its_id() {
        let addr: Ipv6Addr = "fd00:1:2:3:12:34ff:fe56:789a".parse().unwrap();
        let moved = address_for_mac(addr, [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
        assert_eq!(
            moved,
            "fd00:1:2:3:aa:bbff:fecc:ddee".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            link_local([0x02, 0x12, 0x34, 0x56, 0x78, 0x9a]),
            "fe80::12:34ff:fe56:789a".parse::<Ipv6Addr>().unwrap()
        );
    }
}
