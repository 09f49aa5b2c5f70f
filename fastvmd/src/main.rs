//! `fastvmd`: the FastVM daemon and monitor command line.

fn main() {}
