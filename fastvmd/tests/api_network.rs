//! Networking through the daemon: each VM gets a tap and an address from
//! the data dir's /64, reported as `publicIpv6`; new VMs are closed
//! (`restricted`, no rules); PATCH and PUT of the firewall apply to the
//! running VM at once and persist; clones get their own address and the
//! snapshot's policy unless the request gives one; `--no-net` runs VMs
//! without a NIC. The test talks to the guests from this host, through the
//! routes the daemon adds.

mod common;

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use common::can_run_vms;
use common::daemon::Daemon;
use common::netns::tcp_greeting;
use serde_json::{Value, json};

const BLOCKED_WAIT: Duration = Duration::from_millis(400);

fn skip(test: &str) -> bool {
    if !can_run_vms(test) {
        return true;
    }
    if let Some(why) = common::netns::unavailable() {
        eprintln!("SKIP {test}: {why}");
        return true;
    }
    false
}

fn address(vm: &Value) -> Ipv6Addr {
    vm["publicIpv6"]
        .as_str()
        .unwrap_or_else(|| panic!("no publicIpv6 in {vm}"))
        .parse()
        .expect("publicIpv6 is an IPv6 address")
}

/// Which of TCP 7000-7002 answer, waiting up to `settle` for the first
/// answer from an allowed port (a guest that just started).
fn open_ports(addr: Ipv6Addr) -> Vec<u16> {
    [7000, 7001, 7002]
        .into_iter()
        .filter(|port| {
            tcp_greeting(addr, *port, BLOCKED_WAIT)
                .is_ok_and(|line| line == format!("fastvm {port}\n"))
        })
        .collect()
}

/// Waits until TCP `port` of `addr` answers.
fn wait_port(addr: Ipv6Addr, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tcp_greeting(addr, port, Duration::from_millis(300)).is_err() {
        assert!(Instant::now() < deadline, "[{addr}]:{port} never answered");
    }
}

#[test]
fn vms_get_addresses_and_firewall_changes_apply_live() {
    let test = "vms_get_addresses_and_firewall_changes_apply_live";
    if skip(test) {
        return;
    }
    let d = Daemon::start();
    let prefix = std::fs::read_to_string(d.data_dir.join("ipv6-prefix")).unwrap();
    let prefix: fastvmd::net::addr::Prefix = prefix.parse().unwrap();
    let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    assert_eq!(status, 201, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let addr = address(&vm);
    assert!(prefix.contains(addr), "{addr} in {prefix}");
    assert_eq!(vm["firewall"], json!({"mode": "restricted", "ingress": []}));
    assert_eq!(
        d.call("GET", &format!("/v1/vms/{id}"), None).1["publicIpv6"],
        vm["publicIpv6"]
    );

    // Closed by default.
    assert_eq!(open_ports(addr), Vec::<u16>::new());

    // PATCH: one TCP port, live.
    let (status, patched) = d.call(
        "PATCH",
        &format!("/v1/vms/{id}/firewall"),
        Some(&json!({"ingress": [{"protocol": "tcp", "portStart": 7000}]})),
    );
    assert_eq!(status, 200, "{patched}");
    wait_port(addr, 7000);
    assert_eq!(open_ports(addr), vec![7000]);

    // PUT: open, live.
    let (status, put) = d.call(
        "PUT",
        &format!("/v1/vms/{id}/firewall"),
        Some(&json!({"mode": "open"})),
    );
    assert_eq!(status, 200, "{put}");
    assert_eq!(open_ports(addr), vec![7000, 7001, 7002]);

    // PATCH of the mode only keeps the rules.
    let (_, patched) = d.call(
        "PATCH",
        &format!("/v1/vms/{id}/firewall"),
        Some(&json!({"ingress": [{"protocol": "tcp", "portStart": 7001, "portEnd": 7002}]})),
    );
    assert_eq!(patched["firewall"]["mode"], "open");
    let (_, patched) = d.call(
        "PATCH",
        &format!("/v1/vms/{id}/firewall"),
        Some(&json!({"mode": "restricted"})),
    );
    assert_eq!(patched["firewall"]["ingress"][0]["portStart"], 7001);
    assert_eq!(open_ports(addr), vec![7001, 7002]);
    let kept = patched["firewall"].clone();
    let firewall_path = format!("/v1/vms/{id}/firewall");

    // Past the caps: 400, and the previous policy stays.
    let many: Vec<_> = (0..2000)
        .map(|i| json!({"protocol": "tcp", "portStart": 10_000 + i}))
        .collect();
    let (status, err) = d.call(
        "PUT",
        &firewall_path,
        Some(&json!({"mode": "restricted", "ingress": many})),
    );
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("at most 1000"),
        "{err}"
    );
    assert_eq!(
        d.call("GET", &format!("/v1/vms/{id}"), None).1["firewall"],
        kept
    );
    assert_eq!(open_ports(addr), vec![7001, 7002]);

    // A change the monitor does not take (here: it is stopped and the call
    // times out) leaves the previous policy stored and in force, also once
    // the monitor runs again.
    let pids = d.monitor_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    // SAFETY: stops and later continues the monitor this test started.
    unsafe { libc::kill(pids[0] as i32, libc::SIGSTOP) };
    let (status, err) = d.call("PUT", &firewall_path, Some(&json!({"mode": "open"})));
    // SAFETY: as above.
    unsafe { libc::kill(pids[0] as i32, libc::SIGCONT) };
    assert_eq!(status, 502, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("not applied"),
        "{err}"
    );
    assert_eq!(
        d.call("GET", &format!("/v1/vms/{id}"), None).1["firewall"],
        kept
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        open_ports(addr),
        vec![7001, 7002],
        "still the previous policy"
    );

    // A policy at the caps reaches the monitor whole: 1,000 rules with
    // 256-character descriptions (~330 KB of JSON), the last one opening 7000.
    let mut big: Vec<_> = (0..999)
        .map(|i| {
            json!({"protocol": "udp", "portStart": 20_000 + i,
                   "description": "d".repeat(256)})
        })
        .collect();
    big.push(json!({"protocol": "tcp", "portStart": 7000}));
    let (status, put) = d.call(
        "PUT",
        &firewall_path,
        Some(&json!({"mode": "restricted", "ingress": big})),
    );
    assert_eq!(status, 200, "{}", put["error"]);
    assert_eq!(put["firewall"]["ingress"].as_array().unwrap().len(), 1000);
    wait_port(addr, 7000);
    assert_eq!(open_ports(addr), vec![7000]);
    let (status, put) = d.call("PUT", &firewall_path, Some(&kept));
    assert_eq!(status, 200, "{put}");
    assert_eq!(open_ports(addr), vec![7001, 7002]);

    // A snapshot keeps the policy; a clone gets a new address and that policy.
    let (status, snap) = d.call("POST", "/v1/snapshots", Some(&json!({"vmId": id})));
    assert_eq!(status, 201, "{snap}");
    assert_eq!(snap["firewall"], patched["firewall"]);
    let snap_id = snap["id"].as_str().unwrap();
    let (status, clone) = d.call("POST", "/v1/vms", Some(&json!({"snapshotId": snap_id})));
    assert_eq!(status, 201, "{clone}");
    let clone_addr = address(&clone);
    assert_ne!(clone_addr, addr);
    assert!(prefix.contains(clone_addr));
    assert_eq!(clone["firewall"], patched["firewall"]);
    wait_port(clone_addr, 7001);
    assert_eq!(open_ports(clone_addr), vec![7001, 7002]);

    // A clone given its own policy enforces that one.
    let (status, own) = d.call(
        "POST",
        "/v1/vms",
        Some(
            &json!({"snapshotId": snap_id, "firewall": {"mode": "restricted",
            "ingress": [{"protocol": "tcp", "portStart": 7000}]}}),
        ),
    );
    assert_eq!(status, 201, "{own}");
    let own_addr = address(&own);
    wait_port(own_addr, 7000);
    assert_eq!(open_ports(own_addr), vec![7000]);

    // The original is untouched by its clones.
    assert_eq!(open_ports(addr), vec![7001, 7002]);
}

#[test]
fn without_network_vms_have_no_address() {
    let test = "without_network_vms_have_no_address";
    if !can_run_vms(test) {
        return;
    }
    let d = Daemon::start_with(&["--no-net"]);
    let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    assert_eq!(status, 201, "{vm}");
    assert!(vm.get("publicIpv6").is_none(), "{vm}");
    let id = vm["id"].as_str().unwrap();
    // The policy is still stored and answered.
    let (status, put) = d.call(
        "PUT",
        &format!("/v1/vms/{id}/firewall"),
        Some(&json!({"mode": "open"})),
    );
    assert_eq!((status, &put["firewall"]["mode"]), (200, &json!("open")));
}

#[test]
fn without_cap_net_admin_vms_have_no_nic_and_the_daemon_says_so_once() {
    let test = "without_cap_net_admin_vms_have_no_nic_and_the_daemon_says_so_once";
    if !can_run_vms(test) {
        return;
    }
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP {test}: setpriv (util-linux) is not installed");
        return;
    }
    // Root, but with CAP_NET_ADMIN gone from every capability set.
    let d = Daemon::start_via(
        &[
            "setpriv",
            "--inh-caps=-net_admin",
            "--bounding-set=-net_admin",
        ],
        &[],
        true,
    );
    for _ in 0..2 {
        let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
        assert_eq!(status, 201, "{vm}");
        assert!(vm.get("publicIpv6").is_none(), "{vm}");
        let id = vm["id"].as_str().unwrap();
        let (status, out) = d.call(
            "POST",
            &format!("/v1/vms/{id}/exec"),
            Some(&json!({"command": ["echo", "no-nic"]})),
        );
        assert_eq!((status, &out["stdout"]), (200, &json!("no-nic\n")));
    }
    let said = std::fs::read_to_string(d.stderr_path()).unwrap();
    assert_eq!(
        said.matches("networking off").count(),
        1,
        "said once at start:\n{said}"
    );
    assert!(said.contains("CAP_NET_ADMIN"), "{said}");
}
