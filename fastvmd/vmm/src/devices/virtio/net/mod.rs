//! virtio-net with a tap backend and the ingress firewall in its receive
//! path: every frame read from the tap is judged by the VM's
//! [`LivePolicy`](crate::net::firewall::LivePolicy) before it reaches a
//! guest buffer; frames the guest sends go to the tap as they are.
//!
//! Layout: `device` holds the [`Net`] device, its
//! [`VirtioDevice`](super::VirtioDevice) implementation and its backend
//! thread; `rxtx` moves frames between the tap and the queues; `persist`
//! its snapshot state ([`NetState`], [`Net::restore`]).

mod device;
pub mod fuzz;
mod persist;
mod rxtx;
#[cfg(test)]
mod tests;

pub use device::{Net, NetHandle};
pub use persist::NetState;

use std::io;

/// Why the net device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Creating the epoll instance or the kick eventfd, or registering them.
    #[error("virtio-net event setup: {0}")]
    EventSetup(io::Error),
    /// Spawning the backend thread failed.
    #[error("spawning the virtio-net backend thread: {0}")]
    Thread(io::Error),
    /// The firewall policy does not compile.
    #[error("firewall policy: {0}")]
    Policy(#[from] crate::net::firewall::PolicyError),
}
