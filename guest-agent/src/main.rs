//! `guest-agent`: PID 1 inside Linux guests (exec over vsock, console shell).
//!
//! Not built yet: the agent protocol it will serve is
//! `fastvm_proto::agent`, already spoken by the test guest. Until then this
//! binary says so and exits with status 2.

fn main() -> std::process::ExitCode {
    eprintln!("guest-agent: not built yet; the test guest serves the agent protocol for now");
    std::process::ExitCode::from(2)
}
