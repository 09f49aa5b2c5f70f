//! A VM's status tells the truth: a guest that powers off ends `stopped`;
//! a monitor killed by a signal ends `error`.

mod common;

use std::time::{Duration, Instant};

use common::can_run_vms;
use common::daemon::Daemon;
use fastvmd::vmm::exit::EXIT_POWER_OFF;
use fastvmd::vmm::exit_record::ExitRecord;
use serde_json::json;

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
