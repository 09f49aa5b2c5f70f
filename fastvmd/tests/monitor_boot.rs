//! The monitor boots the test guest through the Linux boot path: the guest's
//! checks of boot_params, e820, MP table, command line and CPUID pass, the
//! ready line reaches console.sock, and the console echoes.

mod common;

use std::time::Duration;

use common::{TestVm, VmOpts, can_run_vms, type_into};

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

#[test]
fn boot_checks_pass_and_ready_line_appears() {
    if !can_run_vms("boot_checks_pass_and_ready_line_appears") {
        return;
    }
    let vm = TestVm::start(VmOpts {
        vcpus: 3,
        memory_mib: 192,
        ..VmOpts::default()
    });
    let text = vm.wait_ready();
    for check in ["e820", "mptable", "cmdline", "cpuid"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("boot-check {check} ")))
            .unwrap_or_else(|| panic!("no {check} check in:\n{text}"));
        assert!(
            line.starts_with(&format!("boot-check {check} ok")),
            "{line}"
        );
    }
    let mp = text
        .lines()
        .find(|l| l.contains("boot-check mptable"))
        .unwrap();
    assert_eq!(field(mp, "cpus"), Some(3), "one MP entry per vCPU: {mp}");
    let e820 = text
        .lines()
        .find(|l| l.contains("boot-check e820"))
        .unwrap();
    let ram = field(e820, "ram_mib").expect("ram_mib");
    assert!(
        (190..=192).contains(&ram),
        "e820 RAM {ram} MiB for a 192 MiB guest"
    );
    let cpuid = text
        .lines()
        .find(|l| l.contains("boot-check cpuid"))
        .unwrap();
    assert!(field(cpuid, "tsc_khz").unwrap_or(0) > 0, "{cpuid}");
}

#[test]
fn console_echoes_input_and_replays_history_to_new_clients() {
    if !can_run_vms("console_echoes_input_and_replays_history_to_new_clients") {
        return;
    }
    let vm = TestVm::start(VmOpts::default());
    vm.wait_ready();
    let mut console = vm.console();
    TestVm::read_until(&mut console, "ready", Duration::from_secs(5));
    type_into(&mut console, "echo-me-42");
    let echoed = TestVm::read_until(&mut console, "echo-me-42", Duration::from_secs(5));
    assert!(echoed.contains("echo-me-42"), "echo missing: {echoed:?}");
    // A second client sees history (ready line and the echo) first.
    let mut late = vm.console();
    let history = TestVm::read_until(&mut late, "echo-me-42", Duration::from_secs(5));
    assert!(history.contains("fastvm-test-guest ready"), "{history:?}");
    assert!(history.contains("echo-me-42"), "{history:?}");
    // Both clients see new output.
    type_into(&mut late, "second-client");
    for c in [&mut console, &mut late] {
        let got = TestVm::read_until(c, "second-client", Duration::from_secs(5));
        assert!(got.contains("second-client"), "{got:?}");
    }
}

/// A paste far larger than the UART's FIFO reaches the guest whole and in
/// order: the console holds what the FIFO cannot take yet and offers it
/// again as the guest reads.
#[test]
fn a_console_paste_larger_than_the_fifo_arrives_whole() {
    if !can_run_vms("a_console_paste_larger_than_the_fifo_arrives_whole") {
        return;
    }
    let vm = TestVm::start(VmOpts::default());
    vm.wait_ready();
    let mut console = vm.console();
    TestVm::read_until(&mut console, "ready", Duration::from_secs(5));
    let paste: String = (0..600).map(|i| format!("{i:04}")).collect::<String>() + "-end-of-paste";
    type_into(&mut console, &paste);
    let echoed = TestVm::read_until(&mut console, "-end-of-paste", Duration::from_secs(20));
    assert!(
        echoed.contains(&paste),
        "{} of {} bytes came back: {:?}",
        echoed.len(),
        paste.len(),
        &echoed[echoed.len().saturating_sub(200)..]
    );
}
