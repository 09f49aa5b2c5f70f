//! The guest's IPv6 network on `eth0`: at boot from the kernel command line
//! (`fastvm.ip6=ADDR/LEN fastvm.gw6=GW`, written by the daemon), and again
//! when the host sends `SetNetwork` (a clone restored from a snapshot has a
//! new MAC and address). Applied with `ip` (busybox's applet in the image);
//! duplicate address detection is turned off first, as the address is the
//! host's to give and the link has no other guest on it.

use std::io::Read;
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};

use crate::reaper;

/// The NIC the daemon's virtio-net device shows up as.
pub const DEVICE: &str = "eth0";

/// What the guest's network should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNetwork {
    /// New MAC for the NIC; `None` keeps the one the device reported.
    pub mac: Option<String>,
    /// Address and prefix length.
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
    /// Default gateway (link-local on the host's tap).
    pub gateway: Ipv6Addr,
}

impl GuestNetwork {
    /// Checks the host's values: an address with a prefix length of at most
    /// 128, a gateway address, a MAC of six hex bytes.
    pub fn parse(mac: Option<&str>, ip6: &str, gw6: &str) -> Result<GuestNetwork, String> {
        let (addr, len) = ip6.split_once('/').unwrap_or((ip6, "128"));
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("ip6: {ip6:?} is not an IPv6 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 128)
            .ok_or_else(|| format!("ip6: {ip6:?} has a bad prefix length"))?;
        let gateway: Ipv6Addr = gw6
            .parse()
            .map_err(|_| format!("gw6: {gw6:?} is not an IPv6 address"))?;
        if let Some(mac) = mac {
            let bytes: Vec<&str> = mac.split(':').collect();
            let ok = bytes.len() == 6
                && bytes
                    .iter()
                    .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                return Err(format!("mac: {mac:?} is not a MAC address"));
            }
        }
        Ok(GuestNetwork {
            mac: mac.map(str::to_owned),
            addr,
            prefix_len,
            gateway,
        })
    }

    /// The network given on a kernel command line, if any.
    pub fn from_cmdline(cmdline: &str) -> Option<Result<GuestNetwork, String>> {
        let value = |key: &str| {
            cmdline
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        };
        let ip6 = value("fastvm.ip6")?;
        let gw6 = value("fastvm.gw6").unwrap_or("fe80::1");
        Some(GuestNetwork::parse(None, ip6, gw6))
    }

    /// The `ip` invocations that put this network on `dev`, in order.
    pub fn commands(&self, dev: &str) -> Vec<Vec<String>> {
        let mut cmds = Vec::new();
        let v = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        if let Some(mac) = &self.mac {
            cmds.push(v(&["link", "set", "dev", dev, "down"]));
            cmds.push(v(&["link", "set", "dev", dev, "address", mac]));
        }
        cmds.push(v(&["link", "set", "dev", dev, "up"]));
        cmds.push(v(&["-6", "addr", "flush", "dev", dev, "scope", "global"]));
        let addr = format!("{}/{}", self.addr, self.prefix_len);
        cmds.push(v(&["-6", "addr", "add", &addr, "dev", dev]));
        let gw = self.gateway.to_string();
        cmds.push(v(&[
            "-6", "route", "replace", "default", "via", &gw, "dev", dev,
        ]));
        cmds
    }

    /// Applies it to `dev`; the first failing step is the error.
    pub fn apply(&self, dev: &str) -> Result<(), String> {
        let dad = format!("/proc/sys/net/ipv6/conf/{dev}/accept_dad");
        let _ = std::fs::write(&dad, "0");
        for args in self.commands(dev) {
            run_ip(&args).map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        }
        Ok(())
    }
}

/// Runs `ip ARGS` through the reaper (as PID 1 it waits for every child);
/// the error is what `ip` printed.
fn run_ip(args: &[String]) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (mut child, status) = reaper::spawn(&mut cmd).map_err(|e| e.to_string())?;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    match status.recv() {
        Ok(s) if s.exit_code() == 0 => Ok(()),
        Ok(s) => Err(format!("exit {}: {}", s.exit_code(), stderr.trim())),
        Err(_) => Err("its exit status was lost".into()),
    }
}

/// At boot: applies the network on the kernel command line, if any
/// (failures are printed; the guest still boots).
pub fn configure_from_cmdline() {
    let Ok(cmdline) = std::fs::read_to_string("/proc/cmdline") else {
        return;
    };
    match GuestNetwork::from_cmdline(&cmdline) {
        None => {}
        Some(Err(e)) => eprintln!("guest-agent: network on the command line: {e}"),
        Some(Ok(net)) => {
            if let Err(e) = net.apply(DEVICE) {
                eprintln!("guest-agent: network: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_values_are_read_and_checked() {
        let net = GuestNetwork::from_cmdline(
            "console=ttyS0 fastvm.ip6=fd00:1::ff:fe00:1/128 fastvm.gw6=fe80::1 quiet",
        )
        .unwrap()
        .unwrap();
        assert_eq!(net.addr, "fd00:1::ff:fe00:1".parse::<Ipv6Addr>().unwrap());
        assert_eq!((net.prefix_len, net.mac.as_deref()), (128, None));
        assert!(GuestNetwork::from_cmdline("console=ttyS0").is_none());
        assert!(
            GuestNetwork::from_cmdline("fastvm.ip6=10.0.0.1/24")
                .unwrap()
                .is_err()
        );
        assert!(GuestNetwork::parse(None, "fd00::1/129", "fe80::1").is_err());
        assert!(GuestNetwork::parse(Some("02:00:00:00:00"), "fd00::1", "fe80::1").is_err());
        assert!(GuestNetwork::parse(Some("02:00:00:00:00:zz"), "fd00::1", "fe80::1").is_err());
    }

    #[test]
    fn a_new_mac_takes_the_link_down_first() {
        let net = GuestNetwork::parse(Some("02:aa:bb:cc:dd:ee"), "fd00::2/128", "fe80::1").unwrap();
        let cmds: Vec<String> = net.commands("eth0").iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            cmds,
            [
                "link set dev eth0 down",
                "link set dev eth0 address 02:aa:bb:cc:dd:ee",
                "link set dev eth0 up",
                "-6 addr flush dev eth0 scope global",
                "-6 addr add fd00::2/128 dev eth0",
                "-6 route replace default via fe80::1 dev eth0",
            ]
        );
    }
}
