//! Store tests against real SQLite files in a temporary directory.

use std::sync::{Arc, Barrier};

use super::*;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("fastvm.db")).unwrap()
}

fn new_vm(org: &str, vcpus: u32, memory_mib: u64, disk_gib: u64) -> NewVm {
    NewVm {
        org_id: org.to_owned(),
        name: "vm".into(),
        machine_name: "c1m2".into(),
        source_name: Some("ubuntu".into()),
        source_snapshot_id: None,
        vcpus,
        memory_mib,
        disk_gib,
        status: VmStatus::Provisioning,
        firewall_json: r#"{"mode":"restricted","ingress":[]}"#.into(),
        public_ipv6: None,
        run_json: r#"{"env":["A=b"]}"#.into(),
    }
}

fn new_snap(org: &str, vm: &str) -> NewSnapshot {
    NewSnapshot {
        org_id: org.to_owned(),
        vm_id: vm.to_owned(),
        name: "snap".into(),
        status: SnapshotStatus::Creating,
        firewall_json: r#"{"mode":"open"}"#.into(),
        vcpus: 1,
        memory_mib: 2048,
        disk_gib: 10,
        run_json: r#"{"user":"app"}"#.into(),
    }
}

fn limits(vcpu: u64, memory_mib: u64, disk_gib: u64, snapshot_count: u64) -> QuotaValues {
    QuotaValues {
        vcpu,
        memory_mib,
        disk_gib,
        snapshot_count,
    }
}

#[test]
fn pragmas_and_migrations_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    {
        let c = s.lock().unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
    }
    drop(s);
    for _ in 0..2 {
        let s = open(&dir);
        let c = s.lock().unwrap();
        let n: i64 = c
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, SCHEMA_VERSION);
    }
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fastvm.db");
    drop(Store::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "INSERT INTO schema_migrations VALUES (?1, 0)",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(c);
    match Store::open(&path) {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let org = s.create_org("default").unwrap();
    let other = s.create_org("second").unwrap();
    let key = s
        .insert_api_key(&org.id, "ab".repeat(32).as_str(), "hlm_abab")
        .unwrap();
    let vm = s
        .create_vm_within_quota(new_vm(&org.id, 1, 2048, 10))
        .unwrap();
    assert!(s.set_vm_monitor(&vm.id, Some(4242)).unwrap());
    let snap = s
        .create_snapshot_within_quota(new_snap(&org.id, &vm.id))
        .unwrap();
    drop(s);
    let s = open(&dir);
    assert_eq!(s.default_org().unwrap().unwrap(), org);
    assert_eq!(s.get_org(&other.id).unwrap().unwrap(), other);
    assert_eq!(
        s.org_for_key_hash(&key.hash).unwrap(),
        Some((org.id.clone(), key.id.clone()))
    );
    let got = s.get_vm(&org.id, &vm.id).unwrap().unwrap();
    assert_eq!(got.monitor_pid, Some(4242));
    assert_eq!(got.vsock_cid, FIRST_VSOCK_CID);
    assert_eq!(got.run_json, r#"{"env":["A=b"]}"#);
    assert_eq!(s.live_vms().unwrap().len(), 1);
    assert_eq!(s.get_snapshot(&org.id, &snap.id).unwrap().unwrap(), snap);
}

#[test]
fn quota_refusal_names_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let org = s.create_org("o").unwrap().id;
    s.set_quota_limits(&org, limits(4, 4096, 100, 1)).unwrap();
    assert_eq!(s.quota_limits(&org).unwrap(), limits(4, 4096, 100, 1));
    s.create_vm_within_quota(new_vm(&org, 2, 2048, 10)).unwrap();
    let cases = [
        (new_vm(&org, 3, 1, 1), "vcpu", 4, 3, 2),
        (new_vm(&org, 1, 4096, 1), "memoryMiB", 4096, 4096, 2048),
        (new_vm(&org, 1, 1, 91), "diskGiB", 100, 91, 10),
    ];
    for (req, name, lim, want, used) in cases {
        match s.create_vm_within_quota(req) {
            Err(StoreError::Quota {
                limit,
                limit_value,
                requested,
                in_use,
            }) => assert_eq!(
                (limit, limit_value, requested, in_use),
                (name, lim, want, used)
            ),
            other => panic!("expected quota error for {name}, got {other:?}"),
        }
    }
    assert_eq!(s.quota_usage(&org).unwrap(), limits(2, 2048, 10, 0));
    let snap = s.create_snapshot_within_quota(new_snap(&org, "x")).unwrap();
    match s.create_snapshot_within_quota(new_snap(&org, "x")) {
        Err(StoreError::Quota { limit, .. }) => assert_eq!(limit, "snapshotCount"),
        other => panic!("expected snapshot quota error, got {other:?}"),
    }
    // Snapshots in error do not count; deleting frees the slot too.
    assert!(
        s.update_snapshot_status(&snap.id, SnapshotStatus::Error)
            .unwrap()
    );
    let snap2 = s.create_snapshot_within_quota(new_snap(&org, "x")).unwrap();
    assert!(s.delete_snapshot(&org, &snap2.id).unwrap());
    assert!(!s.delete_snapshot(&org, &snap2.id).unwrap());
    s.create_snapshot_within_quota(new_snap(&org, "x")).unwrap();
}

#[test]
fn usage_ignores_error_and_deleted_vms() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let org = s.create_org("o").unwrap().id;
    let a = s.create_vm_within_quota(new_vm(&org, 1, 1024, 10)).unwrap();
    let b = s.create_vm_within_quota(new_vm(&org, 2, 2048, 20)).unwrap();
    let c = s.create_vm_within_quota(new_vm(&org, 4, 4096, 40)).unwrap();
    assert!(s.update_vm_status(&b.id, VmStatus::Error).unwrap());
    assert!(s.mark_vm_deleted(&c.id).unwrap());
    assert!(!s.mark_vm_deleted(&c.id).unwrap());
    assert_eq!(s.quota_usage(&org).unwrap(), limits(1, 1024, 10, 0));
    assert!(
        s.update_vm_status_if(&a.id, VmStatus::Provisioning, VmStatus::Running)
            .unwrap()
    );
    assert!(
        !s.update_vm_status_if(&a.id, VmStatus::Provisioning, VmStatus::Stopped)
            .unwrap()
    );
    assert_eq!(
        s.get_vm(&org, &a.id).unwrap().unwrap().status,
        VmStatus::Running
    );
    assert!(s.get_vm(&org, &c.id).unwrap().is_none());
    assert!(s.get_vm_any(&c.id).unwrap().unwrap().deleted_at.is_some());
}

/// Many threads (each with its own connection, so the SQLite write lock and
/// not the in-process mutex is what serialises them) race against one limit.
#[test]
fn concurrent_creates_never_overshoot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fastvm.db");
    let s = Store::open(&path).unwrap();
    let org = s.create_org("o").unwrap().id;
    s.set_quota_limits(&org, limits(7, 1 << 20, 1 << 20, 0))
        .unwrap();
    let barrier = Arc::new(Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let (path, org, barrier) = (path.clone(), org.clone(), barrier.clone());
            std::thread::spawn(move || {
                let s = Store::open(&path).unwrap();
                barrier.wait();
                match s.create_vm_within_quota(new_vm(&org, 2, 512, 1)) {
                    Ok(vm) => Some(vm.vsock_cid),
                    Err(StoreError::Quota { limit: "vcpu", .. }) => None,
                    Err(e) => panic!("thread {i}: {e}"),
                }
            })
        })
        .collect();
    let mut cids: Vec<u32> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(cids.len(), 3, "floor(7 / 2) creates succeed");
    cids.sort_unstable();
    assert_eq!(cids, vec![3, 4, 5]);
    assert_eq!(s.quota_usage(&org).unwrap().vcpu, 6);

    // Same race through one shared Store (the daemon's shape).
    let s = Arc::new(s);
    let org2 = s.create_org("p").unwrap().id;
    s.set_quota_limits(&org2, limits(100, 10_000, 1 << 20, 0))
        .unwrap();
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let (s, org2) = (s.clone(), org2.clone());
            std::thread::spawn(move || s.create_vm_within_quota(new_vm(&org2, 1, 3000, 1)).is_ok())
        })
        .collect();
    let ok = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(ok, 3, "floor(10000 / 3000) creates succeed");
    assert_eq!(s.quota_usage(&org2).unwrap().memory_mib, 9000);
}

#[test]
fn org_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let a = s.create_org("a").unwrap().id;
    let b = s.create_org("b").unwrap().id;
    let vm = s.create_vm_within_quota(new_vm(&a, 1, 1, 1)).unwrap();
    let snap = s
        .create_snapshot_within_quota(new_snap(&a, &vm.id))
        .unwrap();
    assert!(s.get_vm(&b, &vm.id).unwrap().is_none());
    assert!(s.list_vms(&b).unwrap().is_empty());
    assert!(s.get_snapshot(&b, &snap.id).unwrap().is_none());
    assert!(s.list_snapshots(&b).unwrap().is_empty());
    assert!(!s.update_vm_name(&b, &vm.id, "stolen").unwrap());
    assert!(!s.update_vm_firewall(&b, &vm.id, "{}").unwrap());
    assert!(!s.rename_snapshot(&b, &snap.id, "stolen").unwrap());
    assert!(!s.delete_snapshot(&b, &snap.id).unwrap());
    assert!(s.update_vm_name(&a, &vm.id, "renamed").unwrap());
    assert!(
        s.update_vm_firewall(&a, &vm.id, r#"{"mode":"open"}"#)
            .unwrap()
    );
    assert!(s.rename_snapshot(&a, &snap.id, "renamed").unwrap());
    let got = s.get_vm(&a, &vm.id).unwrap().unwrap();
    assert_eq!(
        (got.name.as_str(), got.firewall_json.as_str()),
        ("renamed", r#"{"mode":"open"}"#)
    );
    assert_eq!(s.list_vms(&a).unwrap().len(), 1);
    assert_eq!(s.list_snapshots(&a).unwrap()[0].name, "renamed");
    assert_eq!(s.quota_usage(&b).unwrap(), QuotaValues::default());
    assert!(matches!(
        s.create_vm_within_quota(new_vm("no-such-org", 1, 1, 1)),
        Err(StoreError::NotFound("org"))
    ));
}

#[test]
fn cid_allocation_unique_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let org = s.create_org("o").unwrap().id;
    let vms: Vec<VmRow> = (0..4)
        .map(|_| s.create_vm_within_quota(new_vm(&org, 1, 1, 1)).unwrap())
        .collect();
    let cids: Vec<u32> = vms.iter().map(|v| v.vsock_cid).collect();
    assert_eq!(cids, vec![3, 4, 5, 6]);
    assert!(s.mark_vm_deleted(&vms[1].id).unwrap());
    assert_eq!(
        s.create_vm_within_quota(new_vm(&org, 1, 1, 1))
            .unwrap()
            .vsock_cid,
        4
    );
    assert_eq!(
        s.create_vm_within_quota(new_vm(&org, 1, 1, 1))
            .unwrap()
            .vsock_cid,
        7
    );
    assert!(s.mark_vm_deleted(&vms[0].id).unwrap());
    assert_eq!(
        s.create_vm_within_quota(new_vm(&org, 1, 1, 1))
            .unwrap()
            .vsock_cid,
        3
    );
}

#[test]
fn console_token_one_time_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let org = s.create_org("o").unwrap().id;
    let vm = s.create_vm_within_quota(new_vm(&org, 1, 1, 1)).unwrap();
    s.insert_console_token("t1", &vm.id, &org, 1_000).unwrap();
    s.insert_console_token("t2", &vm.id, &org, 1_000).unwrap();
    let want = Some((vm.id.clone(), org.clone()));
    assert_eq!(s.consume_console_token("t1", 999).unwrap(), want);
    assert_eq!(
        s.consume_console_token("t1", 999).unwrap(),
        None,
        "one-time"
    );
    assert_eq!(
        s.consume_console_token("t2", 1_000).unwrap(),
        None,
        "expired"
    );
    assert_eq!(s.consume_console_token("nope", 0).unwrap(), None);
    assert!(s.insert_console_token("t3", "no-such-vm", &org, 1).is_err());
}

#[test]
fn api_key_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let org = s.create_org("o").unwrap().id;
    let k = s.insert_api_key(&org, "h1", "hlm_1").unwrap();
    assert!(matches!(
        s.insert_api_key(&org, "h1", "hlm_1"),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.insert_api_key("nope", "h2", "hlm_2"),
        Err(StoreError::NotFound("org"))
    ));
    assert_eq!(
        s.org_for_key_hash("h1").unwrap(),
        Some((org.clone(), k.id.clone()))
    );
    assert!(s.revoke_api_key(&k.id).unwrap());
    assert!(!s.revoke_api_key(&k.id).unwrap());
    assert_eq!(s.org_for_key_hash("h1").unwrap(), None);
    assert!(s.lookup_api_key("h1").unwrap().unwrap().revoked);
    assert_eq!(s.lookup_api_key("h2").unwrap(), None);
    assert!(s.list_api_keys(&org).unwrap()[0].revoked_at.is_some());
}

#[test]
fn store_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn a_new_monitor_is_recorded_only_while_the_vm_is_provisioning() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let org = s.create_org("o").unwrap();
    let vm = s
        .create_vm_within_quota(new_vm(&org.id, 1, 2048, 10))
        .unwrap();
    assert!(s.record_new_vm_monitor(&vm.id, 7).unwrap());
    assert_eq!(s.get_vm_any(&vm.id).unwrap().unwrap().monitor_pid, Some(7));
    // A delete that marked it first wins.
    let other = s
        .create_vm_within_quota(new_vm(&org.id, 1, 2048, 10))
        .unwrap();
    assert!(s.update_vm_status(&other.id, VmStatus::Deleting).unwrap());
    assert!(!s.record_new_vm_monitor(&other.id, 8).unwrap());
    assert!(s.mark_vm_deleted(&other.id).unwrap());
    assert!(!s.record_new_vm_monitor(&other.id, 8).unwrap());
    assert_eq!(s.get_vm_any(&other.id).unwrap().unwrap().monitor_pid, None);
}

#[test]
fn vms_booted_from_an_image_across_orgs_live_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let a = s.create_org("a").unwrap().id;
    let b = s.create_org("b").unwrap().id;
    let from = |org: &str, source: Option<&str>, snapshot: Option<&str>| {
        let new = NewVm {
            source_name: source.map(str::to_string),
            source_snapshot_id: snapshot.map(str::to_string),
            ..new_vm(org, 1, 1, 1)
        };
        s.create_vm_within_quota(new).unwrap().id
    };
    assert!(s.vms_booted_from("ubuntu").unwrap().is_empty());
    let first = from(&a, Some("ubuntu"), None);
    let second = from(&b, Some("ubuntu"), None);
    let gone = from(&a, Some("ubuntu"), None);
    assert!(s.mark_vm_deleted(&gone).unwrap());
    // Restored from a snapshot named like the image, another image, none.
    let snap_vm = from(&a, Some("ubuntu"), None);
    let snap = s
        .create_snapshot_within_quota(new_snap(&a, &snap_vm))
        .unwrap();
    from(&a, Some("ubuntu"), Some(&snap.id));
    from(&a, Some("alpine"), None);
    from(&b, None, None);
    let ids: Vec<String> = s
        .vms_booted_from("ubuntu")
        .unwrap()
        .into_iter()
        .map(|vm| vm.id)
        .collect();
    assert_eq!(ids, [first, second, snap_vm.clone()]);
    assert!(s.mark_vm_deleted(&snap_vm).unwrap());
    assert_eq!(s.vms_booted_from("ubuntu").unwrap().len(), 2);
    assert!(s.vms_booted_from("ubunt").unwrap().is_empty());
}
