//! The host side of the nested scenario: L1 is assembled and booted by
//! [`fastvmd::nested::l1`]; this names where the scenario sits in it and
//! when a missing prerequisite is a failure rather than a skip.

/// Set to `require` (CI does) to fail instead of skipping when something
/// nested Linux needs is missing.
pub const REQUIRE_ENV: &str = "FASTVM_NESTED";
/// Where the scenario binary sits inside L1.
pub const L1_SCENARIO: &str = "/bin/nested-scenario";

/// Whether a missing prerequisite fails the test (CI) instead of skipping.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "require")
}
