//! The host side of VM networking, run by the daemon: whether this process
//! may create taps, and configuring a VM's tap once its monitor opened it
//! (link up, `fe80::1` as the guest's gateway, a /128 route to the VM,
//! through the interface ioctls in [`super::tap_config`]); they vanish with
//! the tap when the monitor ends.

use std::net::Ipv6Addr;

use super::addr::GATEWAY;

/// Why VMs cannot get a NIC here, or `None` when they can.
pub fn tap_unavailable() -> Option<String> {
    if !has_cap_net_admin() {
        return Some("no CAP_NET_ADMIN".into());
    }
    let ipv6_off = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .map_or(true, |v| v.trim() == "1");
    if ipv6_off {
        return Some("IPv6 is disabled on this host".into());
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/net/tun: {e}")),
    }
}

/// Whether CAP_NET_ADMIN (bit 12) is in this process's effective set.
fn has_cap_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

/// Whether IPv6 forwarding is on (VMs are reachable from other hosts only then).
pub fn ipv6_forwarding() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding").is_ok_and(|v| v.trim() == "1")
}

/// Brings tap `name` up with the gateway address and routes `vm` to it;
/// with `ipv4` (the VM's address and gateway) the same for IPv4.
pub fn configure_tap(
    name: &str,
    vm: Ipv6Addr,
    ipv4: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
) -> Result<(), String> {
    super::tap_config::configure(name, GATEWAY, vm)?;
    match ipv4 {
        Some((vm4, gateway4)) => super::tap_config4::configure(name, gateway4, vm4),
        None => Ok(()),
    }
}

/// Waits (at most `limit`) until tap `name` is gone. The kernel takes a
/// tap down after its last descriptor closes, not always before the
/// monitor that held it is reaped; a VM's delete answers once it is gone.
pub fn wait_tap_gone(name: &str, limit: std::time::Duration) -> bool {
    let path = std::path::Path::new("/sys/class/net").join(name);
    let deadline = std::time::Instant::now() + limit;
    while path.exists() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    true
}
