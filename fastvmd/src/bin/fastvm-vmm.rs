//! `fastvm-vmm`: one VM's monitor, the program `fastvmd serve` starts for
//! each VM. It uses the monitor crate ([`fastvm_vmm::cli`]) and nothing of
//! the daemon, so it links no HTTP, SQLite or terminal code.

fn main() -> std::process::ExitCode {
    fastvm_vmm::cli::main()
}
