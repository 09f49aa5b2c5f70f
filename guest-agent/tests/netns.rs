//! `GuestNetwork::apply` against a real kernel over rtnetlink. Each test
//! runs the test binary again as a child process that moves into a network
//! namespace of its own (root only) and makes a veth pair there with the
//! host's `ip`; `va` stands in for the guest's `eth0`. What the agent set
//! is read back with `ip`, a reader independent of the agent's code.

use std::io::{self, Write};
use std::process::Command;

use guest_agent::network::GuestNetwork;

/// Set in the child to the name of the test it runs.
const CHILD: &str = "GUEST_AGENT_NETNS_TEST";
/// The child's exit code when the test cannot run here; its last line of
/// stderr says why.
const SKIP: i32 = 77;

/// Says why `test` did not run (straight to stderr: the test harness
/// captures `eprintln!`).
fn skip(test: &str, why: &str) {
    let _ = writeln!(io::stderr(), "SKIP {test}: {why}");
}

/// In the child: stops the test as skipped, with `why`.
fn child_skip(why: &str) -> ! {
    eprintln!("{why}");
    std::process::exit(SKIP)
}

/// True in the child process, which is then in a network namespace of its
/// own and runs the test's body. In the test process it runs the child,
/// reports its result (a failure panics, a skip prints `SKIP`) and returns
/// false.
fn in_own_netns(test: &str) -> bool {
    if std::env::var(CHILD).as_deref() == Ok(test) {
        // SAFETY: unshare takes flags only; it moves this thread (the one
        // running the test, and every process it spawns) into a new network
        // namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = io::Error::last_os_error();
            child_skip(&format!("cannot create a network namespace: {e}"));
        }
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "needs root to create a network namespace");
        return false;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => assert!(
            stdout.contains("1 passed"),
            "the child ran no test:\n{stdout}\n{stderr}"
        ),
        Some(SKIP) => skip(test, stderr.trim().lines().last().unwrap_or("?")),
        _ => panic!("{test} failed in its namespace:\n{stdout}\n{stderr}"),
    }
    false
}

/// Runs the host's `ip ARGS`: its stdout, or what went wrong.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes the veth pair `va`/`vb` (the peer up, as the host's tap would
/// be), or ends the child as skipped.
fn veth_pair() {
    if let Err(e) = ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"])
        .and_then(|_| ip(&["link", "set", "vb", "up"]))
    {
        child_skip(&format!("cannot create a veth pair: {e}"));
    }
}

/// What `ip` shows of `va`: its link line, its global IPv6 addresses, the
/// default IPv6 route.
struct Shown {
    link: String,
    addrs: String,
    route: String,
}

fn shown() -> Shown {
    Shown {
        link: ip(&["-o", "link", "show", "dev", "va"]).unwrap(),
        addrs: ip(&["-6", "-o", "addr", "show", "dev", "va", "scope", "global"]).unwrap(),
        route: ip(&["-6", "route", "show", "default"]).unwrap(),
    }
}

impl Shown {
    fn up(&self) -> bool {
        let flags = self
            .link
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map_or("", |(flags, _)| flags);
        flags.split(',').any(|f| f == "UP")
    }

    fn mac(&self, mac: &str) -> bool {
        self.link.contains(&format!("link/ether {mac} "))
    }

    fn has(&self, addr: &str) -> bool {
        self.addrs.split_whitespace().any(|w| w == addr)
    }
}

#[test]
fn apply_sets_mac_link_address_and_route_over_netlink() {
    const TEST: &str = "apply_sets_mac_link_address_and_route_over_netlink";
    if !in_own_netns(TEST) {
        return;
    }
    veth_pair();
    let before = shown();
    assert!(!before.up(), "{}", before.link);

    let first = GuestNetwork::parse(Some("02:00:00:00:aa:01"), "fd00::2/128", "fe80::1").unwrap();
    first.apply("va").unwrap();
    let now = shown();
    assert!(now.up(), "{}", now.link);
    assert!(now.mac("02:00:00:00:aa:01"), "{}", now.link);
    assert!(now.has("fd00::2/128"), "{}", now.addrs);
    assert!(
        now.route.contains("default via fe80::1 dev va"),
        "{}",
        now.route
    );
    // Again: nothing to change but the route, which is replaced, not added.
    first.apply("va").unwrap();
    let again = shown();
    assert!(again.has("fd00::2/128"), "{}", again.addrs);
    assert_eq!(again.route.lines().count(), 1, "{}", again.route);

    // A new address: the old global one goes, the link-local one stays.
    let second = GuestNetwork::parse(Some("02:00:00:00:aa:01"), "fd00::3/64", "fe80::1").unwrap();
    second.apply("va").unwrap();
    let now = shown();
    assert!(
        now.has("fd00::3/64") && !now.has("fd00::2/128"),
        "{}",
        now.addrs
    );
    let link_local = ip(&["-6", "-o", "addr", "show", "dev", "va", "scope", "link"]).unwrap();
    assert!(link_local.contains("fe80::"), "{link_local}");
    assert!(
        now.route.contains("default via fe80::1 dev va"),
        "{}",
        now.route
    );

    // A new MAC with the same address: the link went down and back up, and
    // the address and route it dropped are there again.
    let third = GuestNetwork::parse(Some("02:00:00:00:aa:02"), "fd00::3/64", "fe80::1").unwrap();
    third.apply("va").unwrap();
    let now = shown();
    assert!(now.up() && now.mac("02:00:00:00:aa:02"), "{}", now.link);
    assert!(now.has("fd00::3/64"), "{}", now.addrs);
    assert!(
        now.route.contains("default via fe80::1 dev va"),
        "{}",
        now.route
    );
}

#[test]
fn a_failed_step_is_named_and_the_others_still_run() {
    const TEST: &str = "a_failed_step_is_named_and_the_others_still_run";
    if !in_own_netns(TEST) {
        return;
    }
    veth_pair();
    // A multicast MAC is refused by the kernel; the link must still come
    // up and get its address and route.
    let net = GuestNetwork::parse(Some("01:00:00:00:00:01"), "fd00::4/128", "fe80::1").unwrap();
    let err = net.apply("va").unwrap_err();
    assert!(
        err.starts_with("set MAC 01:00:00:00:00:01 on va: Cannot assign requested address"),
        "{err}"
    );
    assert!(!err.contains(';'), "only one step failed: {err}");
    let now = shown();
    assert!(now.up(), "{}", now.link);
    assert!(now.has("fd00::4/128"), "{}", now.addrs);
    assert!(
        now.route.contains("default via fe80::1 dev va"),
        "{}",
        now.route
    );

    // A gateway that is not on the link: the route step fails with the
    // kernel's reason.
    let off_link = GuestNetwork::parse(None, "fd00::4/128", "fd99::1").unwrap();
    let err = off_link.apply("va").unwrap_err();
    assert!(
        err.starts_with("replace default route via fd99::1 on va: "),
        "{err}"
    );

    // No such device: named, with the errno text.
    let err = off_link.apply("nosuch0").unwrap_err();
    assert!(
        err.contains("nosuch0") && err.contains("No such device"),
        "{err}"
    );
}

#[test]
fn loopback_comes_up_over_netlink() {
    const TEST: &str = "loopback_comes_up_over_netlink";
    if !in_own_netns(TEST) {
        return;
    }
    let lo = || ip(&["-o", "link", "show", "dev", "lo"]).unwrap();
    let before = lo();
    assert!(!before.contains("<LOOPBACK,UP"), "{before}");
    guest_agent::init::loopback_up().unwrap();
    let after = lo();
    assert!(after.contains("<LOOPBACK,UP"), "{after}");
}

#[test]
fn ipv4_gets_its_address_a_gateway_on_the_link_and_a_default_route() {
    const TEST: &str = "ipv4_gets_its_address_a_gateway_on_the_link_and_a_default_route";
    if !in_own_netns(TEST) {
        return;
    }
    veth_pair();
    let v4 = |ip4: &str| {
        let mut net =
            GuestNetwork::parse(Some("02:00:00:00:bb:01"), "fd00::5/128", "fe80::1").unwrap();
        net.ipv4 = guest_agent::network::Ipv4Net::parse(Some(ip4), Some("100.64.0.1")).unwrap();
        net
    };
    v4("100.70.1.2/32").apply("va").unwrap();
    let addrs = ip(&["-4", "-o", "addr", "show", "dev", "va"]).unwrap();
    assert!(addrs.contains("inet 100.70.1.2/32"), "{addrs}");
    let routes = ip(&["-4", "route", "show"]).unwrap();
    assert!(routes.contains("default via 100.64.0.1 dev va"), "{routes}");
    assert!(routes.contains("100.64.0.1 dev va"), "{routes}");
    // A clone's new address replaces the old one; applying twice changes nothing.
    v4("100.70.9.9/32").apply("va").unwrap();
    v4("100.70.9.9/32").apply("va").unwrap();
    let addrs = ip(&["-4", "-o", "addr", "show", "dev", "va"]).unwrap();
    assert!(
        addrs.contains("inet 100.70.9.9/32") && !addrs.contains("100.70.1.2"),
        "{addrs}"
    );
    let routes = ip(&["-4", "route", "show", "default"]).unwrap();
    assert_eq!(routes.lines().count(), 1, "{routes}");
    // Half of it, or a bad address, is refused before anything changes.
    let half = guest_agent::network::Ipv4Net::parse(Some("100.70.1.2"), None);
    assert!(half.is_err());
    assert!(guest_agent::network::Ipv4Net::parse(Some("100.70.1"), Some("100.64.0.1")).is_err());
    let net = GuestNetwork::from_cmdline(
        "fastvm.ip6=fd00::5/128 fastvm.gw6=fe80::1 fastvm.ip4=100.70.3.4/32 fastvm.gw4=100.64.0.1",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        net.ipv4.map(|v| v.addr.to_string()),
        Some("100.70.3.4".into())
    );
}
