//! `guest-agent`: PID 1 of FastVM Linux guests.
//!
//! It mounts the basic filesystems, reaps orphans, sets the hostname,
//! brings up `lo`, keeps a login shell on the serial console, and serves
//! the agent protocol (`fastvm_proto::agent`) on vsock port `AGENT_PORT`:
//! `Ready` on connect, `Ping`/`Pong`, `Exec` (see [`exec`]), and the
//! clock and network the host sets ([`network`], applied over rtnetlink by
//! [`rtnl`], with no tool from the image). The root file system
//! takes its whole disk ([`grow_root`]).
//!
//! The protocol engine ([`session`]) works over any byte stream; the vsock
//! listener in the guest and the Unix-socket listener used by the tests are
//! thin layers over it ([`listen`]).

pub mod exec;
pub mod grow_root;
pub mod init;
pub mod listen;
pub mod network;
pub mod output;
pub mod reaper;
pub mod rtnl;
pub mod session;
pub mod user;
