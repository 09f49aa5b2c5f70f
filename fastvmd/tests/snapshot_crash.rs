//! Snapshots and crashes of the daemon: whatever point a `kill -9` cut a
//! create or a delete at, the restarted daemon has every snapshot `ready`
//! or `error` (never `creating`) and no files that no row owns; two
//! snapshots of one VM at once are a 409, never an `error` row.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::can_run_vms;
use common::daemon::Daemon;
use serde_json::{Value, json};

fn snapshots(d: &Daemon) -> Vec<Value> {
    let (status, list) = d.call("GET", "/v1/snapshots", None);
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

fn status_of(d: &Daemon, id: &str) -> Option<String> {
    snapshots(d)
        .iter()
        .find(|s| s["id"] == id)
        .map(|s| s["status"].as_str().unwrap().to_string())
}

/// Sets a snapshot row's status while the daemon is down.
fn set_status(data_dir: &Path, id: &str, status: &str) {
    let store = fastvmd::store::Store::open(data_dir.join("fastvm.db")).unwrap();
    assert!(
        store
            .update_snapshot_status(id, status.parse().unwrap())
            .unwrap()
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn running_vm(d: &Daemon) -> String {
    let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    assert_eq!(status, 201, "{vm}");
    vm["id"].as_str().unwrap().to_string()
}

fn snapshot(d: &Daemon, vm: &str) -> String {
    let (status, snap) = d.call("POST", "/v1/snapshots", Some(&json!({"vmId": vm})));
    assert_eq!(status, 201, "{snap}");
    snap["id"].as_str().unwrap().to_string()
}

#[test]
fn every_crash_point_of_a_snapshot_is_finished_at_start() {
    if !can_run_vms("every_crash_point_of_a_snapshot_is_finished_at_start") {
        return;
    }
    let mut d = Daemon::start();
    let vm = running_vm(&d);
    let whole = snapshot(&d, &vm);
    let in_vm_dir = snapshot(&d, &vm);
    let lost = snapshot(&d, &vm);
    let deleting = snapshot(&d, &vm);
    d.kill9();

    let snaps = d.data_dir.join("snapshots");
    let vm_dir = d.data_dir.join("vms").join(&vm);
    // Killed after adopting, before the row said ready.
    set_status(&d.data_dir, &whole, "creating");
    // Killed while the monitor wrote it: committed in the VM directory.
    std::fs::rename(snaps.join(&in_vm_dir), vm_dir.join(&in_vm_dir)).unwrap();
    set_status(&d.data_dir, &in_vm_dir, "creating");
    // Killed before anything was written.
    std::fs::remove_dir_all(snaps.join(&lost)).unwrap();
    set_status(&d.data_dir, &lost, "creating");
    // Killed inside a delete, after its files were moved aside.
    std::fs::rename(
        snaps.join(&deleting),
        snaps.join(format!(".{deleting}.deleting")),
    )
    .unwrap();
    // Leftovers no row owns.
    std::fs::create_dir(snaps.join(".0ddba11.tmp-4242")).unwrap();
    std::fs::create_dir(snaps.join("0ddba11-0000-4000-8000-000000000000")).unwrap();
    std::fs::create_dir(vm_dir.join("5ca1ab1e-0000-4000-8000-000000000000")).unwrap();

    let started = Instant::now();
    d.restart();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(status_of(&d, &whole).as_deref(), Some("ready"));
    assert_eq!(status_of(&d, &in_vm_dir).as_deref(), Some("ready"));
    assert_eq!(status_of(&d, &lost).as_deref(), Some("error"));
    assert_eq!(status_of(&d, &deleting), None, "the delete was finished");
    let mut want = vec![whole.clone(), in_vm_dir.clone()];
    want.sort();
    assert_eq!(entries(&snaps), want, "only ready snapshots' files remain");
    assert!(
        entries(&vm_dir)
            .iter()
            .all(|n| !n.contains('-') || n == "firewall.json"),
        "{:?}",
        entries(&vm_dir)
    );
    // The recovered ones restore.
    for id in [&whole, &in_vm_dir] {
        let (status, clone) = d.call("POST", "/v1/vms", Some(&json!({"snapshotId": id})));
        assert_eq!(status, 201, "{clone}");
    }
}

#[test]
fn a_daemon_killed_during_create_snapshot_leaves_no_snapshot_creating() {
    if !can_run_vms("a_daemon_killed_during_create_snapshot_leaves_no_snapshot_creating") {
        return;
    }
    let mut d = Daemon::start();
    let vm = running_vm(&d);
    for delay_ms in [0u64, 2, 5, 10, 20, 40] {
        let base = d.base.clone();
        let key = d.key.clone();
        let vm_id = vm.clone();
        let request = std::thread::spawn(move || {
            ureq::post(format!("{base}/v1/snapshots"))
                .header("X-API-Key", &key)
                .header("Content-Type", "application/json")
                .send(json!({"vmId": vm_id}).to_string())
                .map(|r| r.status().as_u16())
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        d.kill9();
        let _ = request.join();
        d.restart();
        for snap in snapshots(&d) {
            assert_ne!(
                snap["status"], "creating",
                "after a kill at {delay_ms} ms: {snap}"
            );
        }
    }
}

#[test]
fn two_snapshots_of_one_vm_at_once_are_a_conflict_not_an_error() {
    if !can_run_vms("two_snapshots_of_one_vm_at_once_are_a_conflict_not_an_error") {
        return;
    }
    let d = Daemon::start();
    let vm = running_vm(&d);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    d.call("POST", "/v1/snapshots", Some(&json!({"vmId": vm})))
                        .0
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(statuses.contains(&201), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    let made = statuses.iter().filter(|s| **s == 201).count();
    let rows = snapshots(&d);
    assert_eq!(
        rows.len(),
        made,
        "a row per snapshot made, none for a conflict"
    );
    assert!(rows.iter().all(|r| r["status"] == "ready"), "{rows:?}");
}
