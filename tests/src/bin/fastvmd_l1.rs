//! `fastvmd` itself, built by this crate so the nested Linux test always
//! boots L1 with the current daemon (`CARGO_BIN_EXE_fastvmd-l1`).

fn main() -> std::process::ExitCode {
    fastvmd::cli::main()
}
