//! `fastvm-tui`: the terminal dashboard of `fastvmd` (see the crate docs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Live dashboard for fastvmd: VMs, snapshots, quotas, exec and an inline console.
#[derive(Debug, Parser)]
#[command(name = "fastvm-tui", version)]
struct Args {
    /// The daemon's socket (default: $FASTVM_SOCKET, else fastvmd.sock in
    /// $FASTVM_HOME, /var/lib/fastvm as root, or ~/.local/share/fastvm).
    #[arg(long)]
    socket: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let socket = args.socket.unwrap_or_else(fastvm_tui::run::default_socket);
    match fastvm_tui::run::run(socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fastvm-tui: {e}");
            ExitCode::FAILURE
        }
    }
}
