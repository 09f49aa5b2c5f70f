//! `guest-agent`: PID 1 of FastVM Linux guests.
//!
//! It mounts the basic filesystems, reaps orphans, sets the hostname,
//! brings up `lo`, keeps a login shell on the serial console, and serves
//! the agent protocol (`fastvm_proto::agent`) on vsock port `AGENT_PORT`:
//! `Ready` on connect, `Ping`/`Pong`, `Exec` (see [`exec`]), streams
//! (execs with live output and a terminal, files, forwards: see
//! [`stream_dispatch`]), and the
//! clock and network the host sets ([`network`], applied over rtnetlink by
//! [`rtnl`], with no tool from the image). The root file system
//! takes its whole disk ([`grow_root`]).
//!
//! The protocol engine ([`session`]) works over any byte stream; the vsock
//! listener in the guest and the Unix-socket listener used by the tests are
//! thin layers over it ([`listen`]).

pub mod command;
pub mod exec;
pub mod grow_root;
pub mod inbox;
pub mod init;
pub mod listen;
pub mod network;
pub mod output;
pub mod pty;
pub mod reaper;
pub mod rtnl;
pub mod rtnl4;
pub mod session;
pub mod stream_dispatch;
pub mod stream_exec;
pub mod stream_exec_output;
pub mod stream_file_read;
pub mod stream_file_write;
pub mod stream_files;
pub mod stream_forward;
pub mod stream_input;
pub mod stream_stdin;
pub mod streams;
pub mod terminal_session;
pub mod user;
