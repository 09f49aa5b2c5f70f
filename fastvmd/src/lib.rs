//! FastVM daemon library: the per-VM monitor (`vmm`), the host side of the
//! guest agent protocol (`agent`), and what the daemon builds on them.

pub mod agent;
pub mod auth;
pub mod call;
pub mod service;
pub mod socket;
pub mod store;
pub mod supervisor;
pub mod vmm;

/// Path of the test guest ELF built alongside this crate.
pub const TEST_GUEST_PATH: &str = env!("FASTVM_TEST_GUEST");
