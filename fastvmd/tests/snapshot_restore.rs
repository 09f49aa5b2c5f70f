//! Snapshots of a running test guest and copy-on-write clones restored from
//! them: memory, disk, exec and console carry over; clones diverge; the
//! snapshot and the original can go away under a clone.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::{TestVm, VmOpts, can_run_vms, type_into};
use fastvmd::vmm::control::{Request, RunState};
use fastvmd::vmm::exit::EXIT_STOPPED;

/// A VM with a known memory value and disk bytes, snapshotted into `snap`.
fn prepared_snapshot(snap: &Path) -> TestVm {
    let vm = TestVm::start(VmOpts::default());
    assert_eq!(vm.exec(&["mem-set", "answer", "42"]).exit_code, 0);
    assert_eq!(
        vm.exec(&["disk-write", "4096", "from-the-original"])
            .exit_code,
        0
    );
    let info = vm.snapshot(snap, true).expect("snapshot");
    assert!(snap.join("manifest.json").exists());
    assert!(
        info.memory_bytes > 0 && info.memory_bytes < 128 << 20,
        "{info:?}"
    );
    vm
}

fn check_clone(clone: &TestVm, tag: &str) {
    let r = clone.exec(&["mem-get", "answer"]);
    assert_eq!((r.exit_code, r.stdout.trim()), (0, "42"), "{tag}: memory");
    let r = clone.exec(&["disk-read", "4096", "17"]);
    assert_eq!(r.stdout, "from-the-original", "{tag}: disk");
    assert_eq!(clone.exec(&["echo", tag]).stdout, format!("{tag}\n"));
    let mut console = clone.console();
    type_into(&mut console, &format!("console-{tag}"));
    let seen = TestVm::read_until(
        &mut console,
        &format!("console-{tag}"),
        Duration::from_secs(10),
    );
    assert!(
        seen.contains(&format!("console-{tag}")),
        "{tag}: console {seen:?}"
    );
}

#[test]
fn ten_clones_restore_concurrently_and_diverge() {
    if !can_run_vms("ten_clones_restore_concurrently_and_diverge") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let original = prepared_snapshot(&snap);
    assert_eq!(
        original.control(Request::Status).unwrap().state,
        RunState::Running
    );

    let clones: Vec<TestVm> = thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|_| s.spawn(|| TestVm::restore(&snap, &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, clone) in clones.iter().enumerate() {
        check_clone(clone, &format!("clone{i}"));
    }
    // Each clone's changes stay its own.
    assert_eq!(clones[0].exec(&["mem-set", "answer", "zero"]).exit_code, 0);
    assert_eq!(
        clones[0]
            .exec(&["disk-write", "4096", "changed-in-clone0"])
            .exit_code,
        0
    );
    assert_eq!(clones[1].exec(&["mem-get", "answer"]).stdout.trim(), "42");
    assert_eq!(
        clones[1].exec(&["disk-read", "4096", "17"]).stdout,
        "from-the-original"
    );
    assert_eq!(original.exec(&["mem-get", "answer"]).stdout.trim(), "42");
    assert_eq!(
        original.exec(&["mem-set", "answer", "original"]).exit_code,
        0
    );
    assert_eq!(clones[2].exec(&["mem-get", "answer"]).stdout.trim(), "42");
    assert_eq!(clones[0].exec(&["mem-get", "answer"]).stdout.trim(), "zero");
    // The snapshot's own disk is untouched by anyone.
    let mut bytes = [0u8; 17];
    std::fs::File::open(snap.join("disk"))
        .unwrap()
        .read_exact_at(&mut bytes, 4096)
        .unwrap();
    assert_eq!(&bytes, b"from-the-original");
}

#[test]
fn clone_outlives_its_original_and_its_snapshot() {
    if !can_run_vms("clone_outlives_its_original_and_its_snapshot") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let mut original = prepared_snapshot(&snap);
    original.control(Request::Stop).unwrap();
    original.wait_exit(Duration::from_secs(10));
    let original_dir = original.dir.clone();
    drop(original);
    let _ = std::fs::remove_dir_all(&original_dir);

    let clone = TestVm::restore(&snap, &[]);
    check_clone(&clone, "late");
    std::fs::remove_dir_all(&snap).unwrap();
    // Memory pages not touched yet still come from the deleted file.
    assert_eq!(clone.exec(&["yes", "65536"]).stdout.len(), 65536);
    assert_eq!(clone.exec(&["mem-get", "answer"]).stdout.trim(), "42");
    assert_eq!(
        clone.exec(&["disk-read", "4096", "17"]).stdout,
        "from-the-original"
    );
}

#[test]
fn a_clone_stops_cleanly_on_sigterm() {
    if !can_run_vms("a_clone_stops_cleanly_on_sigterm") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let _original = prepared_snapshot(&snap);
    // Every thread of a restored monitor, vCPU 0's made first of all,
    // leaves SIGTERM to the one that turns it into a clean stop.
    let mut clone = TestVm::restore(&snap, &[]);
    assert_eq!(clone.exec(&["mem-get", "answer"]).stdout.trim(), "42");
    clone.terminate();
    let (code, stderr) = clone.wait_exit(Duration::from_secs(10));
    assert_eq!(code.code(), Some(EXIT_STOPPED), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(!clone.dir.join("control.sock").exists());
}

#[test]
fn snapshot_while_exec_runs_is_consistent() {
    if !can_run_vms("snapshot_while_exec_runs_is_consistent") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let vm = TestVm::start(VmOpts::default());
    assert_eq!(vm.exec(&["mem-set", "k", "v"]).exit_code, 0);
    thread::scope(|s| {
        let running = s.spawn(|| vm.exec(&["sleep", "300"]));
        thread::sleep(Duration::from_millis(50));
        vm.snapshot(&tmp.path().join("snap"), true)
            .expect("snapshot during exec");
        let r = running.join().unwrap();
        assert_eq!(r.exit_code, 0, "the exec in flight finishes: {r:?}");
    });
    let clone = TestVm::restore(&tmp.path().join("snap"), &[]);
    assert_eq!(clone.exec(&["mem-get", "k"]).stdout.trim(), "v");
    assert_eq!(clone.exec(&["echo", "ok"]).stdout, "ok\n");
}

#[test]
fn paused_snapshot_stays_paused_and_new_identity_works() {
    if !can_run_vms("paused_snapshot_stays_paused_and_new_identity_works") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let vm = TestVm::start(VmOpts::default());
    assert_eq!(vm.exec(&["mem-set", "answer", "42"]).exit_code, 0);
    vm.snapshot(&snap, false).expect("snapshot");
    assert_eq!(vm.control(Request::Status).unwrap().state, RunState::Paused);
    let again = vm.snapshot(&snap, true).unwrap_err();
    assert!(again.contains("exists"), "{again}");
    vm.control(Request::Resume).unwrap();

    let clone = TestVm::restore(&snap, &["--vsock-cid", "77", "--disk-gib", "1"]);
    assert_eq!(clone.exec(&["mem-get", "answer"]).stdout.trim(), "42");
    let disk = std::fs::metadata(clone.dir.join("disk")).unwrap();
    assert_eq!(disk.len(), 1 << 30, "grown to 1 GiB");
}

#[test]
fn a_clone_can_be_snapshotted_and_restored_again() {
    if !can_run_vms("a_clone_can_be_snapshotted_and_restored_again") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let second = tmp.path().join("second");
    let original = prepared_snapshot(&first);
    drop(original);
    let clone = TestVm::restore(&first, &[]);
    assert_eq!(clone.exec(&["mem-set", "generation", "two"]).exit_code, 0);
    assert_eq!(
        clone.exec(&["disk-write", "8192", "second-gen"]).exit_code,
        0
    );
    clone.snapshot(&second, true).expect("snapshot of a clone");
    // The first snapshot can go: the second holds everything itself.
    std::fs::remove_dir_all(&first).unwrap();
    let grandchild = TestVm::restore(&second, &[]);
    check_clone(&grandchild, "gen2");
    assert_eq!(
        grandchild.exec(&["mem-get", "generation"]).stdout.trim(),
        "two"
    );
    assert_eq!(
        grandchild.exec(&["disk-read", "8192", "10"]).stdout,
        "second-gen"
    );
}
