//! A snapshot that cannot be trusted is refused with one clear line, and no
//! clone is left half-started.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestVm, VmOpts, can_run_vms, run_fastvmd};

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn refuse(snap: &Path, extra: &[&str], needle: &str) {
    let dir = snap.with_extension("clone");
    let mut args = vec![
        "vmm",
        "--restore",
        snap.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (status, stderr, took) = run_fastvmd(&args);
    assert_eq!(status.code(), Some(1), "{needle}: {stderr}");
    assert!(stderr.contains(needle), "{stderr:?} lacks {needle:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(took < Duration::from_secs(5));
    assert!(!dir.join("control.sock").exists(), "no half-started clone");
}

fn edit_manifest(snap: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = snap.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
}

#[test]
fn untrustworthy_snapshots_are_refused() {
    if !can_run_vms("untrustworthy_snapshots_are_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let vm = TestVm::start(VmOpts::default());
    vm.snapshot(&good, true).expect("snapshot");
    drop(vm);
    let case = |name: &str| -> PathBuf {
        let dir = tmp.path().join(name);
        copy_dir(&good, &dir);
        dir
    };

    let s = case("version");
    edit_manifest(&s, |m| m["formatVersion"] = 999.into());
    refuse(&s, &[], "format version 999");

    let s = case("fingerprint");
    edit_manifest(&s, |m| m["cpuFingerprint"] = "GenuineToaster-0-0-0".into());
    refuse(&s, &[], "fingerprint");

    let s = case("checksum");
    let mut state = fs::read(s.join("vmstate")).unwrap();
    let last = state.len() - 1;
    state[last] ^= 0xff;
    fs::write(s.join("vmstate"), state).unwrap();
    refuse(&s, &[], "checksum");

    let s = case("missing");
    fs::remove_file(s.join("disk")).unwrap();
    refuse(&s, &[], "disk");

    let s = case("truncated-state");
    let state = fs::read(s.join("vmstate")).unwrap();
    fs::write(s.join("vmstate"), &state[..state.len() / 2]).unwrap();
    refuse(&s, &[], "vmstate");

    let s = case("short-memory");
    let memory = fs::OpenOptions::new()
        .write(true)
        .open(s.join("memory"))
        .unwrap();
    memory.set_len(1 << 20).unwrap();
    refuse(&s, &[], "memory");

    let s = case("no-manifest");
    fs::remove_file(s.join("manifest.json")).unwrap();
    refuse(&s, &[], "manifest.json");

    refuse(&good, &["--disk-gib", "0"], "--disk-gib must be at least 1");
    let (status, stderr, _) = run_fastvmd(&[
        "vmm",
        "--restore",
        "/nonexistent/snap",
        "--dir",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/snap"), "{stderr}");
}

#[test]
fn a_smaller_disk_is_refused() {
    if !can_run_vms("a_smaller_disk_is_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let vm = TestVm::start(VmOpts {
        disk_mib: 2048,
        ..VmOpts::default()
    });
    vm.snapshot(&snap, true).expect("snapshot");
    refuse(&snap, &["--disk-gib", "1"], "shrink");
}
