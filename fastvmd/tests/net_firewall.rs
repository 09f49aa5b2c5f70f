//! The ingress firewall end to end: a monitor with a NIC on a tap inside a
//! network namespace made by the test, the test guest answering TCP and
//! UDP, and a client in a second namespace routed to it. Open mode reaches
//! every port; restricted mode only the allowed protocol, ports and
//! sources; neighbor discovery works in restricted mode; a policy change on
//! the live VM applies to the next packet; a restored clone, on its own tap
//! with a new MAC and address, enforces the snapshot's policy.

mod common;

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::netns::{self, CLIENT, CLIENT2, NetLab, ping, tcp_greeting, udp_echo};
use fastvm_proto::api::{FirewallMode, FirewallPolicy, FirewallProtocol, FirewallRule};
use fastvmd::net::addr::{Mac, Prefix};
use fastvmd::supervisor::control_client::ControlClient;
use fastvmd::vmm::control::{FirewallInfo, Request};

/// How long a blocked connection attempt or datagram is given.
const BLOCKED_WAIT: Duration = Duration::from_millis(400);

fn prefix() -> Prefix {
    "fd00:99::/64".parse().unwrap()
}

fn skip(test: &str) -> bool {
    if !common::can_run_vms(test) {
        return true;
    }
    if let Some(why) = netns::unavailable() {
        eprintln!("SKIP {test}: {why}");
        return true;
    }
    false
}

fn rule(protocol: FirewallProtocol, port: u32, cidrs: &[&str]) -> FirewallRule {
    FirewallRule {
        protocol,
        port_start: port,
        port_end: None,
        source_cidrs: (!cidrs.is_empty()).then(|| cidrs.iter().map(|s| s.to_string()).collect()),
        description: None,
    }
}

fn open() -> FirewallPolicy {
    FirewallPolicy {
        mode: FirewallMode::Open,
        ingress: Vec::new(),
    }
}

/// A monitor in the lab's host namespace, killed on drop.
struct NetVm {
    child: Child,
    dir: PathBuf,
    addr: Ipv6Addr,
}

impl NetVm {
    fn spawn(lab: &NetLab, dir: &Path, tap: &str, mac: Mac, args: &[String]) -> NetVm {
        let addr = prefix().address(mac);
        let child = lab
            .command_in_host(&common::monitor_bin())
            .arg("--dir")
            .arg(dir)
            .args(["--tap", tap, "--mac", &mac.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the monitor");
        let vm = NetVm {
            child,
            dir: dir.to_path_buf(),
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        // The control socket answers once the VM (and its tap) is built.
        while ControlClient::connect(&dir.join("control.sock"))
            .and_then(|mut c| c.call(&Request::Status))
            .is_err()
        {
            assert!(Instant::now() < deadline, "the monitor did not come up");
            std::thread::sleep(Duration::from_millis(5));
        }
        lab.configure_tap(tap, addr).expect("configure the tap");
        vm
    }

    fn boot(lab: &NetLab, dir: &Path, tap: &str, mac: Mac, policy: &FirewallPolicy) -> NetVm {
        let args = vec![
            "--kernel".to_string(),
            common::test_guest().display().to_string(),
            "--vcpus".into(),
            "1".into(),
            "--memory-mib".into(),
            "64".into(),
            "--ip6".into(),
            prefix().address(mac).to_string(),
            "--firewall".into(),
            serde_json::to_string(policy).unwrap(),
        ];
        NetVm::spawn(lab, dir, tap, mac, &args)
    }

    fn control(&self) -> ControlClient {
        ControlClient::connect(&self.dir.join("control.sock")).expect("control socket")
    }

    fn set_policy(&self, policy: FirewallPolicy) -> FirewallInfo {
        self.control().firewall(Some(policy)).expect("setFirewall")
    }
}

impl Drop for NetVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the guest answers TCP 7000, and with `udp` UDP 7000 (the
/// policy must allow them).
fn wait_guest(lab: &NetLab, addr: Ipv6Addr, udp: bool) {
    lab.in_client(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match tcp_greeting(addr, 7000, Duration::from_millis(300)) {
                Ok(line) if line == "fastvm 7000\n" => break,
                Ok(other) => panic!("unexpected greeting {other:?}"),
                Err(e) if Instant::now() > deadline => panic!("guest never answered: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        while udp && udp_echo(CLIENT, addr, 7000, Duration::from_millis(300)).is_none() {
            assert!(Instant::now() < deadline, "guest never answered UDP");
        }
    });
}

/// Which of TCP 7000-7002 and UDP 7000-7002 (from `src`) answer.
fn reachable(lab: &NetLab, addr: Ipv6Addr, src: Ipv6Addr) -> (Vec<u16>, Vec<u16>) {
    lab.in_client(move || {
        let tcp = [7000, 7001, 7002]
            .into_iter()
            .filter(|port| {
                tcp_greeting(addr, *port, BLOCKED_WAIT)
                    .is_ok_and(|line| line == format!("fastvm {port}\n"))
            })
            .collect();
        let udp = [7000, 7001, 7002]
            .into_iter()
            .filter(|port| {
                udp_echo(src, addr, *port, BLOCKED_WAIT)
                    .is_some_and(|echo| echo == format!("udp {port} from {src}").into_bytes())
            })
            .collect();
        (tcp, udp)
    })
}

#[test]
fn open_restricted_ndp_and_live_changes() {
    let test = "open_restricted_ndp_and_live_changes";
    if skip(test) {
        return;
    }
    let lab = NetLab::new("a").expect("network namespaces");
    let tmp = tempfile::tempdir().unwrap();
    let mac: Mac = "02:00:00:00:00:01".parse().unwrap();
    let vm = NetVm::boot(&lab, &tmp.path().join("vm"), "fvt0", mac, &open());
    let addr = vm.addr;
    wait_guest(&lab, addr, true);

    // Open: every port, and echo requests.
    assert_eq!(
        reachable(&lab, addr, CLIENT),
        (vec![7000, 7001, 7002], vec![7000, 7001, 7002])
    );
    assert!(lab.in_client(move || ping(addr, Duration::from_secs(2))));

    // Restricted: TCP 7001 from anywhere, UDP 7002 only from CLIENT2.
    let restricted = FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress: vec![
            rule(FirewallProtocol::Tcp, 7001, &[]),
            rule(FirewallProtocol::Udp, 7002, &[&format!("{CLIENT2}/128")]),
        ],
    };
    let info = vm.set_policy(restricted.clone());
    assert_eq!(info.policy, restricted);
    assert_eq!(reachable(&lab, addr, CLIENT), (vec![7001], vec![]));
    assert_eq!(reachable(&lab, addr, CLIENT2), (vec![7001], vec![7002]));
    assert!(
        !lab.in_client(move || ping(addr, BLOCKED_WAIT)),
        "echo requests are not essential ICMPv6"
    );
    let info = vm.control().firewall(None).unwrap();
    assert!(info.rx_dropped > 0, "{info:?}");

    // Neighbor discovery in restricted mode with no rules at all: the host
    // forgets the guest's MAC, then learns it again.
    vm.set_policy(FirewallPolicy::default());
    lab.ip_host(&["-6", "neigh", "flush", "dev", "fvt0"])
        .unwrap();
    let (tcp, udp) = reachable(&lab, addr, CLIENT2);
    assert!(tcp.is_empty() && udp.is_empty());
    let host = lab.host.clone();
    let neigh = std::process::Command::new("ip")
        .args(["-n", &host, "-6", "neigh", "show", "dev", "fvt0"])
        .output()
        .unwrap();
    let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
    let line = neigh
        .lines()
        .find(|l| l.starts_with(&addr.to_string()))
        .unwrap_or_else(|| panic!("no neighbor entry for {addr}: {neigh:?}"));
    assert!(
        line.contains("lladdr 02:00:00:00:00:01") && !line.contains("FAILED"),
        "{line}"
    );

    // A change on the live VM applies to the very next packet: one UDP
    // datagram, no retry.
    assert_eq!(
        lab.in_client(move || udp_echo(CLIENT, addr, 7000, BLOCKED_WAIT)),
        None
    );
    let changed = Instant::now();
    vm.set_policy(FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress: vec![rule(FirewallProtocol::Udp, 7000, &[])],
    });
    let echo = lab.in_client(move || udp_echo(CLIENT, addr, 7000, Duration::from_secs(2)));
    assert!(echo.is_some(), "the first datagram after the change passed");
    eprintln!(
        "{test}: change to first answered datagram {:?}",
        changed.elapsed()
    );
    vm.set_policy(FirewallPolicy::default());
    assert_eq!(
        lab.in_client(move || udp_echo(CLIENT, addr, 7000, BLOCKED_WAIT)),
        None
    );
}

#[test]
fn restored_clone_enforces_the_snapshot_policy() {
    let test = "restored_clone_enforces_the_snapshot_policy";
    if skip(test) {
        return;
    }
    let lab = NetLab::new("b").expect("network namespaces");
    let tmp = tempfile::tempdir().unwrap();
    let mac: Mac = "02:00:00:00:00:11".parse().unwrap();
    let policy = FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress: vec![
            rule(FirewallProtocol::Tcp, 7000, &[]),
            rule(FirewallProtocol::Tcp, 7002, &[]),
        ],
    };
    let vm = NetVm::boot(&lab, &tmp.path().join("vm"), "fvt0", mac, &policy);
    wait_guest(&lab, vm.addr, false);
    let snap = tmp.path().join("snap");
    vm.control()
        .snapshot_into(&vm.dir, &snap, true)
        .expect("snapshot");

    let clone_mac: Mac = "02:00:00:00:00:12".parse().unwrap();
    let clone = NetVm::spawn(
        &lab,
        &tmp.path().join("clone"),
        "fvt1",
        clone_mac,
        &["--restore".to_string(), snap.display().to_string()],
    );
    assert_ne!(clone.addr, vm.addr);
    let info = clone.control().firewall(None).unwrap();
    assert_eq!(info.policy, policy, "the clone inherits the policy");
    assert_eq!(info.mac, clone_mac.to_string());
    wait_guest(&lab, clone.addr, false);
    assert_eq!(
        reachable(&lab, clone.addr, CLIENT),
        (vec![7000, 7002], vec![])
    );
    // The original runs on, with its own address and the same policy.
    assert_eq!(reachable(&lab, vm.addr, CLIENT), (vec![7000, 7002], vec![]));

    // A clone given its own policy gets that one.
    let clone2 = NetVm::spawn(
        &lab,
        &tmp.path().join("clone2"),
        "fvt2",
        "02:00:00:00:00:13".parse().unwrap(),
        &[
            "--restore".to_string(),
            snap.display().to_string(),
            "--firewall".into(),
            serde_json::to_string(&open()).unwrap(),
        ],
    );
    wait_guest(&lab, clone2.addr, true);
    assert_eq!(
        reachable(&lab, clone2.addr, CLIENT),
        (vec![7000, 7001, 7002], vec![7000, 7001, 7002])
    );
}
