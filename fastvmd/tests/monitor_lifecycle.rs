//! Pause, resume, stop, SIGTERM, guest power-off, and twenty VMs at once.

mod common;

use std::time::Duration;

use common::{TestVm, VmOpts, can_run_vms, type_into};
use fastvmd::vmm::control::{Request, RunState};
use fastvmd::vmm::exit::{EXIT_CRASHED, EXIT_POWER_OFF, EXIT_STOPPED};

#[test]
fn pause_stops_guest_progress_and_resume_continues() {
    if !can_run_vms("pause_stops_guest_progress_and_resume_continues") {
        return;
    }
    let vm = TestVm::start(VmOpts::default());
    vm.wait_ready();
    let mut console = vm.console();
    TestVm::read_until(&mut console, "ready", Duration::from_secs(5));
    let status = vm.control(Request::Pause).expect("pause");
    assert_eq!(status.state, RunState::Paused);
    assert_eq!(vm.control(Request::Status).unwrap().state, RunState::Paused);
    assert!(
        vm.control(Request::Pause)
            .unwrap_err()
            .contains("already paused")
    );
    type_into(&mut console, "while-paused");
    let during = TestVm::read_until(&mut console, "while-paused", Duration::from_millis(400));
    assert!(
        !during.contains("while-paused"),
        "guest ran while paused: {during:?}"
    );
    assert_eq!(
        vm.control(Request::Resume).unwrap().state,
        RunState::Running
    );
    let after = TestVm::read_until(&mut console, "while-paused", Duration::from_secs(5));
    assert!(
        after.contains("while-paused"),
        "no echo after resume: {after:?}"
    );
    let status = vm.control(Request::Status).unwrap();
    assert_eq!((status.vcpus, status.memory_mib), (2, 128));
}

#[test]
fn stop_request_and_sigterm_end_the_monitor_cleanly() {
    if !can_run_vms("stop_request_and_sigterm_end_the_monitor_cleanly") {
        return;
    }
    let mut vm = TestVm::start(VmOpts::default());
    vm.wait_ready();
    let status = vm.control(Request::Stop).expect("stop");
    assert_eq!(status.state, RunState::Stopping);
    let (code, stderr) = vm.wait_exit(Duration::from_secs(10));
    assert_eq!(code.code(), Some(EXIT_STOPPED), "{stderr}");
    assert!(stderr.contains("stopped by control request"), "{stderr}");
    assert!(!vm.dir.join("control.sock").exists());

    let mut vm = TestVm::start(VmOpts::default());
    vm.wait_ready();
    vm.terminate();
    let (code, stderr) = vm.wait_exit(Duration::from_secs(10));
    assert_eq!(code.code(), Some(EXIT_STOPPED), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[test]
fn guest_poweroff_ends_the_monitor_with_that_status() {
    if !can_run_vms("guest_poweroff_ends_the_monitor_with_that_status") {
        return;
    }
    let mut vm = TestVm::start(VmOpts::default());
    let r = vm.exec(&["poweroff"]);
    assert_eq!(r.exit_code, 0);
    let (code, stderr) = vm.wait_exit(Duration::from_secs(10));
    assert_eq!(code.code(), Some(EXIT_POWER_OFF), "{stderr}");
    assert!(stderr.contains("guest powered off"), "{stderr}");
}

#[test]
fn twenty_vms_at_once() {
    if !can_run_vms("twenty_vms_at_once") {
        return;
    }
    let vms: Vec<TestVm> = (0..20)
        .map(|i| {
            TestVm::start(VmOpts {
                vcpus: 1,
                memory_mib: 64,
                disk_mib: 16,
                cid: 3 + i,
                ..VmOpts::default()
            })
        })
        .collect();
    for (i, vm) in vms.iter().enumerate() {
        let r = vm.exec(&["echo", &format!("vm-{i}")]);
        assert_eq!(r.stdout, format!("vm-{i}\n"));
    }
    for vm in &vms {
        vm.control(Request::Stop).expect("stop");
    }
}

#[test]
fn guest_crash_ends_the_monitor_with_the_crash_status() {
    if !can_run_vms("guest_crash_ends_the_monitor_with_the_crash_status") {
        return;
    }
    let mut vm = TestVm::start(VmOpts::default());
    vm.wait_ready();
    let conn = vm.agent();
    // `crash` faults at once and never answers.
    let _ = conn.exec(
        &fastvm_proto::agent::ExecRequest::new(["crash"]),
        Duration::from_secs(2),
    );
    let (code, stderr) = vm.wait_exit(Duration::from_secs(10));
    assert_eq!(code.code(), Some(EXIT_CRASHED), "{stderr}");
    assert!(stderr.contains("guest crashed"), "{stderr}");
    // The report shows where: the test guest's handler triple-faults by
    // loading an empty IDT, which the registers show unless KVM reset the
    // vCPU (AMD), which the report then says.
    assert!(
        stderr.contains("triple fault") && stderr.contains("rip="),
        "{stderr}"
    );
    assert!(
        stderr.contains("idt=0x0/0x0") || stderr.contains("reset state"),
        "{stderr}"
    );
}

/// User plus system CPU time of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces) start at state.
    let after = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn idle_guest_gives_its_core_back_and_still_keeps_time() {
    if !can_run_vms("idle_guest_gives_its_core_back_and_still_keeps_time") {
        return;
    }
    let vm = TestVm::start(VmOpts {
        vcpus: 1,
        ..VmOpts::default()
    });
    vm.wait_ready();
    std::thread::sleep(Duration::from_millis(200));
    let hz = 100; // USER_HZ on Linux
    let before = cpu_ticks(vm.child.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(vm.child.id()) - before;
    // A spinning guest uses ~2 s of CPU here; an idle one a few ticks.
    assert!(
        used < hz / 2,
        "idle guest used {used} ticks of CPU in 2 s (a spinning one uses ~200)"
    );

    // Timers still fire while idle, and input still wakes it at once.
    let slept = vm.exec(&["sleep", "300"]);
    assert_eq!(slept.exit_code, 0, "{slept:?}");
    assert!(
        (300..1000).contains(&slept.duration_ms),
        "sleep 300 took {} ms in the guest",
        slept.duration_ms
    );
    let mut console = vm.console();
    type_into(&mut console, "wake-up");
    let echoed = TestVm::read_until(&mut console, "wake-up", Duration::from_secs(2));
    assert!(
        echoed.contains("wake-up"),
        "no echo from an idle guest: {echoed:?}"
    );
}
