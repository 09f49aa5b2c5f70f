//! guest-agent
fn main() {}
