//! The supervisor starts monitors as their own processes, runs commands in
//! them, snapshots and restores them, and finds them by their directory.

mod common;

use std::time::Duration;

use common::can_run_vms;
use fastvm_proto::agent::{ExecRequest, ExecResult};
use fastvmd::supervisor::{
    GuestChoice, GuestImage, MonitorSource, MonitorSpec, Readiness, SetupProblem, Supervisor,
};
use fastvmd::vmm::host;

#[test]
fn start_exec_snapshot_restore_destroy() {
    if !can_run_vms("start_exec_snapshot_restore_destroy") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let GuestImage::Ready {
        kernel, cmdline, ..
    } = GuestImage::prepare(
        GuestChoice::Test,
        &host::detect(),
        &tmp.path().join("images"),
    )
    else {
        panic!("the test guest should be available here");
    };
    let sup = Supervisor::new(
        tmp.path().join("vms"),
        env!("CARGO_BIN_EXE_fastvm-vmm").into(),
    );
    let pid = sup
        .start(&MonitorSpec {
            id: "a".into(),
            source: MonitorSource::Boot {
                kernel,
                cmdline,
                vcpus: 1,
                memory_mib: 64,
                base_disk: None,
            },
            disk_gib: 1,
            vsock_cid: 3,
            limits: None,
            nic: None,
            firewall_json: None,
        })
        .expect("start");
    assert!(sup.is_alive("a"));
    assert_eq!(
        fastvmd::supervisor::monitor_pid(&sup.vm_dir("a")),
        Some(pid)
    );
    let readiness = block_on(sup.wait_agent("a", Duration::from_secs(10), None));
    // The test guest has no clock to set, and says so.
    assert!(
        matches!(&readiness, Readiness::ReadyWithProblems(p)
            if matches!(&p[..], [SetupProblem::Clock(why)] if why.contains("refused"))),
        "{readiness:?}"
    );
    let r = exec(
        &sup,
        "a",
        &ExecRequest::new(["mem-set", "x", "1"]),
        Duration::from_secs(10),
    );
    assert_eq!(r.exit_code, 0);
    let r = exec(
        &sup,
        "a",
        &ExecRequest::new(["sleep", "5000"]),
        Duration::from_millis(200),
    );
    assert!(r.timed_out);

    let snap = tmp.path().join("snap");
    sup.snapshot("a", &snap).expect("snapshot");
    sup.start(&MonitorSpec {
        id: "b".into(),
        source: MonitorSource::Restore {
            snapshot: snap.clone(),
        },
        disk_gib: 2,
        vsock_cid: 4,
        limits: None,
        nic: None,
        firewall_json: None,
    })
    .expect("restore");
    let r = exec(
        &sup,
        "b",
        &ExecRequest::new(["mem-get", "x"]),
        Duration::from_secs(10),
    );
    assert_eq!(r.stdout.trim(), "1");
    assert_eq!(
        std::fs::metadata(sup.vm_dir("b").join("disk"))
            .unwrap()
            .len(),
        2 << 30
    );

    sup.destroy("a").unwrap();
    assert!(!sup.is_alive("a"));
    assert!(!sup.vm_dir("a").exists());
    assert!(sup.is_alive("b"), "the clone is independent");
    sup.destroy("b").unwrap();

    // A snapshot that does not exist: the monitor's own message comes back.
    let err = sup
        .start(&MonitorSpec {
            id: "c".into(),
            source: MonitorSource::Restore {
                snapshot: tmp.path().join("missing"),
            },
            disk_gib: 1,
            vsock_cid: 5,
            limits: None,
            nic: None,
            firewall_json: None,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
}

/// `future` run to its end from this synchronous test.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// `Supervisor::exec_async` run to its end.
fn exec(sup: &Supervisor, id: &str, request: &ExecRequest, timeout: Duration) -> ExecResult {
    block_on(sup.exec_async(id, request, timeout)).unwrap()
}
