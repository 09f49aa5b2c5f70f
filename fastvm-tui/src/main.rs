//! `fastvm-tui`: the terminal dashboard (VMs, snapshots, quotas, console).
//!
//! Not built yet: it needs the daemon's socket API. Until then it says so
//! and exits with status 2.

fn main() -> std::process::ExitCode {
    eprintln!(
        "fastvm-tui: the dashboard is not built yet; it needs `fastvmd serve` and its socket API"
    );
    std::process::ExitCode::from(2)
}
