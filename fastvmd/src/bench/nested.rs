//! `fastvmd bench --linux` on a host that cannot boot Linux: boots nested
//! L1 (QEMU's software emulation with AMD SVM, [`crate::nested`]) with this
//! binary and the guest image, runs `fastvmd bench --linux` there (hardware
//! -style KVM), and returns its rows marked `nested (TCG)`. Absolute times
//! there are those of an emulated CPU; the targets are for hardware KVM.

use std::time::Duration;

use crate::nested::{L1_FASTVMD, l1};

use super::BenchArgs;
use super::boot::Row;

/// The longest a nested benchmark may run.
const TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The table rows in `results` (`| what | result | target |`), without
/// the header and its rule.
fn table_rows(results: &str) -> Vec<Row> {
    results
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split('|')
                .map(str::trim)
                .collect();
            match cells.as_slice() {
                ["measurement", ..] => None,
                [what, ..] if what.starts_with("---") => None,
                [what, result, target] => Some((
                    format!("{what} — nested (TCG)"),
                    result.to_string(),
                    if target.is_empty() {
                        String::new()
                    } else {
                        format!("{target} on hardware KVM")
                    },
                )),
                _ => None,
            }
        })
        .collect()
}

/// Measures the Linux guest inside L1.
pub fn measure(args: &BenchArgs) -> Result<Vec<Row>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let payload = format!(
        "{L1_FASTVMD} bench --linux --boots {} --execs {} --memory-mib {}",
        args.boots, args.execs, args.memory_mib
    );
    let progress = |line: &str| eprintln!("nested: {line}");
    let monitor = crate::supervisor::monitor_program()?;
    let prepared = l1::prepare(&exe, &monitor, &[], &payload, TIMEOUT, &progress)
        .map_err(|e| format!("nested L1: {e}"))?;
    let outcome = prepared
        .run(&mut |line| progress(line))
        .map_err(|e| format!("nested L1: {e}"))?;
    if outcome.payload_exit != Some(0) {
        return Err(format!(
            "the benchmark inside L1 ended with {:?} after {:.0?}; L1 console:\n{}",
            outcome.payload_exit,
            outcome.elapsed,
            outcome.console_tail(40)
        ));
    }
    let rows = table_rows(&outcome.results);
    if rows.is_empty() {
        return Err("the benchmark inside L1 printed no table".into());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_and_marked() {
        let results = "L1 UP 5.1 3.5\n\
                       | measurement | result | target |\n\
                       |---|---|---|\n\
                       | Linux boot to agent ready, median of 5 | 2510.33 ms | ≤ 150 ms |\n\
                       | Linux exec round trip (echo), median | 12.01 ms |  |\n\
                       L1 EXIT 0\n";
        assert_eq!(
            table_rows(results),
            [
                (
                    "Linux boot to agent ready, median of 5 — nested (TCG)".to_string(),
                    "2510.33 ms".to_string(),
                    "≤ 150 ms on hardware KVM".to_string()
                ),
                (
                    "Linux exec round trip (echo), median — nested (TCG)".to_string(),
                    "12.01 ms".to_string(),
                    String::new()
                ),
            ]
        );
    }
}
