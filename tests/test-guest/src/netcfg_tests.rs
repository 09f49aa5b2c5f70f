//! Host tests of the network configuration from the command line.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::*;

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn reads_the_address_and_gateway() {
    let c =
        parse("console=ttyS0 fastvm.ip6=fd00:1::12:34ff:fe56:789a/128 fastvm.gw6=fe80::1").unwrap();
    assert_eq!(
        c.addr,
        "fd00:1::12:34ff:fe56:789a".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(c.prefix_len, 128);
    assert_eq!(c.gateway, Some("fe80::1".parse().unwrap()));
    assert_eq!(c.ipv4, None);
    assert_eq!(parse("fastvm.ip6=fd00::5").unwrap().prefix_len, 128);
    assert!(parse("console=ttyS0").is_err());
    assert!(parse("fastvm.ip6=nonsense/64").is_err());
    assert!(parse("fastvm.ip6=fd00::1/129").is_err());
    assert!(parse("fastvm.ip6=fd00::1/64 fastvm.gw6=x").is_err());
}

#[test]
fn reads_ipv4_with_its_gateway() {
    let line = "fastvm.ip6=fd00::5/128 fastvm.gw6=fe80::1 fastvm.ip4=100.64.0.6/32 \
                fastvm.gw4=100.64.0.1";
    let c = parse(line).unwrap().ipv4.unwrap();
    assert_eq!(c.addr, v4("100.64.0.6"));
    assert_eq!(c.prefix_len, 32);
    assert_eq!(c.gateway, v4("100.64.0.1"));
    assert_eq!(c.link_prefix, 29);
    // No length means /32.
    let c = parse("fastvm.ip6=fd00::5 fastvm.ip4=10.1.2.3 fastvm.gw4=10.1.2.1").unwrap();
    assert_eq!(c.ipv4.unwrap().prefix_len, 32);
    // A subnet that holds the gateway is kept as given.
    let c = parse("fastvm.ip6=fd00::5 fastvm.ip4=10.1.2.3/24 fastvm.gw4=10.1.2.1").unwrap();
    assert_eq!(c.ipv4.unwrap().link_prefix, 24);
}

#[test]
fn ipv4_needs_both_words_well_formed() {
    let v6 = "fastvm.ip6=fd00::5/128";
    for (words, why) in [
        (
            "fastvm.ip4=100.64.0.6/32",
            "fastvm.ip4= without fastvm.gw4=",
        ),
        ("fastvm.gw4=100.64.0.1", "fastvm.gw4= without fastvm.ip4="),
        (
            "fastvm.ip4=100.64.0.300/32 fastvm.gw4=100.64.0.1",
            "bad fastvm.ip4=100.64.0.300/32",
        ),
        (
            "fastvm.ip4=100.64.0.6/33 fastvm.gw4=100.64.0.1",
            "bad fastvm.ip4=100.64.0.6/33",
        ),
        (
            "fastvm.ip4=100.64.0.6/32 fastvm.gw4=fe80::1",
            "bad fastvm.gw4=fe80::1",
        ),
        (
            "fastvm.ip4=100.64.0.6/32 fastvm.gw4=100.64.0.6",
            "fastvm.gw4=100.64.0.6 is the guest's own address",
        ),
        (
            "fastvm.ip4=0.0.0.0/32 fastvm.gw4=100.64.0.1",
            "fastvm.ip4=0.0.0.0 is not a unicast address",
        ),
        (
            "fastvm.ip4=100.64.0.6/32 fastvm.gw4=224.0.0.1",
            "fastvm.gw4=224.0.0.1 is not a unicast address",
        ),
    ] {
        let line = std::format!("{v6} {words}");
        assert_eq!(parse(&line).unwrap_err(), why, "{line}");
    }
    // IPv4 alone does not bring the NIC up.
    assert!(parse("fastvm.ip4=100.64.0.6/32 fastvm.gw4=100.64.0.1").is_err());
}

#[test]
fn the_link_prefix_holds_the_gateway_inside_its_subnet() {
    let p = |a, g| link_prefix(v4(a), v4(g));
    assert_eq!(p("100.64.0.2", "100.64.0.1"), Some(30));
    assert_eq!(p("100.64.0.5", "100.64.0.4"), Some(31));
    // .3 would be the /30's broadcast address, .0 the /30's network.
    assert_eq!(p("100.64.0.3", "100.64.0.1"), Some(29));
    assert_eq!(p("100.64.1.2", "100.64.1.0"), Some(23));
    assert_eq!(p("100.64.3.7", "100.64.0.1"), Some(22));
    assert_eq!(p("100.127.255.254", "100.64.0.1"), Some(10));
    assert_eq!(p("100.64.0.1", "100.64.0.1"), None);
    // Nothing in common: everything is on the link.
    assert_eq!(p("100.64.0.6", "169.254.1.1"), Some(0));
    assert!(contains(v4("100.64.3.7"), 22, v4("100.64.0.1")));
    assert!(!contains(v4("100.64.3.7"), 23, v4("100.64.0.1")));
    assert!(contains(v4("10.0.0.1"), 0, v4("192.0.2.1")));
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

#[test]
fn a_setting_is_read_as_the_command_line_is() {
    let line =
        "fastvm.ip6=fd00::12/128 fastvm.gw6=fe80::1 fastvm.ip4=100.64.3.4/32 fastvm.gw4=100.64.0.1";
    let set = from_setting(
        "fd00::12/128",
        "fe80::1",
        Some("100.64.3.4/32"),
        Some("100.64.0.1"),
    );
    assert_eq!(set, parse(line));
    assert_eq!(set.unwrap().ipv4.unwrap().addr, v4("100.64.3.4"));
    let v6_only = from_setting("fd00::12/128", "fe80::1", None, None).unwrap();
    assert_eq!(v6_only.ipv4, None);
    assert!(from_setting("fd00::12/128", "fe80::1", Some("100.64.3.4/32"), None).is_err());
    assert!(from_setting("nonsense", "fe80::1", None, None).is_err());
    // A value cannot smuggle in another key.
    let smuggled = from_setting("fd00::12/128 fastvm.ip4=1.2.3.4/32", "fe80::1", None, None);
    assert!(smuggled.is_err(), "{smuggled:?}");
}
