//! Quotas hold under concurrent creates, and a daemon killed with SIGKILL in
//! the middle of creates comes back with a store that matches the monitors.

mod common;

use std::collections::HashSet;

use common::can_run_vms;
use common::daemon::Daemon;
use common::schema::assert_schema;
use fastvmd::store::{QuotaValues, Store};
use serde_json::json;

fn set_limits(d: &Daemon, vcpu: u64) {
    let store = Store::open(d.data_dir.join("fastvm.db")).unwrap();
    let org = store.default_org().unwrap().unwrap();
    store
        .set_quota_limits(
            &org.id,
            QuotaValues {
                vcpu,
                memory_mib: 1 << 30,
                disk_gib: 1 << 20,
                snapshot_count: 50,
            },
        )
        .unwrap();
}

#[test]
fn twenty_concurrent_creates_never_overshoot_the_quota() {
    if !can_run_vms("twenty_concurrent_creates_never_overshoot_the_quota") {
        return;
    }
    let d = Daemon::start();
    set_limits(&d, 3);
    let results: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| s.spawn(|| d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == 403).collect();
    assert_eq!(created, 3, "{results:?}");
    assert_eq!(refused.len(), 17, "{results:?}");
    for (_, body) in refused {
        assert_schema("ErrorResponse", body);
        assert!(body["error"].as_str().unwrap().contains("vcpu"), "{body}");
    }
    let (_, quotas) = d.call("GET", "/v1/org/quotas", None);
    assert_eq!(quotas["usage"]["vcpu"], 3);
    assert_eq!(d.monitor_pids().len(), 3);
}

#[test]
fn kill9_during_creates_then_restart_matches_reality() {
    if !can_run_vms("kill9_during_creates_then_restart_matches_reality") {
        return;
    }
    let mut d = Daemon::start();
    let (_, first) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    let first_id = first["id"].as_str().unwrap().to_string();
    // Creates in flight while the daemon is killed.
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                let _ = d.try_call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
        // SIGKILL through the pid: `kill9` needs `&mut`.
        let pid = d.child.as_ref().unwrap().id();
        // SAFETY: kills the daemon this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    d.restart();
    let (status, vms) = d.call("GET", "/v1/vms", None);
    assert_eq!(status, 200);
    let vms = vms.as_array().unwrap().clone();
    assert!(
        vms.iter().any(|v| v["id"] == first_id.as_str()),
        "acknowledged VM kept"
    );
    let live: HashSet<u32> = d.monitor_pids().into_iter().collect();
    let running: Vec<&serde_json::Value> =
        vms.iter().filter(|v| v["status"] == "running").collect();
    // Every running VM has its monitor, and there is no monitor without a VM.
    assert_eq!(running.len(), live.len(), "{vms:?} vs monitors {live:?}");
    for vm in &vms {
        assert_schema("VMInstance", vm);
        let status = vm["status"].as_str().unwrap();
        assert!(
            ["running", "error", "provisioning", "stopped"].contains(&status),
            "{vm}"
        );
        if status == "running" {
            let id = vm["id"].as_str().unwrap();
            let (s, out) = d.call(
                "POST",
                &format!("/v1/vms/{id}/exec"),
                Some(&json!({"command": ["echo", "alive"]})),
            );
            assert_eq!((s, &out["stdout"]), (200, &json!("alive\n")), "{vm}");
        }
    }
}
