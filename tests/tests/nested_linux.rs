//! The Linux guest, end to end, on any host: boots L1 under QEMU with
//! emulated AMD SVM and runs the whole scenario there (`fastvm_tests::
//! scenario`) against real Linux VMs. Prints `SKIP` with the reason where
//! QEMU, the L1 kernel or the guest image is missing, unless
//! `FASTVM_NESTED=require` (CI), where that fails the test.

use std::time::Duration;

use fastvm_tests::l1::{self, L1_SCENARIO};
use fastvm_tests::report::{self, DETAIL, PASS};
use fastvmd::nested::NestedError;

/// One run's limit: L1 boot, two Linux VMs, snapshot, restart, delete.
const TIMEOUT: Duration = Duration::from_secs(12 * 60);

/// Every step the scenario must report as passed.
const STEPS: &[&str] = &[
    "daemon-start",
    "create",
    "exec-echo",
    "exec-exit-code-and-stderr",
    "exec-output-cap",
    "exec-timeout-kills-tree",
    "exec-stream-live",
    "exec-stream-tty",
    "exec-stream-disconnect",
    "port-forward",
    "grown-disk",
    "console",
    "network",
    "ipv4",
    "firewall",
    "egress",
    "guest-kernel-log",
    "snapshot",
    "clone",
    "clone-identity",
    "clone-grown-disk",
    "diverge",
    "jailed",
    "daemon-restart",
    "delete",
    "imported-image",
    "debian-userland",
    "file-round-trip",
    "never-error",
    "seccomp-clean",
];

/// What L1's own kernel prints when it dies: not a step of ours failing,
/// but the emulated machine under everything (QEMU's SVM emulation has
/// been seen to crash Debian's kernel in a vCPU thread).
const L1_PANIC: &str = "Kernel panic - not syncing";

/// Whether `outcome` is L1's kernel dying before any step failed.
fn l1_panicked(outcome: &fastvmd::nested::qemu::L1Outcome) -> bool {
    let console = std::fs::read(&outcome.console).unwrap_or_default();
    String::from_utf8_lossy(&console).contains(L1_PANIC)
        && !outcome.results.lines().any(|l| l.contains(" FAIL "))
}

/// Written to stderr directly, past the test harness's capture, so a long
/// run shows its steps as they pass (in CI too).
fn progress(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "nested: {line}");
}

#[test]
fn linux_guests_pass_the_whole_scenario_in_nested_l1() {
    let test = "linux_guests_pass_the_whole_scenario_in_nested_l1";
    let scenario = std::path::Path::new(env!("CARGO_BIN_EXE_nested-scenario"));
    let prepared = fastvmd::nested::l1::prepare(
        std::path::Path::new(env!("CARGO_BIN_EXE_fastvmd-l1")),
        std::path::Path::new(env!("CARGO_BIN_EXE_fastvm-vmm-l1")),
        &[(scenario, L1_SCENARIO)],
        L1_SCENARIO,
        TIMEOUT,
        &progress,
    );
    let prepared = match prepared {
        Ok(p) => p,
        Err(NestedError::Missing(why)) if !l1::required() => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
            return;
        }
        Err(e) => panic!("cannot prepare L1: {e}"),
    };
    let mut outcome = prepared
        .run(&mut |line| progress(line))
        .unwrap_or_else(|e| panic!("L1 did not run: {e}"));
    if l1_panicked(&outcome) {
        // Once, and said aloud: the scenario must then pass whole.
        let kept = outcome.console.with_file_name("l1-console-panicked.log");
        let _ = std::fs::copy(&outcome.console, &kept);
        progress(&format!(
            "L1's own kernel panicked before any step failed (kept in {}):\n{}\n\
             nested: running the whole scenario once more",
            kept.display(),
            outcome.console_tail(25)
        ));
        outcome = prepared
            .run(&mut |line| progress(line))
            .unwrap_or_else(|e| panic!("L1 did not run: {e}"));
    }
    let console = outcome.console_tail(60);
    let steps: Vec<report::Step> = outcome
        .results
        .lines()
        .filter_map(report::parse_step)
        .collect();
    let passed = outcome.results.lines().any(|l| l == PASS);
    let all_ok = STEPS
        .iter()
        .all(|want| steps.iter().any(|s| s.name == *want && s.outcome.is_ok()));
    if passed && all_ok {
        progress(&format!("scenario passed in {:.0?}", outcome.elapsed));
        return;
    }
    let failures: Vec<String> = outcome
        .results
        .lines()
        .filter(|l| l.contains(" FAIL ") || l.starts_with(DETAIL))
        .map(str::to_string)
        .collect();
    let missing: Vec<&&str> = STEPS
        .iter()
        .filter(|want| !steps.iter().any(|s| s.name == **want))
        .collect();
    let came_up = outcome.results.lines().any(|l| l.starts_with("L1 UP"));
    let workdir = prepared.keep();
    panic!(
        "nested Linux scenario failed{}{}\n\
         failures:\n{}\nsteps not reported: {missing:?}\npayload exit: {:?}, QEMU: {:?} \
         after {:.0?}\nL1 console (last lines):\n{console}\nlogs kept in {}",
        if came_up { "" } else { ": L1 never came up" },
        if outcome.qemu_exit.is_none() {
            " (timed out)"
        } else {
            ""
        },
        failures.join("\n"),
        outcome.payload_exit,
        outcome.qemu_exit,
        outcome.elapsed,
        workdir.display(),
    );
}
