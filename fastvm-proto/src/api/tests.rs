//! Tests of the API types: spec field names, round trips, enums, timestamps,
//! patch application and CIDR parsing. Validation has its own file.

mod validation;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;
use crate::agent::ExecResult;

/// Serializes `v`, checks its keys are exactly `keys`, and that it reads back equal.
fn check<T>(v: &T, keys: &[&str])
where
    T: Serialize + DeserializeOwned + PartialEq + core::fmt::Debug,
{
    let json = serde_json::to_value(v).unwrap();
    let mut got: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = keys.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "field names of {json}");
    let back: T = serde_json::from_value(json).unwrap();
    assert_eq!(&back, v);
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn rule() -> FirewallRule {
    FirewallRule {
        protocol: FirewallProtocol::Tcp,
        port_start: 22,
        port_end: Some(23),
        source_cidrs: Some(vec!["2001:db8::/32".into()]),
        description: Some("ssh".into()),
    }
}

fn vm() -> VmInstance {
    VmInstance {
        id: id(1),
        name: "dev".into(),
        org_id: "org".into(),
        machine_name: "c1m2".into(),
        source_name: Some("base".into()),
        firewall: FirewallPolicy {
            mode: FirewallMode::Restricted,
            ingress: vec![rule()],
        },
        cpu: 1,
        memory_mib: 2048,
        disk_gib: 10,
        public_ipv6: Some("fd00::2".into()),
        status: VmStatus::Running,
        created_at: "2026-01-02T03:04:05Z".into(),
        deleted_at: Some("2026-01-02T04:04:05Z".into()),
    }
}

#[test]
fn vm_instance_names() {
    check(
        &vm(),
        &[
            "id",
            "name",
            "orgId",
            "machineName",
            "sourceName",
            "firewall",
            "cpu",
            "memoryMiB",
            "diskGiB",
            "publicIpv6",
            "status",
            "createdAt",
            "deletedAt",
        ],
    );
}

#[test]
fn vm_instance_minimal_keeps_nullable_deleted_at() {
    let mut v = vm();
    v.source_name = None;
    v.public_ipv6 = None;
    v.deleted_at = None;
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["deletedAt"], Value::Null);
    assert!(json.get("sourceName").is_none());
    assert!(json.get("publicIpv6").is_none());
    check(
        &v,
        &[
            "id",
            "name",
            "orgId",
            "machineName",
            "firewall",
            "cpu",
            "memoryMiB",
            "diskGiB",
            "status",
            "createdAt",
            "deletedAt",
        ],
    );
    // Absent `deletedAt` and `firewall` read as null / the default policy.
    let mut json = json;
    let obj = json.as_object_mut().unwrap();
    obj.remove("deletedAt");
    obj.remove("firewall");
    let back: VmInstance = serde_json::from_value(json).unwrap();
    assert_eq!(back.deleted_at, None);
    assert_eq!(back.firewall, FirewallPolicy::default());
}

#[test]
fn snapshot_object_names() {
    let s = SnapshotObject {
        id: id(2),
        name: "snap".into(),
        org_id: "org".into(),
        vm_id: id(1),
        firewall: FirewallPolicy::default(),
        status: SnapshotStatus::Ready,
        created_at: now_rfc3339(),
    };
    check(
        &s,
        &[
            "id",
            "name",
            "orgId",
            "vmId",
            "firewall",
            "status",
            "createdAt",
        ],
    );
}

#[test]
fn request_names() {
    let full = CreateVmRequest {
        name: Some("a".into()),
        machine_type: Some(MachineType::C2m4),
        snapshot_id: Some(id(3)),
        disk_gib: Some(20),
        firewall: Some(FirewallPolicy::default()),
        image: Some("python".into()),
    };
    // `image` is this daemon's extension of the contract.
    check(
        &full,
        &[
            "name",
            "machineType",
            "snapshotId",
            "diskGiB",
            "firewall",
            "image",
        ],
    );
    check(&CreateVmRequest::default(), &[]);
    check(
        &CreateSnapshotRequest {
            vm_id: id(1),
            name: Some("s".into()),
        },
        &["vmId", "name"],
    );
    check(&UpdateVmRequest { name: "x".into() }, &["name"]);
    check(&UpdateSnapshotRequest { name: "x".into() }, &["name"]);
    check(
        &ExecVmRequest {
            command: vec!["ls".into()],
            timeout_sec: Some(5),
        },
        &["command", "timeoutSec"],
    );
    check(
        &PatchVmFirewallRequest {
            mode: Some(FirewallMode::Open),
            ingress: Some(vec![]),
        },
        &["mode", "ingress"],
    );
    check(&PatchVmFirewallRequest::default(), &[]);
}

#[test]
fn firewall_names() {
    check(
        &rule(),
        &[
            "protocol",
            "portStart",
            "portEnd",
            "sourceCidrs",
            "description",
        ],
    );
    let bare = FirewallRule {
        protocol: FirewallProtocol::Udp,
        port_start: 53,
        port_end: None,
        source_cidrs: None,
        description: None,
    };
    check(&bare, &["protocol", "portStart"]);
    assert_eq!(bare.port_range(), (53, 53));
    check(&FirewallPolicy::default(), &["mode", "ingress"]);
    let p: FirewallPolicy = serde_json::from_value(json!({"mode": "open"})).unwrap();
    assert_eq!(p.mode, FirewallMode::Open);
    assert!(p.ingress.is_empty());
    assert!(
        serde_json::from_value::<FirewallRule>(json!({"protocol": "icmp", "portStart": 1}))
            .is_err()
    );
}

#[test]
fn response_names() {
    let r = ExecVmResponse {
        exit_code: -9,
        stdout: "o".into(),
        stderr: "e".into(),
        timed_out: true,
        stdout_truncated: true,
        stderr_truncated: false,
        duration_ms: 12,
    };
    check(
        &r,
        &[
            "exitCode",
            "stdout",
            "stderr",
            "timedOut",
            "stdoutTruncated",
            "stderrTruncated",
            "durationMs",
        ],
    );
    // The agent's ExecResult is the same JSON plus its exec id, both ways.
    let agent: ExecResult = r.clone().into();
    let mut agent_json = serde_json::to_value(&agent).unwrap();
    assert_eq!(
        agent_json.as_object_mut().unwrap().remove("id"),
        Some(0.into())
    );
    assert_eq!(agent_json, serde_json::to_value(&r).unwrap());
    assert_eq!(ExecVmResponse::from(agent), r);

    check(
        &ConsoleTokenResponse {
            token: "t".into(),
            expires_in_sec: 60,
            websocket_path: "/v1/vms/x/console/ws".into(),
        },
        &["token", "expiresInSec", "websocketPath"],
    );
    check(
        &DeleteResponse {
            id: "x".into(),
            deleted: true,
        },
        &["id", "deleted"],
    );
    let q = OrgQuotaValues {
        vcpu: 8,
        memory_mib: 16384,
        disk_gib: 100,
        snapshot_count: 5,
    };
    check(&q, &["vcpu", "memoryMiB", "diskGiB", "snapshotCount"]);
    check(
        &OrgQuotaUsage {
            org_id: "o".into(),
            limits: q,
            usage: OrgQuotaValues::default(),
        },
        &["orgId", "limits", "usage"],
    );
    check(&ErrorResponse::new("boom"), &["error"]);
}

#[test]
fn enums_use_spec_spellings() {
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(json!(VmStatus::ALL)),
        ["provisioning", "running", "stopped", "deleting", "error"]
    );
    assert_eq!(
        names(json!(SnapshotStatus::ALL)),
        ["creating", "ready", "error"]
    );
    assert_eq!(
        names(json!(MachineType::ALL)),
        ["c1m2", "c2m4", "c4m8", "c8m16"]
    );
    assert_eq!(names(json!(FirewallProtocol::ALL)), ["tcp", "udp"]);
    assert_eq!(names(json!(FirewallMode::ALL)), ["open", "restricted"]);
    for s in VmStatus::ALL {
        assert_eq!(s.as_str().parse::<VmStatus>().unwrap(), *s);
        assert_eq!(s.to_string(), s.as_str());
    }
    let err = "Running".parse::<VmStatus>().unwrap_err();
    assert_eq!(err.to_string(), "unknown VmStatus: \"Running\"");
    assert!(serde_json::from_value::<MachineType>(json!("c16m32")).is_err());
}

#[test]
fn machine_types() {
    let sizes: Vec<(u32, u64, u64)> = MachineType::ALL
        .iter()
        .map(|m| (m.vcpus(), m.memory_mib(), m.default_disk_gib()))
        .collect();
    assert_eq!(
        sizes,
        [(1, 2048, 10), (2, 4096, 10), (4, 8192, 10), (8, 16384, 10)]
    );
}

#[test]
fn unknown_request_fields_are_ignored() {
    let r: UpdateVmRequest = serde_json::from_value(json!({"name": "a", "color": "red"})).unwrap();
    assert_eq!(r.name, "a");
}

#[test]
fn timestamps() {
    let now = now_rfc3339();
    assert!(now.ends_with('Z'), "{now}");
    let t = parse_rfc3339(&now).unwrap();
    assert_eq!(format_rfc3339(t).unwrap(), now);
    let t = parse_rfc3339("2026-01-02T03:04:05+02:00").unwrap();
    assert_eq!(format_rfc3339(t).unwrap(), "2026-01-02T01:04:05Z");
    assert!(parse_rfc3339("yesterday").is_err());
}

#[test]
fn patch_firewall() {
    let current = FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress: vec![rule()],
    };
    assert_eq!(
        PatchVmFirewallRequest::default().apply_to(&current),
        current
    );
    let open = PatchVmFirewallRequest {
        mode: Some(FirewallMode::Open),
        ingress: None,
    };
    let p = open.apply_to(&current);
    assert_eq!(p.mode, FirewallMode::Open);
    assert_eq!(p.ingress, current.ingress);
    let clear = PatchVmFirewallRequest {
        mode: None,
        ingress: Some(vec![]),
    };
    let p = clear.apply_to(&current);
    assert_eq!(p.mode, FirewallMode::Restricted);
    assert!(p.ingress.is_empty());
}

#[test]
fn exec_to_agent() {
    let r = ExecVmRequest {
        command: vec!["echo".into(), "hi".into()],
        timeout_sec: None,
    };
    let a = r.to_agent_request(30);
    assert_eq!(a.argv, ["echo", "hi"]);
    assert_eq!(a.timeout_ms, Some(30_000));
    let r = ExecVmRequest {
        timeout_sec: Some(2),
        ..r
    };
    assert_eq!(r.to_agent_request(30).timeout_ms, Some(2_000));
}

#[test]
fn cidr_parsing() {
    let ok = |s: &str| s.parse::<Ipv6Cidr>().unwrap().to_string();
    assert_eq!(ok("::/0"), "::/0");
    assert_eq!(ok("2001:db8::/32"), "2001:db8::/32");
    assert_eq!(ok("2001:db8::1/64"), "2001:db8::/64");
    assert_eq!(ok("2001:db8::1"), "2001:db8::1/128");
    assert_eq!(ok("2001:db8::1/128"), "2001:db8::1/128");
    assert_eq!(ok("::ffff:10.0.0.0/104"), "::ffff:10.0.0.0/104");
    assert_eq!(ok("2001:DB8::/33"), "2001:db8::/33");

    let bad = |s: &str| s.parse::<Ipv6Cidr>().unwrap_err();
    assert_eq!(bad("10.0.0.0/8"), CidrError::Ipv4);
    assert_eq!(bad("10.0.0.1"), CidrError::Ipv4);
    assert_eq!(bad(""), CidrError::BadAddress);
    assert_eq!(bad("/64"), CidrError::BadAddress);
    assert_eq!(bad("2001:db8::g/64"), CidrError::BadAddress);
    assert_eq!(bad("[2001:db8::]/64"), CidrError::BadAddress);
    assert_eq!(bad("fe80::1%eth0/64"), CidrError::BadAddress);
    assert_eq!(bad(" 2001:db8::/32"), CidrError::BadAddress);
    assert_eq!(bad("2001:db8::/129"), CidrError::BadPrefix);
    assert_eq!(bad("2001:db8::/"), CidrError::BadPrefix);
    assert_eq!(bad("2001:db8::/+4"), CidrError::BadPrefix);
    assert_eq!(bad("2001:db8::/-1"), CidrError::BadPrefix);
    assert_eq!(bad("2001:db8::/0064"), CidrError::BadPrefix);
    assert_eq!(bad("2001:db8::/64/64"), CidrError::BadPrefix);
    assert_eq!(bad("2001:db8::/ 64"), CidrError::BadPrefix);

    let net: Ipv6Cidr = "2001:db8:1::/48".parse().unwrap();
    assert!(net.contains("2001:db8:1:ffff::1".parse().unwrap()));
    assert!(!net.contains("2001:db8:2::1".parse().unwrap()));
    assert!(Ipv6Cidr::ANY.contains("::1".parse().unwrap()));
    let host: Ipv6Cidr = "::1".parse().unwrap();
    assert!(host.contains("::1".parse().unwrap()));
    assert!(!host.contains("::2".parse().unwrap()));
    assert_eq!(Ipv6Cidr::new("::".parse().unwrap(), 129), None);
}

#[test]
fn rule_source_nets() {
    let mut r = rule();
    assert_eq!(r.source_nets().unwrap(), ["2001:db8::/32".parse().unwrap()]);
    r.source_cidrs = None;
    assert_eq!(r.source_nets().unwrap(), [Ipv6Cidr::ANY]);
    r.source_cidrs = Some(vec![]);
    assert_eq!(r.source_nets().unwrap(), [Ipv6Cidr::ANY]);
    r.source_cidrs = Some(vec!["::/0".into(), "1.2.3.4/32".into()]);
    assert_eq!(r.source_nets().unwrap_err(), CidrError::Ipv4);
}

#[test]
fn request_fields_may_be_absent_but_not_null() {
    fn refused<T: serde::de::DeserializeOwned>(json: &str) {
        assert!(serde_json::from_str::<T>(json).is_err(), "{json}: accepted");
    }
    let rule = r#"{"protocol":"tcp","portStart":22}"#;
    serde_json::from_str::<FirewallRule>(rule).unwrap();
    for field in ["portEnd", "sourceCidrs", "description"] {
        refused::<FirewallRule>(&format!(
            r#"{{"protocol":"tcp","portStart":22,"{field}":null}}"#
        ));
    }
    serde_json::from_str::<PatchVmFirewallRequest>("{}").unwrap();
    for field in ["mode", "ingress"] {
        refused::<PatchVmFirewallRequest>(&format!(r#"{{"{field}":null}}"#));
    }
    serde_json::from_str::<CreateVmRequest>(r#"{"machineType":"c1m2"}"#).unwrap();
    for field in ["name", "snapshotId", "diskGiB", "firewall"] {
        refused::<CreateVmRequest>(&format!(r#"{{"machineType":"c1m2","{field}":null}}"#));
    }
    refused::<CreateVmRequest>(r#"{"machineType":null}"#);
    let vm = "00000000-0000-4000-8000-000000000001";
    refused::<CreateSnapshotRequest>(&format!(r#"{{"vmId":"{vm}","name":null}}"#));
    refused::<ExecVmRequest>(r#"{"command":["true"],"timeoutSec":null}"#);
}
