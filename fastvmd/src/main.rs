//! `fastvmd`: the FastVM daemon and monitor command line.

mod bench;
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Some((vmm, early_kvm)) = cli::vmm_command() {
        cli::init_tracing();
        return cli::run_vmm(vmm.args, early_kvm);
    }
    let args = cli::Cli::parse();
    cli::init_tracing();
    match args.command {
        cli::Command::Serve(serve) => cli::run_serve(serve),
        cli::Command::Call(call) => cli::run_call(call),
        cli::Command::Vmm(vmm) => cli::run_vmm(vmm, None),
        cli::Command::Bench(bench) => match bench::run(bench) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fastvmd bench: error: {e}");
                ExitCode::FAILURE
            }
        },
        cli::Command::Image(cli::ImageCommand::Build(build)) => cli::run_image_build(build),
        cli::Command::Host => {
            println!("{}", fastvmd::vmm::host::detect().describe());
            ExitCode::SUCCESS
        }
    }
}
