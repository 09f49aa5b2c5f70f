//! `fastvmd`: the FastVM daemon and monitor command line ([`fastvmd::cli`]).

fn main() -> std::process::ExitCode {
    fastvmd::cli::main()
}
