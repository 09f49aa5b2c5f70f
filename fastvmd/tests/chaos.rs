//! Chaos: several clients create, exec, snapshot, clone, change firewalls
//! and delete at once while the daemon and random monitors are killed with
//! SIGKILL at random moments (the daemon then restarted). Once it settles,
//! every VM and snapshot whose creation was acknowledged is there (unless a
//! delete of it was tried), every acknowledged delete holds, nothing is
//! left `creating` or `provisioning`, no monitor, VM directory, snapshot
//! directory, tap or cgroup is left without its VM or snapshot, quota usage
//! is the sum of what lives, and the daemon's descriptors are bounded. It
//! prints its figures. `FASTVM_CHAOS_ROUNDS` (default 6, about 1.5 s each)
//! runs it longer.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::can_run_vms;
use common::daemon::Daemon;
use serde_json::{Value, json};

const CLIENTS: usize = 3;
const ROUND: Duration = Duration::from_millis(1500);

/// What the clients were told.
#[derive(Default)]
struct Ledger {
    vms: BTreeSet<String>,
    vm_delete_tried: BTreeSet<String>,
    vms_deleted: BTreeSet<String>,
    snapshots: BTreeSet<String>,
    snapshot_delete_tried: BTreeSet<String>,
    snapshots_deleted: BTreeSet<String>,
}

/// A small deterministic generator per client.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, set: &'a BTreeSet<String>) -> Option<&'a String> {
        let n = set.len() as u64;
        (n > 0).then(|| set.iter().nth((self.next() % n) as usize).unwrap())
    }
}

/// One request to whatever daemon is up: `None` when it could not be
/// reached (killed meanwhile).
fn call(
    target: &Mutex<(String, String)>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let (base, key) = target.lock().unwrap().clone();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("X-API-Key", &key);
    if body.is_some() {
        request = request.header("Content-Type", "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = agent.run(request.body(body).ok()?).ok()?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap_or_default();
    Some((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The id of what a 201 made.
fn created(answer: &Option<(u16, Value)>) -> Option<String> {
    match answer {
        Some((201, body)) => body["id"].as_str().map(str::to_string),
        _ => None,
    }
}

fn client(
    seed: u64,
    target: &Mutex<(String, String)>,
    ledger: &Mutex<Ledger>,
    stop: &AtomicBool,
    acked: &AtomicUsize,
) {
    let mut dice = Dice(seed);
    while !stop.load(Ordering::Relaxed) {
        let (vm, snap) = {
            let l = ledger.lock().unwrap();
            let live: BTreeSet<String> = l.vms.difference(&l.vm_delete_tried).cloned().collect();
            let snaps: BTreeSet<String> = l
                .snapshots
                .difference(&l.snapshot_delete_tried)
                .cloned()
                .collect();
            (dice.pick(&live).cloned(), dice.pick(&snaps).cloned())
        };
        let ok = |r: &Option<(u16, Value)>, want: u16| r.as_ref().is_some_and(|(s, _)| *s == want);
        match dice.next() % 10 {
            0 | 1 => {
                let r = call(
                    target,
                    "POST",
                    "/v1/vms",
                    Some(json!({"machineType": "c1m2"})),
                );
                if let Some(id) = created(&r) {
                    ledger.lock().unwrap().vms.insert(id);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            2 | 3 => {
                if let Some(vm) = vm {
                    let body = json!({"command": ["echo", "chaos"]});
                    let r = call(target, "POST", &format!("/v1/vms/{vm}/exec"), Some(body));
                    if ok(&r, 200) {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            4 => {
                if let Some(vm) = vm {
                    let r = call(target, "POST", "/v1/snapshots", Some(json!({"vmId": vm})));
                    if let Some(id) = created(&r) {
                        ledger.lock().unwrap().snapshots.insert(id);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            5 => {
                if let Some(snap) = snap {
                    let r = call(target, "POST", "/v1/vms", Some(json!({"snapshotId": snap})));
                    if let Some(id) = created(&r) {
                        ledger.lock().unwrap().vms.insert(id);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            6 => {
                if let Some(vm) = vm {
                    let port = 1000 + dice.next() % 1000;
                    let body = json!({"ingress": [{"protocol": "tcp", "portStart": port}]});
                    let r = call(
                        target,
                        "PATCH",
                        &format!("/v1/vms/{vm}/firewall"),
                        Some(body),
                    );
                    if ok(&r, 200) {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            7 | 8 => {
                if let Some(vm) = vm {
                    ledger.lock().unwrap().vm_delete_tried.insert(vm.clone());
                    let r = call(target, "DELETE", &format!("/v1/vms/{vm}"), None);
                    if ok(&r, 200) {
                        ledger.lock().unwrap().vms_deleted.insert(vm);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {
                if let Some(snap) = snap {
                    ledger
                        .lock()
                        .unwrap()
                        .snapshot_delete_tried
                        .insert(snap.clone());
                    let r = call(target, "DELETE", &format!("/v1/snapshots/{snap}"), None);
                    if ok(&r, 200) {
                        ledger.lock().unwrap().snapshots_deleted.insert(snap);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Processes whose command line names `data_dir` (monitors of this daemon).
fn monitors_of(data_dir: &std::path::Path) -> Vec<(u32, String)> {
    let needle = data_dir.join("vms").display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let Some(dir) = args.iter().skip_while(|a| *a != "--dir").nth(1)
            && dir.starts_with(&needle)
        {
            found.push((pid, dir.rsplit('/').next().unwrap_or_default().to_string()));
        }
    }
    found
}

fn names_in(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn chaos_leaves_nothing_lost_and_nothing_leaked() {
    if !can_run_vms("chaos_leaves_nothing_lost_and_nothing_leaked") {
        return;
    }
    let rounds: usize = std::env::var("FASTVM_CHAOS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let daemon = Mutex::new(Daemon::start());
    let data_dir = daemon.lock().unwrap().data_dir.clone();
    let target = {
        let d = daemon.lock().unwrap();
        Arc::new(Mutex::new((d.base.clone(), d.key.clone())))
    };
    let ledger = Mutex::new(Ledger::default());
    let stop = AtomicBool::new(false);
    let acked = AtomicUsize::new(0);
    let (mut daemon_kills, mut monitor_kills) = (0, 0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let (target, ledger, stop, acked) = (&target, &ledger, &stop, &acked);
            s.spawn(move || client(0x9e37_79b9 + c as u64 * 7919, target, ledger, stop, acked));
        }
        let mut dice = Dice(0xc0ff_ee11);
        for _ in 0..rounds {
            std::thread::sleep(ROUND / 2 + Duration::from_millis(dice.next() % 500));
            let mut d = daemon.lock().unwrap();
            if dice.next() % 3 == 0 {
                d.kill9();
                daemon_kills += 1;
                std::thread::sleep(Duration::from_millis(dice.next() % 200));
                d.restart();
                *target.lock().unwrap() = (d.base.clone(), d.key.clone());
            } else {
                let pids = d.monitor_pids();
                if !pids.is_empty() {
                    let pid = pids[(dice.next() % pids.len() as u64) as usize];
                    // SAFETY: kills a monitor this test's daemon started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    monitor_kills += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });

    // Settle: one more restart (as after a crash), then wait for nothing to
    // be on its way.
    let mut d = daemon.into_inner().unwrap();
    d.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (vms, snaps) = loop {
        let (s1, vms) = d.call("GET", "/v1/vms", None);
        let (s2, snaps) = d.call("GET", "/v1/snapshots", None);
        assert_eq!((s1, s2), (200, 200));
        let busy = vms.as_array().unwrap().iter().any(|v| {
            ["provisioning", "deleting"].contains(&v["status"].as_str().unwrap_or_default())
        });
        if !busy || Instant::now() > deadline {
            break (
                vms.as_array().unwrap().clone(),
                snaps.as_array().unwrap().clone(),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Let the watcher judge monitors killed last.
    std::thread::sleep(Duration::from_secs(2));
    let (_, vms_now) = d.call("GET", "/v1/vms", None);
    let vms: Vec<Value> = if vms_now.is_array() {
        vms_now.as_array().unwrap().clone()
    } else {
        vms
    };

    let ledger = ledger.into_inner().unwrap();
    let listed_vms: BTreeSet<String> = vms
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let listed_snaps: BTreeSet<String> = snaps
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let status_of = |id: &str| {
        vms.iter()
            .find(|v| v["id"] == id)
            .map(|v| v["status"].as_str().unwrap().to_string())
    };
    let mut leaks: Vec<String> = Vec::new();

    for id in ledger.vms.difference(&ledger.vm_delete_tried) {
        if !listed_vms.contains(id) {
            leaks.push(format!("VM {id} acknowledged created is gone"));
        }
    }
    for id in &ledger.vms_deleted {
        if listed_vms.contains(id) {
            leaks.push(format!("VM {id} acknowledged deleted is listed"));
        }
    }
    for id in ledger.snapshots.difference(&ledger.snapshot_delete_tried) {
        match snaps.iter().find(|s| s["id"] == id.as_str()) {
            Some(s) if s["status"] == "ready" => {}
            other => leaks.push(format!("snapshot {id} acknowledged ready: {other:?}")),
        }
    }
    for id in &ledger.snapshots_deleted {
        if listed_snaps.contains(id) {
            leaks.push(format!("snapshot {id} acknowledged deleted is listed"));
        }
    }
    for v in &vms {
        let status = v["status"].as_str().unwrap_or_default();
        if ["provisioning", "deleting"].contains(&status) {
            leaks.push(format!("VM {} still {status}", v["id"]));
        }
    }
    for s in &snaps {
        if s["status"] == "creating" {
            leaks.push(format!("snapshot {} still creating", s["id"]));
        }
    }
    // Monitors, directories, taps and cgroups belong to what lives.
    for (pid, vm) in monitors_of(&data_dir) {
        if status_of(&vm).as_deref() != Some("running") {
            leaks.push(format!("monitor {pid} of VM {vm} ({:?})", status_of(&vm)));
        }
    }
    for dir in names_in(&data_dir.join("vms")) {
        if !listed_vms.contains(&dir) {
            leaks.push(format!("VM directory {dir} without its VM"));
        }
    }
    for dir in names_in(&data_dir.join("snapshots")) {
        if !listed_snaps.contains(&dir) {
            leaks.push(format!("snapshot directory {dir} without its snapshot"));
        }
    }
    let known: BTreeSet<&String> = ledger.vms.iter().chain(&listed_vms).collect();
    for tap in names_in(std::path::Path::new("/sys/class/net")) {
        let Some(vm) = known
            .iter()
            .find(|id| fastvmd::net::addr::tap_name(id) == tap)
        else {
            continue;
        };
        if status_of(vm).as_deref() != Some("running") {
            leaks.push(format!("tap {tap} of VM {vm} ({:?})", status_of(vm)));
        }
    }
    let cgroups = fastvmd::supervisor::cgroups::Cgroups::detect(&data_dir);
    for id in cgroups.vm_ids() {
        if known.contains(&id) && status_of(&id).as_deref() != Some("running") {
            leaks.push(format!("cgroup of VM {id} ({:?})", status_of(&id)));
        }
    }
    // Quota usage is the sum of what lives.
    let (_, quotas) = d.call("GET", "/v1/org/quotas", None);
    let counted: Vec<&Value> = vms.iter().filter(|v| v["status"] != "error").collect();
    let sum = |field: &str| {
        counted
            .iter()
            .map(|v| v[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let usage = &quotas["usage"];
    let want = json!({
        "vcpu": sum("cpu"),
        "memoryMiB": sum("memoryMiB"),
        "diskGiB": sum("diskGiB"),
        "snapshotCount": snaps.iter().filter(|s| s["status"] != "error").count(),
    });
    for field in ["vcpu", "memoryMiB", "diskGiB", "snapshotCount"] {
        if usage[field] != want[field] {
            leaks.push(format!(
                "quota {field}: {} used, {} live",
                usage[field], want[field]
            ));
        }
    }
    let pid = d.child.as_ref().unwrap().id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    if fds > 64 {
        leaks.push(format!("the daemon holds {fds} descriptors"));
    }

    println!(
        "chaos: {rounds} rounds in {:.1} s, {CLIENTS} clients, {} operations acknowledged, \
         {daemon_kills} daemon kills, {monitor_kills} monitor kills; {} VMs and {} snapshots \
         live; daemon fds {fds}; leaks found: {}",
        started.elapsed().as_secs_f64(),
        acked.load(Ordering::Relaxed),
        vms.len(),
        snaps.len(),
        leaks.len()
    );
    assert!(leaks.is_empty(), "{leaks:#?}");
}
