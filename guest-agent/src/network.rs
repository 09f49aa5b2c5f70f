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

    /// The `ip` invocations that take `dev` from `now` to this network, in
    /// order. Nothing that is already right is redone: the link goes down
    /// only to change its MAC, and an address already in place stays (a
    /// flush would cut the guest's connections).
    pub fn commands(&self, dev: &str, now: &LinkState) -> Vec<Vec<String>> {
        let mut cmds = Vec::new();
        let v = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let new_mac = self.mac.as_ref().filter(|mac| {
            !now.mac
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(mac))
        });
        if let Some(mac) = new_mac {
            cmds.push(v(&["link", "set", "dev", dev, "down"]));
            cmds.push(v(&["link", "set", "dev", dev, "address", mac]));
        }
        if new_mac.is_some() || !now.up {
            cmds.push(v(&["link", "set", "dev", dev, "up"]));
        }
        let addr = format!("{}/{}", self.addr, self.prefix_len);
        if !now.addrs.contains(&(self.addr, self.prefix_len)) {
            cmds.push(v(&["-6", "addr", "flush", "dev", dev, "scope", "global"]));
            cmds.push(v(&["-6", "addr", "add", &addr, "dev", dev]));
        }
        let gw = self.gateway.to_string();
        cmds.push(v(&[
            "-6", "route", "replace", "default", "via", &gw, "dev", dev,
        ]));
        cmds
    }

    /// Applies it to `dev`. Every step runs even when one before it failed
    /// (a MAC that cannot be set must not leave the link down); the error
    /// names each step that failed.
    pub fn apply(&self, dev: &str) -> Result<(), String> {
        let dad = format!("/proc/sys/net/ipv6/conf/{dev}/accept_dad");
        let _ = std::fs::write(&dad, "0");
        let now = LinkState::read(dev);
        let failed: Vec<String> = self
            .commands(dev, &now)
            .iter()
            .filter_map(|args| {
                run_ip(args)
                    .err()
                    .map(|e| format!("ip {}: {e}", args.join(" ")))
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }
}

/// What a link has now, as far as [`GuestNetwork::commands`] cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    /// Its MAC (`/sys/class/net/DEV/address`).
    pub mac: Option<String>,
    /// Administratively up (`IFF_UP` in `/sys/class/net/DEV/flags`).
    pub up: bool,
    /// Its IPv6 addresses with prefix lengths (`/proc/net/if_inet6`).
    pub addrs: Vec<(Ipv6Addr, u8)>,
}

impl LinkState {
    /// Reads `dev`'s state; what cannot be read counts as unset.
    pub fn read(dev: &str) -> LinkState {
        let sys = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{dev}/{f}")).ok();
        let flags = sys("flags")
            .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        LinkState {
            mac: sys("address").map(|m| m.trim().to_string()),
            up: flags & 1 != 0,
            addrs: parse_if_inet6(
                &std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default(),
                dev,
            ),
        }
    }
}

/// The addresses of `dev` in `/proc/net/if_inet6` text (`ADDR32HEX IFINDEX
/// PREFIXLEN SCOPE FLAGS DEV` per line).
fn parse_if_inet6(text: &str, dev: &str) -> Vec<(Ipv6Addr, u8)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 6 || f[5] != dev || f[0].len() != 32 {
                return None;
            }
            let bits = u128::from_str_radix(f[0], 16).ok()?;
            let len = u8::from_str_radix(f[2], 16).ok()?;
            Some((Ipv6Addr::from(bits), len))
        })
        .collect()
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

    fn joined(net: &GuestNetwork, now: &LinkState) -> Vec<String> {
        net.commands("eth0", now)
            .iter()
            .map(|c| c.join(" "))
            .collect()
    }

    #[test]
    fn a_new_mac_takes_the_link_down_first() {
        let net = GuestNetwork::parse(Some("02:aa:bb:cc:dd:ee"), "fd00::2/128", "fe80::1").unwrap();
        let now = LinkState {
            mac: Some("02:11:22:33:44:55".into()),
            up: true,
            addrs: vec![("fd00::1".parse().unwrap(), 128)],
        };
        assert_eq!(
            joined(&net, &now),
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

    #[test]
    fn nothing_that_is_already_right_is_redone() {
        let net = GuestNetwork::parse(Some("02:AA:bb:cc:dd:ee"), "fd00::2/128", "fe80::1").unwrap();
        let now = LinkState {
            mac: Some("02:aa:bb:cc:dd:ee".into()),
            up: true,
            addrs: vec![("fd00::2".parse().unwrap(), 128)],
        };
        assert_eq!(
            joined(&net, &now),
            ["-6 route replace default via fe80::1 dev eth0"]
        );
        let down = LinkState {
            up: false,
            addrs: vec![],
            ..now
        };
        assert_eq!(
            joined(&net, &down),
            [
                "link set dev eth0 up",
                "-6 addr flush dev eth0 scope global",
                "-6 addr add fd00::2/128 dev eth0",
                "-6 route replace default via fe80::1 dev eth0",
            ]
        );
    }

    #[test]
    fn if_inet6_lines_give_the_device_addresses() {
        let text = "fd000000000000000000000000000002 02 80 00 80     eth0\n\
                    fe800000000000000000000000000001 02 40 20 80     eth0\n\
                    00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(
            parse_if_inet6(text, "eth0"),
            [
                ("fd00::2".parse().unwrap(), 128),
                ("fe80::1".parse().unwrap(), 64)
            ]
        );
        assert!(parse_if_inet6(text, "eth1").is_empty());
    }
}
