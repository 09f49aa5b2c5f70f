//! Egress through the host: the kernel forwards for VMs and nftables NATs
//! them. One table per data directory (`inet fastvm_<hash>`), replaced
//! whole at each start, with a postrouting chain that masquerades the VMs'
//! IPv4 range (and their IPv6 /64 when it is a ULA, which nothing outside
//! routes back) on every interface that is not a VM's tap. VMs outlive the
//! daemon, so the table does too while any runs; [`Nat::remove`] takes it
//! away.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::net::addr::Prefix;
use crate::vmm::net::addr4::Ipv4Range;

/// The nftables table of one data directory.
#[derive(Debug, Clone)]
pub struct Nat {
    table: String,
}

/// The table's name: `fastvm_` and 8 hex digits of the data dir's path.
fn table_name(data_dir: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("fastvm_{hex}")
}

/// The ruleset for `range` and `prefix`.
fn ruleset(table: &str, range: Ipv4Range, prefix: Option<Prefix>) -> String {
    let ula = prefix.filter(|p| p.to_string().starts_with("fd") || p.to_string().starts_with("fc"));
    let ipv6 = ula
        .map(|p| format!("    ip6 saddr {p} oifname != \"fvm*\" masquerade\n"))
        .unwrap_or_default();
    format!(
        "table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {range} oifname != \"fvm*\" masquerade\n{ipv6}  }}\n}}\n"
    )
}

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (the nftables package): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Turns a forwarding sysctl on; false when it cannot be.
fn forwarding_on(path: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1")
        || std::fs::write(path, "1").is_ok()
}

/// What egress setup did, in words for the daemon to say at start.
#[derive(Debug)]
pub struct Setup {
    pub nat: Option<Nat>,
    pub notes: Vec<String>,
}

/// Sets up egress for VMs with IPv4 addresses from `range` and IPv6 from
/// `prefix`: IPv4 forwarding on, the NAT table in place. What could not be
/// done is in the notes (VMs then run without that egress).
pub fn set_up(data_dir: &Path, range: Ipv4Range, prefix: Option<Prefix>) -> Setup {
    let mut notes = Vec::new();
    if !forwarding_on("/proc/sys/net/ipv4/ip_forward") {
        notes.push("cannot turn IPv4 forwarding on (net.ipv4.ip_forward): no IPv4 egress".into());
    }
    let table = table_name(data_dir);
    let nat = match nft(&ruleset(&table, range, prefix)) {
        Ok(()) => Some(Nat { table }),
        Err(e) => {
            notes.push(format!("no NAT for VMs ({e}): no IPv4 egress"));
            None
        }
    };
    Setup { nat, notes }
}

impl Nat {
    /// Removes the table (no VM runs any more).
    pub fn remove(&self) -> Result<(), String> {
        nft(&format!("delete table inet {}\n", self.table))
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_masquerades_the_range_and_a_ula_prefix_off_the_taps() {
        let range: Ipv4Range = "100.64.0.0/10".parse().unwrap();
        let ula: Prefix = "fd12:3456:789a:1::/64".parse().unwrap();
        let rules = ruleset("fastvm_x", range, Some(ula));
        assert!(
            rules.contains("ip saddr 100.64.0.0/10 oifname != \"fvm*\" masquerade"),
            "{rules}"
        );
        assert!(rules.contains("ip6 saddr fd12:3456:789a:1::/64"), "{rules}");
        assert!(rules.starts_with("table inet fastvm_x\ndelete table inet fastvm_x\n"));
        let global: Prefix = "2001:db8:1:2::/64".parse().unwrap();
        assert!(!ruleset("t", range, Some(global)).contains("ip6 saddr"));
        assert_ne!(table_name(Path::new("/a")), table_name(Path::new("/b")));
        assert_eq!(table_name(Path::new("/a")).len(), "fastvm_".len() + 8);
    }
}
