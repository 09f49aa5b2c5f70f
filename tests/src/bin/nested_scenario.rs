//! Runs inside L1: drives `fastvmd serve` through the whole Linux guest
//! scenario and reports each step on stdout (the results line).

fn main() -> std::process::ExitCode {
    if fastvm_tests::scenario::run() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
