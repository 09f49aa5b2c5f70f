//! Pure logic of the FastVM test guest: everything that can be checked on the
//! host with `cargo test` (boot-data parsing, MP table checksums, the built-in
//! commands, the agent connection's execs, streams and files). The hardware
//! side (entry, port I/O, virtio) lives in the binary.

#![no_std]

#[cfg(test)]
extern crate std;

extern crate alloc;

pub mod cmdline;
pub mod commands;
pub mod credit;
pub mod e820;
#[cfg(test)]
mod fake_net;
pub mod fetch;
mod file_cmds;
pub mod files;
pub mod mptable;
pub mod netcfg;
pub mod network;
pub mod outbox;
pub mod ping;
pub mod program;
pub mod session;
pub mod shell;
pub mod wire;
