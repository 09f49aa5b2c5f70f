//! Validation: each good request passes, each bad one fails naming the field.

use super::*;

/// Asserts `r` failed on `field`.
fn fails_on(r: Result<(), ValidationError>, field: &str) {
    match r {
        Err(e) => assert_eq!(e.field, field, "wrong field in {e}"),
        Ok(()) => panic!("expected an error on {field}"),
    }
}

fn create(machine: bool, snapshot: bool) -> CreateVmRequest {
    CreateVmRequest {
        machine_type: machine.then_some(MachineType::C1m2),
        snapshot_id: snapshot.then(|| id(9)),
        ..CreateVmRequest::default()
    }
}

#[test]
fn error_display_names_the_field() {
    let e = validate_update_vm(&UpdateVmRequest {
        name: "x".repeat(65),
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "name: must be at most 64 characters");
    assert_eq!(
        ErrorResponse::from(e).error,
        "name: must be at most 64 characters"
    );
}

#[test]
fn names_count_characters() {
    let ok = |name: String| validate_update_vm(&UpdateVmRequest { name });
    ok("x".repeat(64)).unwrap();
    ok("é".repeat(64)).unwrap(); // 128 bytes, 64 characters
    ok(String::new()).unwrap();
    fails_on(ok("é".repeat(65)), "name");
    let snap = |name: String| validate_update_snapshot(&UpdateSnapshotRequest { name });
    snap("s".repeat(64)).unwrap();
    fails_on(snap("s".repeat(65)), "name");
    let cs = |name: Option<String>| {
        validate_create_snapshot(&CreateSnapshotRequest { vm_id: id(1), name })
    };
    cs(None).unwrap();
    cs(Some("s".repeat(64))).unwrap();
    fails_on(cs(Some("s".repeat(65))), "name");
}

#[test]
fn create_vm() {
    validate_create_vm(&create(true, false)).unwrap();
    validate_create_vm(&create(false, true)).unwrap();
    let both = validate_create_vm(&create(true, true)).unwrap_err();
    assert!(both.field.contains("machineType") && both.field.contains("snapshotId"));
    let neither = validate_create_vm(&create(false, false)).unwrap_err();
    assert!(
        neither.to_string().contains("machineType") && neither.to_string().contains("snapshotId")
    );

    let mut r = create(true, false);
    r.name = Some("n".repeat(65));
    fails_on(validate_create_vm(&r), "name");

    let mut r = create(true, false);
    r.disk_gib = Some(10);
    validate_create_vm(&r).unwrap();
    r.disk_gib = Some(9);
    fails_on(validate_create_vm(&r), "diskGiB");
    r.disk_gib = Some(0);
    fails_on(validate_create_vm(&r), "diskGiB");

    let mut r = create(false, true);
    r.firewall = Some(FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress: vec![
            rule(),
            FirewallRule {
                port_start: 0,
                ..rule()
            },
        ],
    });
    fails_on(validate_create_vm(&r), "firewall.ingress[1].portStart");
}

#[test]
fn disk_grow() {
    check_disk_grow(20, 20).unwrap();
    check_disk_grow(30, 20).unwrap();
    let e = check_disk_grow(19, 20).unwrap_err();
    assert_eq!(e.field, "diskGiB");
    assert!(e.message.contains("20"), "{e}");
}

#[test]
fn firewall_rules() {
    let v = |r: FirewallRule| validate_firewall_rule("", &r);
    v(rule()).unwrap();
    v(FirewallRule {
        port_start: 1,
        port_end: Some(65535),
        ..rule()
    })
    .unwrap();
    v(FirewallRule {
        port_start: 80,
        port_end: Some(80),
        ..rule()
    })
    .unwrap();
    v(FirewallRule {
        port_end: None,
        source_cidrs: None,
        description: None,
        ..rule()
    })
    .unwrap();
    v(FirewallRule {
        source_cidrs: Some(vec![]),
        ..rule()
    })
    .unwrap();
    v(FirewallRule {
        description: Some("d".repeat(256)),
        ..rule()
    })
    .unwrap();

    fails_on(
        v(FirewallRule {
            port_start: 0,
            ..rule()
        }),
        "portStart",
    );
    fails_on(
        v(FirewallRule {
            port_start: 65536,
            port_end: None,
            ..rule()
        }),
        "portStart",
    );
    fails_on(
        v(FirewallRule {
            port_end: Some(0),
            ..rule()
        }),
        "portEnd",
    );
    fails_on(
        v(FirewallRule {
            port_end: Some(65536),
            ..rule()
        }),
        "portEnd",
    );
    fails_on(
        v(FirewallRule {
            port_start: 100,
            port_end: Some(99),
            ..rule()
        }),
        "portEnd",
    );
    fails_on(
        v(FirewallRule {
            description: Some("d".repeat(257)),
            ..rule()
        }),
        "description",
    );
    let cidrs = |c: &[&str]| FirewallRule {
        source_cidrs: Some(c.iter().map(|s| (*s).into()).collect()),
        ..rule()
    };
    v(cidrs(&["::/0", "2001:db8::1"])).unwrap();
    let e = v(cidrs(&["::/0", "192.0.2.0/24"])).unwrap_err();
    assert_eq!(e.field, "sourceCidrs[1]");
    assert!(e.message.contains("IPv4"), "{e}");
    fails_on(v(cidrs(&["2001:db8::/200"])), "sourceCidrs[0]");
    fails_on(v(cidrs(&["nonsense"])), "sourceCidrs[0]");
}

#[test]
fn firewall_bodies() {
    let bad = FirewallRule {
        port_end: Some(1),
        ..rule()
    };
    validate_firewall_policy(&FirewallPolicy::default()).unwrap();
    let p = FirewallPolicy {
        mode: FirewallMode::Open,
        ingress: vec![rule(), rule(), bad.clone()],
    };
    fails_on(validate_firewall_policy(&p), "ingress[2].portEnd");

    validate_patch_vm_firewall(&PatchVmFirewallRequest::default()).unwrap();
    let patch = PatchVmFirewallRequest {
        mode: None,
        ingress: Some(vec![bad]),
    };
    fails_on(validate_patch_vm_firewall(&patch), "ingress[0].portEnd");
}

#[test]
fn firewall_sizes_are_capped() {
    let with = |rules: usize, cidrs: usize| FirewallPolicy {
        mode: FirewallMode::Restricted,
        ingress: vec![
            FirewallRule {
                source_cidrs: Some(vec!["2001:db8::/32".into(); cidrs]),
                ..rule()
            };
            rules
        ],
    };
    validate_firewall_policy(&with(MAX_FIREWALL_RULES, 0)).unwrap();
    fails_on(
        validate_firewall_policy(&with(MAX_FIREWALL_RULES + 1, 0)),
        "ingress",
    );
    validate_firewall_policy(&with(1, MAX_RULE_CIDRS)).unwrap();
    fails_on(
        validate_firewall_policy(&with(1, MAX_RULE_CIDRS + 1)),
        "ingress[0].sourceCidrs",
    );
    let per_rule = MAX_RULE_CIDRS;
    let rules = MAX_POLICY_CIDRS / per_rule;
    validate_firewall_policy(&with(rules, per_rule)).unwrap();
    fails_on(
        validate_firewall_policy(&with(rules + 1, per_rule)),
        "ingress",
    );
    // A patch's rules and a createVM's policy are held to the same caps.
    let patch = PatchVmFirewallRequest {
        mode: None,
        ingress: Some(with(MAX_FIREWALL_RULES + 1, 0).ingress),
    };
    fails_on(validate_patch_vm_firewall(&patch), "ingress");
}

#[test]
fn exec() {
    let v = |command: &[&str], timeout_sec: Option<u64>| {
        validate_exec_vm(&ExecVmRequest {
            command: command.iter().map(|s| (*s).into()).collect(),
            timeout_sec,
        })
    };
    v(&["true"], None).unwrap();
    v(&["echo", ""], Some(1)).unwrap();
    v(&["sleep", "1"], Some(MAX_EXEC_TIMEOUT_SEC)).unwrap();
    fails_on(v(&[], None), "command");
    // An empty program is the guest's to refuse (exit 127), as the schema
    // allows it.
    v(&["", "x"], None).unwrap();
    fails_on(v(&["true"], Some(0)), "timeoutSec");
    // Longer than the most an exec runs is taken as that most.
    v(&["true"], Some(MAX_EXEC_TIMEOUT_SEC + 1)).unwrap();
    let long = ExecVmRequest {
        command: vec!["true".into()],
        timeout_sec: Some(u64::MAX),
    };
    assert_eq!(
        long.to_agent_request(30).timeout_ms,
        Some(MAX_EXEC_TIMEOUT_SEC * 1000)
    );
}

#[test]
fn uuids() {
    let u = parse_uuid("id", "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b").unwrap();
    assert_eq!(u.to_string(), "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b");
    let e = parse_uuid("id", "not-a-uuid").unwrap_err();
    assert_eq!(e.to_string(), "id: must be a UUID");
    fails_on(parse_uuid("id", "").map(drop), "id");
    // Body ids are typed: a bad one fails to deserialize.
    assert!(serde_json::from_value::<CreateSnapshotRequest>(json!({"vmId": "nope"})).is_err());
}
