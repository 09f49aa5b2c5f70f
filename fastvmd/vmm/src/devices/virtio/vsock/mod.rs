//! virtio-vsock: a userspace vsock device whose host side is a Unix socket.
//!
//! The model is Firecracker's hybrid vsock:
//! - a host process connects to the Unix listener at `uds_path`, writes
//!   `CONNECT <port>\n` and, once the guest accepted the connection, reads
//!   `OK <local_port>\n`; after that the stream carries the connection's bytes;
//! - a guest connecting to host CID 2, port `P`, is connected to the Unix
//!   socket `{uds_path}_{P}`.
//!
//! Layout: `packet` holds the wire constants and an owned header,
//! `connection` one connection's state machine and flow control, `muxer`
//! the set of connections plus the listener, `queues` the virtqueue side, and
//! `device` the [`Vsock`] device, its [`VirtioDevice`](super::VirtioDevice)
//! implementation and its backend thread, `persist` its snapshot state
//! ([`VsockState`], [`Vsock::restore`]).

mod connection;
mod device;
pub mod fuzz;
mod muxer;
mod packet;
mod persist;
mod queues;
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use device::{Vsock, VsockResetHandle};
pub use muxer::CidDrops;
pub use persist::VsockState;

/// Why the vsock device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The guest CID is reserved (0, 1, 2 and `u32::MAX` are not guest CIDs)
    /// or does not fit in the 32 bits Linux uses.
    #[error("invalid guest CID {0}")]
    InvalidCid(u64),
    /// Binding the host Unix listener at the given path failed.
    #[error("binding vsock socket {path}: {source}")]
    Bind {
        /// The listener path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Creating the epoll instance or the wake-up eventfd, or registering the
    /// listener with epoll, failed.
    #[error("vsock event setup: {0}")]
    EventSetup(io::Error),
    /// Spawning the backend thread failed.
    #[error("spawning the vsock backend thread: {0}")]
    Thread(io::Error),
}
