//! `fastvm-vmm` itself, built by this crate so the nested Linux test always
//! puts the current monitor into L1 (`CARGO_BIN_EXE_fastvm-vmm-l1`).

fn main() -> std::process::ExitCode {
    fastvm_vmm::cli::main()
}
