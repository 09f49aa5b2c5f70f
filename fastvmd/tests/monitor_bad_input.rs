//! Bad input to `fastvmd vmm`: one clear line on stderr, a non-zero exit,
//! quickly — never a panic or a hang.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{TestVm, VmOpts, can_run_vms, run_fastvmd, test_guest};

fn expect_refusal(args: &[&str], needle: &str) {
    let (status, stderr, took) = run_fastvmd(args);
    assert_eq!(status.code(), Some(1), "args {args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "args {args:?}: {stderr:?} lacks {needle:?}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn each_bad_input_gets_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vm");
    let dir = dir.to_str().unwrap();
    let guest = test_guest();
    let guest = guest.to_str().unwrap();
    let not_elf = tmp.path().join("notes.txt");
    std::fs::File::create(&not_elf)
        .unwrap()
        .write_all(b"just some text, not a kernel\n")
        .unwrap();
    let not_elf = not_elf.to_str().unwrap();
    let base = |kernel: &'static str| -> Vec<String> {
        [
            "vmm",
            "--dir",
            dir,
            "--kernel",
            kernel,
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>, needle: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_refusal(&refs, needle);
    };
    let with = |kernel: &str, extra: &[(&str, &str)]| -> Vec<String> {
        let mut v = base("K");
        v[4] = kernel.to_string();
        for (flag, value) in extra {
            if let Some(i) = v.iter().position(|a| a == flag) {
                v[i + 1] = value.to_string();
            } else {
                v.push(flag.to_string());
                v.push(value.to_string());
            }
        }
        v
    };
    run(
        with("/nonexistent/vmlinux", &[]),
        "--kernel /nonexistent/vmlinux",
    );
    run(with(not_elf, &[]), "neither an ELF vmlinux nor a bzImage");
    run(
        with(guest, &[("--memory-mib", "0")]),
        "--memory-mib must be at least",
    );
    run(
        with(guest, &[("--memory-mib", "100000000")]),
        "more than the host",
    );
    run(
        with(guest, &[("--vcpus", "0")]),
        "--vcpus must be between 1 and 32, got 0",
    );
    run(with(guest, &[("--vcpus", "33")]), "got 33");
    run(
        with(guest, &[("--dir", "/proc/fastvm-test/vm")]),
        "--dir /proc/fastvm-test/vm",
    );
    run(
        with(guest, &[("--disk", "/nonexistent/disk")]),
        "--disk /nonexistent/disk",
    );
    run(
        with(guest, &[("--mac", "02:00:00:00:00:01")]),
        "give --tap too",
    );
    run(
        with(guest, &[("--tap", "bad/name")]),
        "tap name \"bad/name\"",
    );
}

#[test]
fn a_directory_in_use_is_refused() {
    if !can_run_vms("a_directory_in_use_is_refused") {
        return;
    }
    let vm = TestVm::start(VmOpts::default());
    let dir = vm.dir.to_str().unwrap();
    let guest = test_guest();
    expect_refusal(
        &[
            "vmm",
            "--dir",
            dir,
            "--kernel",
            guest.to_str().unwrap(),
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
        ],
        &format!("already used by a live monitor (pid {})", vm.child.id()),
    );
    // The first monitor is unharmed.
    assert_eq!(vm.exec(&["echo", "ok"]).stdout, "ok\n");
}
