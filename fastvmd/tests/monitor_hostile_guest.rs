//! A guest that misbehaves on purpose cannot grow the monitor's log: its
//! bad MMIO writes are logged at most once a second per kind (the next
//! line says how many were suppressed) and every one is counted in the
//! `status` control op.

mod common;

use std::time::Duration;

use common::{TestVm, VmOpts, can_run_vms};
use fastvmd::vmm::control::Request;

const KIND: &str = "virtio-mmio: write ignored";

#[test]
fn bad_mmio_writes_are_rate_limited_and_counted() {
    if !can_run_vms("bad_mmio_writes_are_rate_limited_and_counted") {
        return;
    }
    let mut vm = TestVm::start(VmOpts::default());
    vm.wait_ready();
    let writes = 20_000;
    let out = vm.exec_timeout(&["mmio-spam", &writes.to_string()], Duration::from_secs(60));
    assert_eq!(out.exit_code, 0, "{out:?}");
    let status = vm.control(Request::Status).expect("status");
    assert_eq!(
        status.guest_warnings.get(KIND),
        Some(&writes),
        "{:?}",
        status.guest_warnings
    );
    // A second burst is counted on top and still logged sparingly.
    let again = vm.exec_timeout(&["mmio-spam", "5000"], Duration::from_secs(60));
    assert_eq!(again.exit_code, 0, "{again:?}");
    let status = vm.control(Request::Status).expect("status");
    assert_eq!(status.guest_warnings.get(KIND), Some(&(writes + 5000)));

    vm.terminate();
    let (_, stderr) = vm.wait_exit(Duration::from_secs(10));
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(KIND)).collect();
    let seconds = (out.duration_ms + again.duration_ms) / 1000;
    assert!(
        !lines.is_empty() && lines.len() as u64 <= seconds + 3,
        "{} lines for {} writes in {seconds} s of spamming:\n{}",
        lines.len(),
        writes + 5000,
        lines.join("\n")
    );
}

#[test]
fn console_clients_are_capped_and_a_leaving_one_makes_room() {
    use std::io::Read;
    use std::time::Instant;

    use fastvmd::vmm::console::{MAX_CLIENTS, TOO_MANY_CLIENTS};

    if !can_run_vms("console_clients_are_capped_and_a_leaving_one_makes_room") {
        return;
    }
    let vm = TestVm::start(VmOpts::default());
    vm.wait_ready();
    let mut clients: Vec<_> = (0..MAX_CLIENTS).map(|_| vm.console()).collect();
    let refused_text = |mut extra: std::os::unix::net::UnixStream| {
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut text = String::new();
        let _ = extra.read_to_string(&mut text);
        text
    };
    let said = refused_text(vm.console());
    assert!(said.ends_with(TOO_MANY_CLIENTS), "{said:?}");

    drop(clients.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = vm.console();
        again
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let n = again.read(&mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.contains(TOO_MANY_CLIENTS) {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a client left");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn monitor_log_never_passes_its_cap() {
    if !can_run_vms("monitor_log_never_passes_its_cap") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("monitor.log");
    let max = 512u64;
    let mut vm = TestVm::start(VmOpts {
        log_file: Some(log.clone()),
        extra: vec!["--log-max-bytes".into(), max.to_string()],
        rust_log: Some("trace".into()),
        ..VmOpts::default()
    });
    vm.wait_ready();
    // Everything the monitor says at trace level, and the guest's bad
    // writes, many times over the cap.
    let mut biggest = 0;
    let start = std::time::Instant::now();
    let mut round = 0;
    while start.elapsed() < Duration::from_secs(4) {
        let out = vm.exec_timeout(&["mmio-spam", "2000"], Duration::from_secs(60));
        assert_eq!(out.exit_code, 0, "round {round}: {out:?}");
        biggest = biggest.max(std::fs::metadata(&log).unwrap().len());
        round += 1;
    }
    vm.terminate();
    vm.wait_exit(Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap();
    biggest = biggest.max(text.len() as u64);
    assert!(
        biggest <= max,
        "monitor.log reached {biggest} bytes (cap {max})"
    );
    assert!(
        text.contains("was emptied"),
        "the cap was never reached:\n{text}"
    );
    // The newest lines, how the monitor ended, are kept.
    assert!(text.contains("stopped by SIGTERM"), "{text}");
}

/// Bad MMIO writes and bad descriptors, round after round for 30 s: the
/// monitor counts every one, logs a few lines, keeps `monitor.log` under its
/// cap, and the VM keeps answering exec (and its disk keeps working).
#[test]
fn a_guest_spamming_bad_accesses_for_30_s_stays_contained() {
    use std::time::Instant;

    if !can_run_vms("a_guest_spamming_bad_accesses_for_30_s_stays_contained") {
        return;
    }
    const SPAM: Duration = Duration::from_secs(30);
    const WRITES: u64 = 20_000;
    const REQUESTS: u64 = 500;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("monitor.log");
    let mut vm = TestVm::start(VmOpts {
        log_file: Some(log.clone()),
        ..VmOpts::default()
    });
    vm.wait_ready();
    let start = Instant::now();
    let mut rounds = 0u64;
    let mut biggest_log = 0;
    while start.elapsed() < SPAM {
        let mmio = vm.exec_timeout(&["mmio-spam", &WRITES.to_string()], Duration::from_secs(60));
        assert_eq!(mmio.exit_code, 0, "round {rounds}: {mmio:?}");
        let desc = vm.exec_timeout(
            &["desc-spam", &REQUESTS.to_string()],
            Duration::from_secs(60),
        );
        assert_eq!(
            (desc.exit_code, desc.stdout.trim()),
            (0, format!("posted {REQUESTS} bad requests").as_str()),
            "round {rounds}: {desc:?}"
        );
        let echo = vm.exec_timeout(
            &["echo", "alive", &rounds.to_string()],
            Duration::from_secs(10),
        );
        assert_eq!(echo.stdout, format!("alive {rounds}\n"), "round {rounds}");
        biggest_log = biggest_log.max(std::fs::metadata(&log).unwrap().len());
        rounds += 1;
    }
    let spammed = start.elapsed().as_secs();
    // The disk was taken over and given back every round: it still works.
    let wrote = vm.exec_timeout(
        &["disk-write", "4096", "still-here"],
        Duration::from_secs(10),
    );
    assert_eq!(wrote.exit_code, 0, "{wrote:?}");
    let read = vm.exec_timeout(&["disk-read", "4096", "10"], Duration::from_secs(10));
    assert_eq!(read.stdout, "still-here", "{read:?}");

    let status = vm.control(Request::Status).expect("status");
    let warnings = &status.guest_warnings;
    assert_eq!(warnings.get(KIND), Some(&(WRITES * rounds)), "{warnings:?}");
    let bad_descriptors: u64 = warnings
        .iter()
        .filter(|(kind, _)| kind.starts_with("virtio-blk"))
        .map(|(_, n)| n)
        .sum();
    assert!(bad_descriptors >= REQUESTS * rounds, "{warnings:?}");

    vm.terminate();
    vm.wait_exit(Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap();
    biggest_log = biggest_log.max(text.len() as u64);
    assert!(
        biggest_log <= fastvmd::vmm::log_cap::DEFAULT_LOG_MAX_BYTES,
        "monitor.log reached {biggest_log} bytes"
    );
    // A line per kind per second at most (and a few at the edges).
    let lines = text
        .lines()
        .filter(|l| warnings.keys().any(|kind| l.contains(kind.as_str())))
        .count() as u64;
    let kinds = warnings.len() as u64;
    assert!(
        lines <= kinds * (spammed + 3),
        "{lines} warning lines for {kinds} kinds in {spammed} s:\n{text}"
    );
    eprintln!(
        "{rounds} rounds in {spammed} s: {} bad MMIO writes, {bad_descriptors} bad requests, \
         {lines} log lines, monitor.log at most {biggest_log} bytes",
        WRITES * rounds
    );
}
