//! Egress end to end: a daemon in a network namespace of its own (its
//! taps, forwarding and nftables table stay there) whose test-guest VM
//! fetches a page from a server in a second namespace standing for the
//! internet, over IPv4 through the daemon's NAT and over IPv6, with the
//! VM's firewall `restricted` and no rule: only answers to what the guest
//! opened come in.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::daemon::Daemon;
use common::netns::{self, NetLab};
use common::socket::Conn;
use serde_json::json;

/// The internet's end of the link, and the host's.
const SERVER4: &str = "198.51.100.2";
const HOST4: &str = "198.51.100.1";
const SERVER6: &str = "fd00:aaaa::2";
const PORT: u16 = 8080;

/// Serves `hello from the internet to PEER` on both families in the client
/// namespace, on a thread that lives as long as the test.
fn serve_the_internet(lab: &NetLab) {
    let path = format!("/var/run/netns/{}", lab.client);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("the client namespace");
        // SAFETY: setns on an open netns fd changes only this thread's namespace.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns");
        let listener =
            TcpListener::bind(SocketAddr::from(([0u16; 8], PORT))).expect("bind [::]:8080");
        ready_tx.send(()).unwrap();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let peer = conn
                .peer_addr()
                .map(|a| a.ip().to_canonical().to_string())
                .unwrap_or_default();
            let mut head = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
            let body = format!("hello from the internet to {peer}\n");
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server listens");
}

/// Runs `command` in VM `id` over the socket (the daemon's HTTP port is in
/// its namespace).
fn exec(c: &mut Conn, id: &str, command: &[&str]) -> serde_json::Value {
    let (status, out) = c.call(json!({"op": "execVM", "params": {"id": id},
        "body": {"command": command, "timeoutSec": 30}}));
    assert_eq!(status, 200, "{out}");
    out
}

#[test]
fn a_restricted_vm_reaches_the_internet_over_ipv4_nat_and_ipv6() {
    if !common::can_run_vms("a_restricted_vm_reaches_the_internet_over_ipv4_nat_and_ipv6") {
        return;
    }
    if let Some(why) = netns::unavailable() {
        println!("SKIP a_restricted_vm_reaches_the_internet: {why}");
        return;
    }
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIP a_restricted_vm_reaches_the_internet: no nft (apt install nftables)");
        return;
    }
    let lab = NetLab::new("e").expect("network namespaces");
    lab.ip_host(&["addr", "add", &format!("{HOST4}/24"), "dev", "vh"])
        .unwrap();
    let client = [
        "-n",
        lab.client.as_str(),
        "addr",
        "add",
        &format!("{SERVER4}/24"),
        "dev",
        "vc",
    ];
    let out = std::process::Command::new("ip")
        .args(client)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serve_the_internet(&lab);

    let d = Daemon::start_via(
        &["ip", "netns", "exec", &lab.host],
        &["--ipv4-range", "100.64.0.0/10"],
        true,
    );
    let mut c = Conn::open(&d, Duration::from_secs(60));
    let (status, vm) = c.call(json!({"op": "createVM", "body":
        {"machineType": "c1m2", "firewall": {"mode": "restricted", "ingress": []}}}));
    assert_eq!(status, 201, "{vm}");
    let id = vm["id"].as_str().unwrap();

    let v4 = exec(&mut c, id, &["net-fetch", SERVER4, &PORT.to_string()]);
    let page = v4["stdout"].as_str().unwrap();
    assert!(
        page.contains(&format!("hello from the internet to {HOST4}")),
        "over IPv4 (NATed to the host's address): {v4}; daemon log: {}",
        std::fs::read_to_string(d.stderr_path()).unwrap_or_default()
    );
    let v6 = exec(&mut c, id, &["net-fetch", SERVER6, &PORT.to_string()]);
    assert!(
        v6["stdout"]
            .as_str()
            .unwrap()
            .contains("hello from the internet to "),
        "over IPv6: {v6}"
    );
    // Nothing the guest did not open comes in: the server cannot reach
    // the guest's own services.
    let vm_addr: std::net::Ipv6Addr = vm["publicIpv6"].as_str().unwrap().parse().unwrap();
    let reached = lab.in_client(move || netns::tcp_greeting(vm_addr, 7000, Duration::from_secs(2)));
    assert!(
        reached.is_err(),
        "an unsolicited connection got in: {reached:?}"
    );
    // The monitor counts what it tracked and let in as answers.
    let control = d.data_dir.join("vms").join(id).join("control.sock");
    let counters = fastvmd::supervisor::control_client::ControlClient::connect(&control)
        .and_then(|mut c| c.firewall(None))
        .expect("the firewall's counters");
    assert!(
        counters.flows_live >= 2 && counters.rx_replies > 0 && counters.rx_dropped > 0,
        "{counters:?}"
    );

    // A clone takes its own IPv4 address (sent in setNetwork; its command
    // line is the original's): with the original gone, its fetch comes back
    // to it, which it could not at the original's address.
    let (status, snap) = c.call(json!({"op": "createSnapshot", "body": {"vmId": id}}));
    assert_eq!(status, 201, "{snap}");
    let (status, clone) = c.call(json!({"op": "createVM", "body":
        {"snapshotId": snap["id"]}}));
    assert_eq!(status, 201, "{clone}");
    let (status, gone) = c.call(json!({"op": "deleteVM", "params": {"id": id}}));
    assert_eq!(status, 200, "{gone}");
    let clone_id = clone["id"].as_str().unwrap();
    let v4 = exec(&mut c, clone_id, &["net-fetch", SERVER4, &PORT.to_string()]);
    assert!(
        v4["stdout"]
            .as_str()
            .unwrap()
            .contains(&format!("hello from the internet to {HOST4}")),
        "a clone over IPv4: {v4}; daemon log: {}",
        std::fs::read_to_string(d.stderr_path()).unwrap_or_default()
    );
    let log = std::fs::read_to_string(d.stderr_path()).unwrap_or_default();
    assert!(!log.contains("refused the network"), "{log}");
}
