//! What the built-ins see of the guest's network: outbound TCP connections
//! (and ICMP echo) they start and then drive without blocking, one look at
//! a time from the main loop. The binary's smoltcp stack implements
//! [`Network`]; the host tests use a fake.
//!
//! A connection is named by a [`Handle`]. Dropping the handle (the program
//! ended, was signalled or timed out, or its agent connection went) lets
//! the stack close the connection on its next poll; the stack sees that
//! through the [`Owner`] it kept.

use alloc::rc::{Rc, Weak};
use alloc::string::String;
use core::net::{IpAddr, SocketAddr};

/// The guest's network as a built-in drives it.
pub trait Network {
    /// Starts connecting to `to`; why not, if it cannot even start (no
    /// address of that family, too many connections).
    fn connect(&mut self, to: SocketAddr) -> Result<Handle, String>;
    /// Where connection `conn` stands.
    fn state(&mut self, conn: &Handle) -> TcpState;
    /// Queues as much of `bytes` as there is room for; the bytes taken.
    fn send(&mut self, conn: &Handle, bytes: &[u8]) -> usize;
    /// Reads what arrived into `buf`; the bytes read (0: nothing now).
    fn recv(&mut self, conn: &Handle, buf: &mut [u8]) -> usize;
    /// Starts pinging `to` (an ICMP echo request now and then).
    fn ping(&mut self, to: IpAddr) -> Result<Handle, String> {
        let _ = to;
        Err(String::from("ping is not supported"))
    }
    /// Whether ping `ping` got its reply.
    fn ping_replied(&mut self, ping: &Handle) -> bool {
        let _ = ping;
        false
    }
    /// Moves to the addresses and gateways of `config` (a clone's, sent in
    /// `setNetwork`); nothing changes when they are the ones in use.
    fn reconfigure(&mut self, config: crate::netcfg::NetConfig) -> Result<(), String> {
        let _ = config;
        Err(String::from("this network cannot be reconfigured"))
    }
}

/// Where a TCP connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// The handshake is under way.
    Connecting,
    /// Connected: data may come.
    Open,
    /// The peer closed its side and everything it sent has been read.
    PeerClosed,
    /// It failed: `connection refused`, `connection reset by peer`, ...
    Failed(&'static str),
}

/// A connection as its program holds it.
#[derive(Debug)]
pub struct Handle {
    id: usize,
    _alive: Rc<()>,
}

/// A connection as the stack keeps it: tells when its [`Handle`] is gone.
#[derive(Debug)]
pub struct Owner(Weak<()>);

impl Handle {
    /// A new handle with the stack's `id` for it, and its [`Owner`].
    pub fn new(id: usize) -> (Handle, Owner) {
        let alive = Rc::new(());
        let owner = Owner(Rc::downgrade(&alive));
        (Handle { id, _alive: alive }, owner)
    }

    /// The stack's id for it.
    pub fn id(&self) -> usize {
        self.id
    }
}

impl Owner {
    /// Whether the handle was dropped.
    pub fn released(&self) -> bool {
        self.0.strong_count() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_sees_the_handle_go() {
        let (handle, owner) = Handle::new(7);
        assert_eq!(handle.id(), 7);
        assert!(!owner.released());
        drop(handle);
        assert!(owner.released());
    }
}
