//! execVM under load from one org: past `--max-execs-per-org` a new exec is
//! a 429 that says why, while another org's execs and everything else the
//! API does are still answered; a slot comes back when an exec ends.

mod common;

use std::time::{Duration, Instant};

use common::can_run_vms;
use common::daemon::Daemon;
use fastvmd::auth;
use fastvmd::store::Store;
use serde_json::json;

#[test]
fn one_orgs_long_execs_do_not_hold_up_others() {
    if !can_run_vms("one_orgs_long_execs_do_not_hold_up_others") {
        return;
    }
    let d = Daemon::start_with(&["--max-execs-per-org", "2"]);
    let store = Store::open(d.data_dir.join("fastvm.db")).unwrap();
    let other = store.create_org("other").unwrap();
    let (other_key, hash, prefix) = auth::generate_api_key();
    store.insert_api_key(&other.id, &hash, &prefix).unwrap();

    let create = |key: Option<&str>| {
        let (s, vm) = d.call_with(
            key,
            "POST",
            "/v1/vms",
            Some(&json!({"machineType": "c1m2"})),
        );
        assert_eq!(s, 201, "{vm}");
        vm["id"].as_str().unwrap().to_string()
    };
    let mine = create(None);
    let theirs = create(Some(&other_key));
    let exec_path = format!("/v1/vms/{mine}/exec");

    let started = Instant::now();
    std::thread::scope(|s| {
        let long: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    d.call(
                        "POST",
                        &exec_path,
                        Some(&json!({"command": ["sleep", "3000"]})),
                    )
                })
            })
            .collect();
        // Both long ones hold their slots once they have arrived (the
        // probe below takes one too while it runs, so it waits for them).
        std::thread::sleep(Duration::from_millis(1000));
        let deadline = Instant::now() + Duration::from_secs(5);
        let (status, body) = loop {
            let (status, body) =
                d.call("POST", &exec_path, Some(&json!({"command": ["echo", "x"]})));
            if status == 429 || Instant::now() > deadline {
                break (status, body);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status != 429 {
            let long: Vec<_> = long.into_iter().map(|c| c.join().unwrap()).collect();
            panic!("a third exec answered {status} {body}; the long ones: {long:?}");
        }
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("--max-execs-per-org"),
            "{body}"
        );
        // Another org, and the rest of the API, are answered meanwhile.
        let (status, out) = d.call_with(
            Some(&other_key),
            "POST",
            &format!("/v1/vms/{theirs}/exec"),
            Some(&json!({"command": ["echo", "other"]})),
        );
        assert_eq!(
            (status, out["stdout"].as_str()),
            (200, Some("other\n")),
            "{out}"
        );
        let (status, _) = d.call("GET", "/v1/vms", None);
        assert_eq!(status, 200);
        for call in long {
            let (status, out) = call.join().unwrap();
            assert_eq!((status, out["exitCode"].as_i64()), (200, Some(0)), "{out}");
        }
    });
    assert!(started.elapsed() >= Duration::from_secs(3));
    // The slots came back.
    let (status, out) = d.call(
        "POST",
        &exec_path,
        Some(&json!({"command": ["echo", "again"]})),
    );
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("again\n")),
        "{out}"
    );
}

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_running_exec_holds_no_thread_of_the_daemon() {
    if !can_run_vms("a_running_exec_holds_no_thread_of_the_daemon") {
        return;
    }
    const EXECS: usize = 40;
    let d = Daemon::start();
    let (s, vm) = d.call("POST", "/v1/vms", Some(&json!({"machineType": "c1m2"})));
    assert_eq!(s, 201, "{vm}");
    let path = format!("/v1/vms/{}/exec", vm["id"].as_str().unwrap());
    let pid = d.child.as_ref().unwrap().id();
    // Warm: the pools have made what they make for ordinary requests.
    for _ in 0..3 {
        assert_eq!(
            d.call("POST", &path, Some(&json!({"command": ["echo"]}))).0,
            200
        );
    }
    let before = threads_of(pid);
    let mut most = before;
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..EXECS)
            .map(|_| {
                s.spawn(|| d.call("POST", &path, Some(&json!({"command": ["sleep", "2000"]}))))
            })
            .collect();
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            most = most.max(threads_of(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        for call in calls {
            let (status, out) = call.join().unwrap();
            assert_eq!((status, out["exitCode"].as_i64()), (200, Some(0)), "{out}");
        }
    });
    println!("daemon threads: {before} before, at most {most} with {EXECS} execs running");
    // Lookups run on the store's fixed threads and the waits on no thread:
    // a few more at most, for the runtime's own needs.
    assert!(
        most <= before + 3,
        "{EXECS} running execs took the daemon from {before} to {most} threads"
    );
}
