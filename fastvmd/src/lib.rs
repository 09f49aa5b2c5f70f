//! FastVM daemon library: the per-VM monitor (`vmm`), the host side of the
//! guest agent protocol (`agent`), and the daemon built on them: store,
//! supervisor, the operation layer (`service`) and its two front ends
//! (`api` over HTTP, `socket` over the local Unix socket).

pub mod agent;
pub mod agent_async;
pub mod agent_stream;
pub mod api;
pub mod auth;
pub mod bench;
pub mod call;
pub mod cli;
pub mod fuzzing;
pub mod http_server;
pub mod image;
pub mod image_cli;
pub mod nested;
pub mod net;
pub mod private_files;
pub mod serve;
pub mod service;
pub mod socket;
pub mod socket_wait;
pub mod store;
pub mod supervisor;
pub mod user_cli;
pub use fastvm_vmm as vmm;

/// Path of the test guest ELF built alongside this crate.
pub const TEST_GUEST_PATH: &str = env!("FASTVM_TEST_GUEST");
