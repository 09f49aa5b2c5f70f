//! Every monitor the daemon starts, booted or restored, is jailed: not
//! root, no capability (bounding set included), no_new_privs, its own mount
//! and network namespaces, a root that shows only its VM directory, no
//! descriptor of the daemon's, and snapshots that leave the jail owned by
//! root.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::can_run_vms;
use common::daemon::Daemon;
use serde_json::json;

/// `Key:` lines of one task's status.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks every thread of `pid`; returns its uid.
fn assert_confined(pid: u32) -> u32 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("monitor tasks");
    let mut uid = None;
    let mut seen = 0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let name = status_field(&status, "Name:");
        let uids: Vec<u32> = status_field(&status, "Uid:")
            .split(' ')
            .map(|u| u.parse().unwrap())
            .collect();
        assert!(uids.iter().all(|u| *u != 0), "{name}: uids {uids:?}");
        assert!(uids.iter().all(|u| *u == uids[0]), "{name}: uids {uids:?}");
        let gids = status_field(&status, "Gid:");
        assert!(!gids.split(' ').any(|g| g == "0"), "{name}: gids {gids}");
        assert_eq!(status_field(&status, "Groups:"), "", "{name}");
        for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(
                status_field(&status, cap),
                "0000000000000000",
                "{name}: {cap}"
            );
        }
        assert_eq!(status_field(&status, "NoNewPrivs:"), "1", "{name}");
        uid = Some(uids[0]);
        seen += 1;
    }
    assert!(seen >= 3, "only {seen} threads");
    uid.unwrap()
}

fn ns(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

/// The monitor's `/` is its VM directory: only the VM's own files.
fn assert_root_is_the_vm_dir(pid: u32, vm_dir: &Path) {
    let root = format!("/proc/{pid}/root");
    let names: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let allowed = [
        "console.sock",
        "control.sock",
        "vsock.sock",
        "monitor.lock",
        "monitor.log",
        "disk",
        "exit.json",
    ];
    for name in &names {
        assert!(allowed.contains(&name.as_str()), "{root}: {names:?}");
    }
    assert!(names.contains("control.sock"), "{names:?}");
    let inside = std::fs::metadata(format!("{root}/.")).unwrap();
    let dir = std::fs::metadata(vm_dir).unwrap();
    assert_eq!((inside.dev(), inside.ino()), (dir.dev(), dir.ino()));
}

/// Every descriptor is the VM's: nothing of the data dir but its own files.
fn assert_descriptors_are_the_vms(pid: u32, data_dir: &Path) {
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let shown = target.display().to_string();
        for secret in ["fastvm.db", "jwt.secret", "api.sock"] {
            assert!(
                !shown.contains(secret),
                "fd {:?} -> {shown}",
                fd.file_name()
            );
        }
        if target.is_absolute() && target.starts_with(data_dir) {
            assert!(
                target.starts_with(data_dir.join("vms"))
                    || target.starts_with(data_dir.join("snapshots"))
                    || target.starts_with(data_dir.join("images")),
                "fd -> {shown}"
            );
        }
    }
}

#[test]
fn booted_and_restored_monitors_are_jailed() {
    if !can_run_vms("booted_and_restored_monitors_are_jailed") {
        return;
    }
    let d = Daemon::start();
    let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    assert_eq!(status, 201, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let (status, snap) = d.call("POST", "/v1/snapshots", Some(&json!({"vmId": id})));
    assert_eq!(status, 201, "{snap}");
    let snap_id = snap["id"].as_str().unwrap();
    let (status, clone) = d.call("POST", "/v1/vms", Some(&json!({"snapshotId": snap_id})));
    assert_eq!(status, 201, "{clone}");
    let clone_id = clone["id"].as_str().unwrap().to_string();

    let daemon_pid = d.child.as_ref().unwrap().id().to_string();
    let mut uids = BTreeSet::new();
    for vm_id in [&id, &clone_id] {
        let vm_dir = d.data_dir.join("vms").join(vm_id);
        let pid = fastvmd::supervisor::monitor_pid(&vm_dir).expect("a live monitor");
        uids.insert(assert_confined(pid));
        for kind in ["mnt", "net"] {
            assert_ne!(ns(&pid.to_string(), kind), ns(&daemon_pid, kind), "{kind}");
        }
        assert_root_is_the_vm_dir(pid, &vm_dir);
        assert_descriptors_are_the_vms(pid, &d.data_dir);
        // Still a working VM.
        let (status, out) = d.call(
            "POST",
            &format!("/v1/vms/{vm_id}/exec"),
            Some(&json!({"command": ["echo", "jailed"]})),
        );
        assert_eq!(status, 200, "{out}");
        assert!(out["stdout"].as_str().unwrap().contains("jailed"), "{out}");
    }
    assert_eq!(uids.len(), 2, "each VM has its own uid: {uids:?}");

    // The snapshot left the jail as root's, private, with nothing else.
    let snap_dir = d.data_dir.join("snapshots").join(snap_id);
    for entry in std::fs::read_dir(&snap_dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        assert!(meta.file_type().is_file(), "{:?}", entry.path());
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{:?}", entry.path());
        assert_eq!(meta.mode() & 0o077, 0, "{:?}", entry.path());
    }
    let vm_dir = d.data_dir.join("vms").join(&id);
    let leftovers: Vec<_> = std::fs::read_dir(&vm_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(snap_id))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
