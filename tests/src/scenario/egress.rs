//! The scenario's egress step: a network namespace in L1 stands for the
//! internet (a veth link to L1, documentation addresses, a web server that
//! answers with the address it sees), and a Linux VM with a `restricted`
//! firewall and no rule fetches from it with `wget`, over IPv4 through
//! `fastvmd`'s NAT and over IPv6. Connections the guest did not open are
//! dropped; opening the firewall lets the same connection in, so the drop
//! was the filter's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use super::Daemon;
use super::vm::sh;

/// The namespace standing for the internet, and its link to L1.
const NETNS: &str = "internet";
const L1_LINK: &str = "inet0";
const NETNS_LINK: &str = "inet1";
/// L1's and the server's addresses on that link (RFC 5737 / RFC 3849).
const L1_V4: &str = "198.51.100.1";
const SERVER_V4: &str = "198.51.100.2";
const L1_V6: &str = "2001:db8:1::1";
const SERVER_V6: &str = "2001:db8:1::2";
const PORT: u16 = 8088;
/// L1's IPv6 forwarding switch.
const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
/// A guest port with a listener (the firewall step leaves `nc` on it).
const GUEST_PORT: u16 = 8000;

/// Runs iproute2's `ip` (L1 carries it for this).
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespace and its link, removed when dropped.
struct Internet;

impl Internet {
    fn new() -> Result<Internet, String> {
        // IPv6 egress needs forwarding, which the daemon leaves to the
        // operator (README, Networking); IPv4's it turns on itself.
        std::fs::write(IPV6_FORWARDING, "1").map_err(|e| format!("{IPV6_FORWARDING}: {e}"))?;
        ip(&["netns", "add", NETNS])?;
        let lab = Internet;
        ip(&[
            "link", "add", L1_LINK, "type", "veth", "peer", "name", NETNS_LINK, "netns", NETNS,
        ])?;
        ip(&["addr", "add", &format!("{L1_V4}/24"), "dev", L1_LINK])?;
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{L1_V6}/64"),
            "dev",
            L1_LINK,
            "nodad",
        ])?;
        ip(&["link", "set", L1_LINK, "up"])?;
        let n = ["-n", NETNS];
        let inside = |args: &[&str]| ip(&[&n[..], args].concat());
        inside(&["addr", "add", &format!("{SERVER_V4}/24"), "dev", NETNS_LINK])?;
        inside(&[
            "-6",
            "addr",
            "add",
            &format!("{SERVER_V6}/64"),
            "dev",
            NETNS_LINK,
            "nodad",
        ])?;
        inside(&["link", "set", NETNS_LINK, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        // Routes back to the VMs, so that what keeps the server out of a
        // VM is its firewall, not a missing route.
        inside(&["route", "add", "default", "via", L1_V4])?;
        inside(&["-6", "route", "add", "default", "via", L1_V6])?;
        Ok(lab)
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        std::thread::spawn(move || -> Result<T, String> {
            enter()?;
            Ok(f())
        })
        .join()
        .map_err(|_| "the namespace's thread panicked".to_string())?
    }

    /// Serves `hello from the internet to PEER` on both families from a
    /// thread that lives as long as L1.
    fn serve(&self) -> Result<(), String> {
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let listener = enter()
                .and_then(|()| {
                    TcpListener::bind(SocketAddr::from(([0u16; 8], PORT)))
                        .map_err(|e| format!("bind [::]:{PORT}: {e}"))
                })
                .map_err(|e| ready_tx.send(Err(e)));
            let Ok(listener) = listener else { return };
            let _ = ready_tx.send(Ok(()));
            for conn in listener.incoming().flatten() {
                answer(conn);
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the server did not start".to_string())?
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", L1_LINK]);
        let _ = ip(&["netns", "del", NETNS]);
    }
}

/// Moves this thread into the namespace.
fn enter() -> Result<(), String> {
    let ns = std::fs::File::open(format!("/run/netns/{NETNS}"))
        .map_err(|e| format!("/run/netns/{NETNS}: {e}"))?;
    // SAFETY: setns on an open namespace fd changes only this thread's
    // network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// One HTTP/1.0 answer naming the peer's address.
fn answer(conn: TcpStream) {
    let peer = conn
        .peer_addr()
        .map(|a| a.ip().to_canonical().to_string())
        .unwrap_or_default();
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut head = String::new();
    let mut reader = BufReader::new(read_half.take(16 << 10));
    while reader.read_line(&mut head).is_ok_and(|n| n > 2) {}
    let body = format!("hello from the internet to {peer}\n");
    let _ = write!(
        &conn,
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// What a connection from the internet to `addr:port` reads, or why none.
fn reach_guest(lab: &Internet, addr: IpAddr) -> Result<String, String> {
    lab.run(move || {
        let sock = SocketAddr::from((addr, GUEST_PORT));
        let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(3))
            .map_err(|e| format!("connect {sock}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        let _ = (&mut stream).take(4096).read_to_string(&mut text);
        Ok(text)
    })?
}

fn set_firewall(d: &Daemon, vm: &str, policy: serde_json::Value) -> Result<(), String> {
    d.expect("PUT", &format!("/v1/vms/{vm}/firewall"), Some(&policy), 200)
        .map(|_| ())
}

/// The egress step on VM `vm` (IPv6 `v6`, IPv4 `v4`), which serves
/// [`GUEST_PORT`] and whose firewall is `open` on entry and on success.
pub fn egress(d: &Daemon, vm: &str, v6: &str, v4: &str) -> Result<(), String> {
    let v6: IpAddr = v6.parse().map_err(|e| format!("{v6}: {e}"))?;
    let v4: IpAddr = v4.parse().map_err(|e| format!("{v4}: {e}"))?;
    let lab = Internet::new()?;
    lab.serve()?;
    set_firewall(d, vm, json!({"mode": "restricted", "ingress": []}))?;
    for (server, seen_as) in [
        (SERVER_V4.to_string(), L1_V4),
        (format!("[{SERVER_V6}]"), L1_V6),
    ] {
        let page = sh(
            d,
            vm,
            // `timeout`, not wget's `-T`: Debian's busybox 1.35 wget
            // crashes on `-T`.
            &format!("timeout 30 wget -q -O - http://{server}:{PORT}/ 2>&1; echo \"wget: $?\""),
        )?;
        let want = format!("hello from the internet to {seen_as}\n");
        if !page.contains(&want) {
            return Err(format!(
                "wget from {server} in restricted mode: {page:?}, wanted {want:?} \
                 (the guest's address masqueraded to L1's)"
            ));
        }
        println!(
            "info: egress to {server}: {}",
            page.lines().next().unwrap_or("")
        );
    }
    for addr in [v6, v4] {
        if let Ok(text) = reach_guest(&lab, addr) {
            return Err(format!(
                "the internet reached {addr}:{GUEST_PORT} in restricted mode: {text:?}"
            ));
        }
    }
    set_firewall(d, vm, json!({"mode": "open"}))?;
    let text = reach_guest(&lab, v6)?;
    if text.trim() != format!("port-{GUEST_PORT}") {
        return Err(format!(
            "open mode: [{v6}]:{GUEST_PORT} from the internet read {text:?}"
        ));
    }
    Ok(())
}
