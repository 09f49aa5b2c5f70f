//! Every built-in command of the test guest over vsock.sock: exit codes,
//! stdout, stderr, 1 MiB of output, disk and memory, timeouts.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{TestVm, VmOpts, can_run_vms};
use fastvm_proto::agent::{ExecRequest, TIMEOUT_EXIT_CODE};
use fastvmd::agent::{AgentError, RESULT_GRACE, vsock_connect};
use fastvmd::vmm::control::Request;

#[test]
fn builtin_commands_over_vsock() {
    if !can_run_vms("builtin_commands_over_vsock") {
        return;
    }
    let vm = TestVm::start(VmOpts::default());
    let mut agent = vm.agent();
    assert_eq!(agent.ready().version, fastvm_proto::agent::STREAMS_VERSION);
    agent.ping(Duration::from_secs(5)).expect("ping");

    let r = vm.exec(&["echo", "hello", "world"]);
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "hello world\n", "")
    );
    assert!(!r.timed_out && !r.stdout_truncated && !r.stderr_truncated);

    assert_eq!(vm.exec(&["exit", "3"]).exit_code, 3);
    assert_eq!(vm.exec(&["exit", "0"]).exit_code, 0);

    let r = vm.exec(&["stderr", "oops", "here"]);
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", "oops here\n")
    );

    let r = vm.exec(&["frobnicate"]);
    assert_eq!(r.exit_code, 127);
    assert!(
        r.stderr.contains("unknown command: frobnicate"),
        "{:?}",
        r.stderr
    );

    let r = vm.exec(&["sleep", "150"]);
    assert_eq!(r.exit_code, 0);
    assert!(r.duration_ms >= 150, "slept {} ms", r.duration_ms);

    let r = vm.exec(&["yes", "1048576"]);
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stdout.len(), 1 << 20);
    assert!(r.stdout.as_bytes().chunks(2).all(|c| c == b"y\n"));

    assert_eq!(vm.exec(&["mem-set", "colour", "teal"]).exit_code, 0);
    let r = vm.exec(&["mem-get", "colour"]);
    assert_eq!((r.exit_code, r.stdout.trim()), (0, "teal"));
    assert_ne!(vm.exec(&["mem-get", "missing"]).exit_code, 0);
}

#[test]
fn disk_write_reaches_the_host_file_and_reads_back() {
    if !can_run_vms("disk_write_reaches_the_host_file_and_reads_back") {
        return;
    }
    let vm = TestVm::start(VmOpts::default());
    let offset = 5 * 512 + 100;
    let r = vm.exec(&["disk-write", &offset.to_string(), "bytes-on-disk"]);
    assert_eq!(r.exit_code, 0, "{r:?}");
    let r = vm.exec(&["disk-read", &offset.to_string(), "13"]);
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "bytes-on-disk"));
    let file = std::fs::File::open(&vm.disk).unwrap();
    let mut host = [0u8; 13];
    file.read_exact_at(&mut host, offset as u64).unwrap();
    assert_eq!(&host, b"bytes-on-disk");
    // Past the end of the 64 MiB disk: a clean error, not a crash.
    let r = vm.exec(&["disk-read", &(64u64 << 20).to_string(), "4"]);
    assert_ne!(r.exit_code, 0);
    assert_eq!(vm.exec(&["echo", "still", "alive"]).stdout, "still alive\n");
}

#[test]
fn host_side_timeout_and_closed_ports() {
    if !can_run_vms("host_side_timeout_and_closed_ports") {
        return;
    }
    let vm = TestVm::start(VmOpts::default());
    // The agent enforces the timeout itself and answers with exit code 124.
    let r = vm.exec_timeout(&["sleep", "10000"], Duration::from_millis(300));
    assert!(r.timed_out, "{r:?}");
    assert_eq!(r.exit_code, TIMEOUT_EXIT_CODE, "{r:?}");
    assert!(r.duration_ms >= 300 && r.duration_ms < 5000, "{r:?}");
    // An agent that cannot answer (its VM is paused) is given up on once
    // the timeout and the grace have passed.
    let conn = vm.agent();
    vm.control(Request::Pause).expect("pause");
    let started = Instant::now();
    let (r, conn) = conn
        .exec(
            &ExecRequest::new(["echo", "late"]),
            Duration::from_millis(300),
        )
        .expect("exec");
    let waited = started.elapsed();
    vm.control(Request::Resume).expect("resume");
    assert!(r.timed_out && conn.is_none(), "{r:?}");
    assert!(
        waited >= Duration::from_millis(300) + RESULT_GRACE && waited < Duration::from_secs(10),
        "gave up after {waited:?}"
    );
    // The guest drops the abandoned command and keeps serving.
    assert_eq!(vm.exec(&["echo", "after"]).stdout, "after\n");
    // Nothing listens on port 4444: the monitor closes the connection.
    match vsock_connect(&vm.dir.join("vsock.sock"), 4444, Duration::from_secs(5)) {
        Err(AgentError::NoListener(4444)) => {}
        other => panic!("expected no listener, got {:?}", other.map(|_| ())),
    }
}
