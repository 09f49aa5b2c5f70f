//! fastvm-tui
fn main() {}
