//! `guest-agent` entry point.
//!
//! - As PID 1 (the guest's `/sbin/init`): sets the guest up, keeps a shell
//!   on the console and serves the agent protocol on vsock. Other
//!   arguments are ignored (the kernel passes unknown command-line words to
//!   init); two options exist for running it as PID 1 of a namespace:
//!   `--unix PATH` serves on a Unix socket instead of vsock, and
//!   `--console DEV` (or `none`) replaces `/dev/ttyS0`.
//! - `guest-agent --unix PATH`: serves the protocol on a Unix socket, as a
//!   child subreaper so orphans of its commands are reaped (tests, hosts).
//! - `guest-agent --vsock [PORT]`: serves on vsock without the PID 1 duties.

use std::process::ExitCode;

use fastvm_proto::agent::AGENT_PORT;
use guest_agent::session::Options;
use guest_agent::{grow_root, init, listen, network, reaper};

const USAGE: &str = "usage: guest-agent (as PID 1) | --unix PATH | --vsock [PORT]";

fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag; no memory involved.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        eprintln!(
            "guest-agent: cannot become a child subreaper: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The value after `flag` in `args`, if any.
fn option<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.windows(2).find(|w| w[0] == flag).map(|w| w[1])
}

fn run_as_init(args: &[&str]) -> ExitCode {
    // Bound before the mounts: a socket under /tmp or /run stays reachable
    // from outside once PID 1 has mounted its own tmpfs over them.
    let unix = match option(args, "--unix") {
        Some(path) => match listen::bind_unix(std::path::Path::new(path)) {
            Ok(listener) => Some((path, listener)),
            Err(e) => {
                eprintln!("guest-agent: {path}: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    init::setup();
    reaper::start();
    match option(args, "--console") {
        Some("none") => {}
        Some(dev) => init::spawn_console_shell(dev.into()),
        None => init::spawn_console_shell(init::CONSOLE.into()),
    }
    match unix {
        // PID 1 of a namespace on a host: the wall clock is the host's.
        // Its network namespace is its own, so it may configure `eth0`.
        Some((path, listener)) => match listen::serve_listener(
            listener,
            Options {
                set_clock: false,
                network_device: Some(network::DEVICE),
            },
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("guest-agent: {path}: {e}");
                ExitCode::FAILURE
            }
        },
        None => {
            network::configure_from_cmdline();
            grow_root::start();
            listen::serve_vsock(
                AGENT_PORT,
                Options {
                    set_clock: true,
                    network_device: Some(network::DEVICE),
                },
            )
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if std::process::id() == 1 {
        return run_as_init(&args);
    }
    match args.as_slice() {
        ["--unix", path] => {
            become_subreaper();
            reaper::start();
            match listen::serve_unix(std::path::Path::new(path), Options::default()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("guest-agent: {path}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        ["--vsock"] | ["--vsock", _] => {
            let port = match args.get(1).map(|p| p.parse::<u32>()) {
                None => AGENT_PORT,
                Some(Ok(p)) => p,
                Some(Err(_)) => {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                }
            };
            become_subreaper();
            reaper::start();
            listen::serve_vsock(port, Options::default())
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
