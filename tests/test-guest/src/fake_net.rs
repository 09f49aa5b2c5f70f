//! A scripted [`Network`] for host tests: connections stay where the test
//! puts them, take what their room allows, and hand out what the test
//! queued for them.

use std::collections::VecDeque;
use std::string::String;
use std::vec::Vec;

use core::net::{IpAddr, SocketAddr};

use crate::network::{Handle, Network, Owner, TcpState};

/// One connection as the test sees it.
pub struct FakeConn {
    pub to: SocketAddr,
    pub owner: Owner,
    pub state: TcpState,
    /// What the program sent.
    pub sent: Vec<u8>,
    /// How many more bytes `send` takes.
    pub room: usize,
    /// What `recv` hands out.
    pub inbox: VecDeque<u8>,
}

/// The fake network.
#[derive(Default)]
pub struct FakeNet {
    pub conns: Vec<FakeConn>,
    /// `connect` and `ping` fail with this, when set.
    pub refuse: Option<String>,
    /// Pings started, and whether each is answered.
    pub pings: Vec<(IpAddr, Owner, bool)>,
}

impl FakeNet {
    /// The only connection.
    pub fn conn(&mut self) -> &mut FakeConn {
        assert_eq!(self.conns.len(), 1, "one connection");
        &mut self.conns[0]
    }
}

impl Network for FakeNet {
    fn connect(&mut self, to: SocketAddr) -> Result<Handle, String> {
        if let Some(why) = &self.refuse {
            return Err(why.clone());
        }
        let (handle, owner) = Handle::new(self.conns.len());
        self.conns.push(FakeConn {
            to,
            owner,
            state: TcpState::Connecting,
            sent: Vec::new(),
            room: usize::MAX,
            inbox: VecDeque::new(),
        });
        Ok(handle)
    }

    fn state(&mut self, conn: &Handle) -> TcpState {
        let c = &self.conns[conn.id()];
        match c.state {
            TcpState::PeerClosed if !c.inbox.is_empty() => TcpState::Open,
            state => state,
        }
    }

    fn send(&mut self, conn: &Handle, bytes: &[u8]) -> usize {
        let c = &mut self.conns[conn.id()];
        let n = bytes.len().min(c.room);
        c.sent.extend_from_slice(&bytes[..n]);
        c.room -= n;
        n
    }

    fn recv(&mut self, conn: &Handle, buf: &mut [u8]) -> usize {
        let c = &mut self.conns[conn.id()];
        let n = buf.len().min(c.inbox.len());
        for (b, byte) in buf.iter_mut().zip(c.inbox.drain(..n)) {
            *b = byte;
        }
        n
    }

    fn ping(&mut self, to: IpAddr) -> Result<Handle, String> {
        if let Some(why) = &self.refuse {
            return Err(why.clone());
        }
        let (handle, owner) = Handle::new(self.pings.len());
        self.pings.push((to, owner, false));
        Ok(handle)
    }

    fn ping_replied(&mut self, ping: &Handle) -> bool {
        self.pings[ping.id()].2
    }
}
