//! Every monitor the daemon starts, booted or restored, is jailed: not
//! root, no capability (bounding set included), no_new_privs, a seccomp
//! filter on every thread, its own mount
//! and network namespaces, a root that shows only its VM directory, no
//! descriptor of the daemon's, and snapshots that leave the jail owned by
//! root.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::can_run_vms;
use common::daemon::Daemon;
use fastvmd::supervisor::cgroups::detect;
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
        assert_eq!(status_field(&status, "Seccomp:"), "2", "{name}: no filter");
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
        "firewall.json",
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

/// Where the v1 hierarchy of `controller` (or, `None`, the v2 one) is
/// mounted, read as the daemon reads it.
fn cgroup_mount(controller: Option<&str>) -> Option<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    detect::mounts(&mountinfo)
        .into_iter()
        .find(|m| match controller {
            Some(c) => !m.v2 && m.controllers.iter().any(|x| x == c),
            None => m.v2,
        })
        .map(|m| m.point)
}

/// The monitor's cgroup is its VM's, with the memory, pids and CPU limits
/// of its size; `None` when this host gives VMs no cgroups.
fn cgroup_limits(pid: u32, vm_id: &str) -> Option<(u64, u64, String)> {
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path_of = |controller: Option<&str>| {
        detect::own_path(&own, controller).map(|p| p.trim_start_matches('/').to_string())
    };
    let read = |dir: std::path::PathBuf, file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
            .trim()
            .to_string()
    };
    if let (Some(memory), Some(pids), Some(cpu)) = (
        cgroup_mount(Some("memory")),
        cgroup_mount(Some("pids")),
        cgroup_mount(Some("cpu")),
    ) {
        let mem_path = path_of(Some("memory"))?;
        if !(mem_path.contains("fastvm/") && mem_path.ends_with(vm_id)) {
            return None;
        }
        let cpu_dir = cpu.join(path_of(Some("cpu"))?);
        return Some((
            read(memory.join(&mem_path), "memory.limit_in_bytes")
                .parse()
                .unwrap(),
            read(pids.join(path_of(Some("pids"))?), "pids.max")
                .parse()
                .unwrap(),
            format!(
                "{} {}",
                read(cpu_dir.clone(), "cpu.cfs_quota_us"),
                read(cpu_dir, "cpu.cfs_period_us")
            ),
        ));
    }
    let unified = cgroup_mount(None)?;
    let dir = unified.join(path_of(None)?);
    let shown = dir.display().to_string();
    if !(shown.contains("/fastvm/") && shown.ends_with(vm_id)) {
        return None;
    }
    Some((
        read(dir.clone(), "memory.max").parse().unwrap(),
        read(dir.clone(), "pids.max").parse().unwrap(),
        read(dir, "cpu.max"),
    ))
}

#[test]
fn booted_and_restored_monitors_are_jailed() {
    if !can_run_vms("booted_and_restored_monitors_are_jailed") {
        return;
    }
    let d = Daemon::start_via(&[], &[], true);
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
        // The daemon runs the lean monitor program, not itself.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(
            exe.file_name().and_then(|n| n.to_str()),
            Some(fastvmd::vmm::MONITOR_PROGRAM),
            "{}",
            exe.display()
        );
        uids.insert(assert_confined(pid));
        for kind in ["mnt", "net"] {
            assert_ne!(ns(&pid.to_string(), kind), ns(&daemon_pid, kind), "{kind}");
        }
        assert_root_is_the_vm_dir(pid, &vm_dir);
        match cgroup_limits(pid, vm_id) {
            // c1m2: one vCPU, 2048 MiB.
            Some((memory, pids, cpu)) => {
                use fastvmd::supervisor::cgroups::{EXTRA_PIDS, MONITOR_OVERHEAD_MIB};
                assert_eq!(memory, (2048 + MONITOR_OVERHEAD_MIB) << 20);
                assert_eq!(pids, 1 + EXTRA_PIDS);
                assert_eq!(cpu, "100000 100000");
            }
            None => {
                let stderr = std::fs::read_to_string(d.stderr_path()).unwrap_or_default();
                assert!(
                    stderr.contains("cgroups unavailable"),
                    "no VM cgroup and no word why"
                );
                eprintln!("SKIP cgroup limits: this host gives VMs no cgroups");
            }
        }
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

#[test]
fn a_monitor_cannot_point_the_daemon_at_another_vms_sockets() {
    if !can_run_vms("a_monitor_cannot_point_the_daemon_at_another_vms_sockets") {
        return;
    }
    let d = Daemon::start();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
        assert_eq!(status, 201, "{vm}");
        ids.push(vm["id"].as_str().unwrap().to_string());
    }
    let (a, b) = (
        d.data_dir.join("vms").join(&ids[0]),
        d.data_dir.join("vms").join(&ids[1]),
    );
    // What a compromised monitor of A could do in its own directory.
    for name in ["control.sock", "vsock.sock", "console.sock"] {
        std::fs::remove_file(a.join(name)).unwrap();
        std::os::unix::fs::symlink(b.join(name), a.join(name)).unwrap();
    }
    let (status, out) = d.call(
        "POST",
        &format!("/v1/vms/{}/exec", ids[0]),
        Some(&json!({"command": ["echo", "reached"]})),
    );
    assert_ne!(status, 200, "exec in A ran in B: {out}");
    assert!(!out.to_string().contains("reached"), "{out}");
    let (status, snap) = d.call("POST", "/v1/snapshots", Some(&json!({"vmId": ids[0]})));
    assert_ne!(status, 201, "a snapshot of A was taken through B: {snap}");
    // B is untouched and answers as itself.
    let (status, out) = d.call(
        "POST",
        &format!("/v1/vms/{}/exec", ids[1]),
        Some(&json!({"command": ["echo", "b"]})),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "b\n");
}
