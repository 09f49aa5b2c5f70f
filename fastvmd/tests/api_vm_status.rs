//! A VM's status tells the truth: a create goes `provisioning -> running`
//! with no `error` on the way, even when its monitor is slow to start; a
//! guest that powers off ends `stopped`; a monitor killed by a signal ends
//! `error`. Watched over the socket's `watch` and read over HTTP.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::can_run_vms;
use common::daemon::Daemon;
use fastvmd::vmm::exit::EXIT_POWER_OFF;
use fastvmd::vmm::exit_record::ExitRecord;
use serde_json::{Value, json};

/// How long the wrapped monitor waits before it starts: longer than the
/// daemon's 500 ms watch interval, so the watcher sees each new VM before
/// its monitor exists.
const SLOW_START: &str = "1.2";

/// A `watch` subscription on the daemon's socket.
struct Watch {
    reader: BufReader<UnixStream>,
}

impl Watch {
    fn open(d: &Daemon) -> Watch {
        let mut s = UnixStream::connect(d.data_dir.join("fastvmd.sock")).expect("fastvmd.sock");
        s.write_all(b"{\"id\":1,\"op\":\"watch\"}\n").unwrap();
        let mut reader = BufReader::new(s);
        let first = Self::read_line(&mut reader, Duration::from_secs(10)).expect("watch answer");
        assert_eq!(first["status"], 200, "{first}");
        Watch { reader }
    }

    fn read_line(reader: &mut BufReader<UnixStream>, wait: Duration) -> Option<Value> {
        reader.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 => Some(serde_json::from_str(&line).expect("a JSON frame")),
            _ => None,
        }
    }

    /// The next VM event's data, or `None` when none comes within `wait`.
    fn next_vm(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let event = Self::read_line(&mut self.reader, left.max(Duration::from_millis(1)))?;
            if event["event"] == "vm" {
                return Some(event["data"].clone());
            }
        }
    }
}

/// A monitor that sleeps [`SLOW_START`] seconds before it starts.
fn slow_monitor(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("slow-vmm");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nsleep {SLOW_START}\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_fastvm-vmm")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn creates_never_pass_through_error() {
    if !can_run_vms("creates_never_pass_through_error") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = slow_monitor(tmp.path());
    let d = Daemon::start_with(&["--monitor-exe", exe.to_str().unwrap()]);
    let mut watch = Watch::open(&d);
    let bodies = [
        json!({"machineType": "c1m2", "diskGiB": 200}),
        json!({"machineType": "c1m2"}),
        json!({"machineType": "c2m4", "diskGiB": 50}),
    ];
    let created: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|body| s.spawn(|| d.call("POST", "/v1/vms", Some(body))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ids = HashSet::new();
    for (status, vm) in &created {
        assert_eq!(*status, 201, "{vm}");
        assert_eq!(vm["status"], "running", "{vm}");
        ids.insert(vm["id"].as_str().unwrap().to_string());
    }
    // Every status each VM was reported in, in order, until all run.
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let all_running = |seen: &HashMap<String, Vec<String>>| {
        ids.iter().all(|id| {
            seen.get(id)
                .and_then(|s| s.last())
                .is_some_and(|s| s == "running")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all_running(&seen) && Instant::now() < deadline {
        let Some(vm) = watch.next_vm(Duration::from_secs(5)) else {
            break;
        };
        let id = vm["id"].as_str().unwrap_or_default().to_string();
        let status = vm["status"].as_str().unwrap_or_default().to_string();
        seen.entry(id).or_default().push(status);
    }
    // A watcher tick more, for an `error` that would come late.
    while let Some(vm) = watch.next_vm(Duration::from_millis(1200)) {
        let id = vm["id"].as_str().unwrap_or_default().to_string();
        let status = vm["status"].as_str().unwrap_or_default().to_string();
        seen.entry(id).or_default().push(status);
    }
    for id in &ids {
        let statuses = seen.get(id).cloned().unwrap_or_default();
        assert!(
            !statuses.iter().any(|s| s == "error"),
            "VM {id} was reported in error while it was created: {statuses:?}"
        );
        assert_eq!(
            statuses.first().map(String::as_str),
            Some("provisioning"),
            "VM {id}: {statuses:?}"
        );
        assert_eq!(
            statuses.last().map(String::as_str),
            Some("running"),
            "VM {id}: {statuses:?}"
        );
        let (_, vm) = d.call("GET", &format!("/v1/vms/{id}"), None);
        assert_eq!(vm["status"], "running", "{vm}");
    }
    let (_, quotas) = d.call("GET", "/v1/org/quotas", None);
    assert_eq!(quotas["usage"]["vcpu"], 4, "every VM holds its quota");
}

/// Polls VM `id` until its status is no longer `running`; returns it.
fn wait_ended(d: &Daemon, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, vm) = d.call("GET", &format!("/v1/vms/{id}"), None);
        assert_eq!(status, 200, "{vm}");
        let now = vm["status"].as_str().unwrap().to_string();
        if now != "running" || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_powered_off_guest_is_stopped_and_a_killed_monitor_is_an_error() {
    if !can_run_vms("a_powered_off_guest_is_stopped_and_a_killed_monitor_is_an_error") {
        return;
    }
    let d = Daemon::start();
    let create = || {
        let (status, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
        assert_eq!((status, &vm["status"]), (201, &json!("running")), "{vm}");
        vm["id"].as_str().unwrap().to_string()
    };

    let off = create();
    let (status, out) = d.call(
        "POST",
        &format!("/v1/vms/{off}/exec"),
        Some(&json!({"command": ["poweroff"]})),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(wait_ended(&d, &off), "stopped");
    let record = ExitRecord::read(&d.data_dir.join("vms").join(&off))
        .unwrap()
        .expect("the monitor left its exit record");
    assert_eq!(record.code, EXIT_POWER_OFF, "{record:?}");

    let killed = create();
    let pid = fastvmd::supervisor::monitor_pid(&d.data_dir.join("vms").join(&killed))
        .expect("a live monitor");
    // SAFETY: kills a monitor process this test's daemon started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert_eq!(wait_ended(&d, &killed), "error");
    let (_, quotas) = d.call("GET", "/v1/org/quotas", None);
    assert_eq!(
        quotas["usage"]["vcpu"], 1,
        "the stopped VM holds its quota, the failed one not"
    );
}

#[test]
fn a_vm_deleted_while_it_is_created_is_not_answered_running() {
    if !can_run_vms("a_vm_deleted_while_it_is_created_is_not_answered_running") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let slow = slow_monitor(tmp.path());
    let d = Daemon::start_with(&["--monitor-exe", slow.to_str().unwrap()]);
    let id = std::thread::scope(|s| {
        let create = s.spawn(|| d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"}))));
        let deadline = Instant::now() + Duration::from_secs(5);
        let id = loop {
            let (_, vms) = d.call("GET", "/v1/vms", None);
            let provisioning = vms.as_array().and_then(|vms| {
                vms.iter()
                    .find(|v| v["status"] == "provisioning")
                    .and_then(|v| v["id"].as_str().map(str::to_string))
            });
            if let Some(id) = provisioning {
                break id;
            }
            assert!(Instant::now() < deadline, "no VM was ever provisioning");
            std::thread::sleep(Duration::from_millis(20));
        };
        let (status, body) = d.call("DELETE", &format!("/v1/vms/{id}"), None);
        assert_eq!(status, 200, "{body}");
        let (status, body) = create.join().unwrap();
        assert!(
            status == 409 || (status == 201 && body["status"] != "running"),
            "a VM deleted while it was created was answered {status} {body}"
        );
        id
    });
    let (status, _) = d.call("GET", &format!("/v1/vms/{id}"), None);
    assert_eq!(status, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.monitor_pids().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        d.monitor_pids().is_empty(),
        "a monitor outlived its deleted VM"
    );
}
