//! The lines the scenario writes and the host side reads:
//!
//! ```text
//! STEP <name> ok <ms>
//! STEP <name> FAIL <message>
//! | <detail line>                      (after a FAIL: console and log tails)
//! SCENARIO PASS | SCENARIO FAIL <name>
//! ```

/// Starts every step line.
pub const STEP: &str = "STEP ";
/// Starts a detail line that follows a failure.
pub const DETAIL: &str = "| ";
/// The scenario's last line when every step passed.
pub const PASS: &str = "SCENARIO PASS";
/// The scenario's last line when a step failed (followed by its name).
pub const FAIL: &str = "SCENARIO FAIL ";

/// One reported step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    /// `Ok(ms)` or `Err(message)`.
    pub outcome: Result<u64, String>,
}

/// The step a `STEP ...` line reports.
pub fn parse_step(line: &str) -> Option<Step> {
    let rest = line.strip_prefix(STEP)?;
    let (name, rest) = rest.split_once(' ')?;
    let outcome = if let Some(ms) = rest.strip_prefix("ok ") {
        Ok(ms.trim().parse().ok()?)
    } else {
        Err(rest.strip_prefix("FAIL ")?.to_string())
    };
    Some(Step {
        name: name.to_string(),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_and_rejects_other_lines() {
        assert_eq!(
            parse_step("STEP create ok 4012"),
            Some(Step {
                name: "create".into(),
                outcome: Ok(4012)
            })
        );
        assert_eq!(
            parse_step("STEP network FAIL eth0 is down").map(|s| s.outcome),
            Some(Err("eth0 is down".into()))
        );
        assert_eq!(parse_step("STEP x maybe"), None);
        assert_eq!(parse_step("[ 1.0] kernel"), None);
    }
}
