//! `net-fetch ADDR PORT [REQUEST...]`: a TCP client run from the guest.
//! It connects to ADDR (an IPv4 or IPv6 literal) port PORT, sends the
//! REQUEST words joined by spaces and `\r\n\r\n` (`GET / HTTP/1.0\r\n\r\n`
//! without them), and prints what comes back until the peer closes (exit
//! 0). A failure is one line on stderr and exit 1; a usage error exit 2.
//! It never blocks: the main loop drives it through [`Fetch::on_net`], and
//! it gives up after [`TIMEOUT_MS`] without progress.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};

use fastvm_proto::agent_stream::{CHANNEL_ERR, CHANNEL_OUT};

use crate::network::{Handle, Network, TcpState};
use crate::program::Console;

/// It gives up after this long without connecting, sending or receiving (ms).
pub const TIMEOUT_MS: u64 = 10_000;
/// Most bytes of the answer it prints; the rest is read and dropped.
pub const MAX_OUTPUT: usize = 1 << 20;
/// The request sent when the command line gives none.
pub const DEFAULT_REQUEST: &str = "GET / HTTP/1.0";
/// Bytes read at a time.
const READ_CHUNK: usize = 4096;
/// Its usage line.
pub const USAGE: &str = "test-guest: usage: net-fetch ADDR PORT [REQUEST...] \
                         (ADDR an IPv4 or IPv6 literal, PORT 1-65535)\n";

/// A running `net-fetch`.
#[derive(Debug)]
pub struct Fetch {
    to: SocketAddr,
    request: Vec<u8>,
    sent: usize,
    conn: Option<Handle>,
    connected: bool,
    out: Capped,
    /// When it last made progress (ms).
    since: u64,
}

/// The answer as printed: at most [`MAX_OUTPUT`] bytes.
#[derive(Debug, Default)]
struct Capped {
    kept: usize,
    dropped: bool,
}

impl Capped {
    fn write(&mut self, bytes: &[u8], con: &mut dyn Console) {
        let n = bytes.len().min(MAX_OUTPUT - self.kept);
        con.write(CHANNEL_OUT, &bytes[..n]);
        self.kept += n;
        if n < bytes.len() && !self.dropped {
            self.dropped = true;
            con.dropped(CHANNEL_OUT);
        }
    }
}

/// The address, port and request bytes of `net-fetch`'s arguments.
pub fn parse_args(args: &[String]) -> Option<(SocketAddr, Vec<u8>)> {
    let [addr, port, words @ ..] = args else {
        return None;
    };
    let host = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']'));
    let addr: IpAddr = host.unwrap_or(addr).parse().ok()?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let mut request = if words.is_empty() {
        String::from(DEFAULT_REQUEST)
    } else {
        words.join(" ")
    };
    request.push_str("\r\n\r\n");
    Some((SocketAddr::new(addr, port), request.into_bytes()))
}

/// Writes `test-guest: net-fetch: WHY` on stderr; exit code 1.
fn fail(con: &mut dyn Console, why: &str) -> i32 {
    con.write(
        CHANNEL_ERR,
        format!("test-guest: net-fetch: {why}\n").as_bytes(),
    );
    1
}

impl Fetch {
    /// A fetch of `request` from `to`, started at `now` (ms); it connects
    /// on its first [`Fetch::on_net`].
    pub fn new(to: SocketAddr, request: Vec<u8>, now: u64) -> Self {
        Fetch {
            to,
            request,
            sent: 0,
            conn: None,
            connected: false,
            out: Capped::default(),
            since: now,
        }
    }

    /// When it gives up unless it makes progress first.
    pub fn deadline(&self) -> u64 {
        self.since.saturating_add(TIMEOUT_MS)
    }

    /// Its deadline passed: it reports the timeout; its exit code.
    pub fn on_time(&mut self, con: &mut dyn Console) -> i32 {
        let secs = TIMEOUT_MS / 1000;
        if self.connected {
            fail(con, &format!("timed out after {secs} s without data"))
        } else {
            fail(con, &format!("timed out after {secs} s"))
        }
    }

    /// Moves the connection on at `now` (ms) over `net` (none: the guest
    /// has no network); the exit code once it ends.
    pub fn on_net(
        &mut self,
        net: Option<&mut (dyn Network + '_)>,
        now: u64,
        con: &mut dyn Console,
    ) -> Option<i32> {
        let Some(net) = net else {
            return Some(fail(con, "no network (no NIC configured)"));
        };
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => match net.connect(self.to) {
                Ok(conn) => conn,
                Err(why) => return Some(fail(con, &why)),
            },
        };
        let code = self.drive(net, &conn, now, con);
        self.conn = Some(conn);
        code
    }

    fn drive(
        &mut self,
        net: &mut dyn Network,
        conn: &Handle,
        now: u64,
        con: &mut dyn Console,
    ) -> Option<i32> {
        match net.state(conn) {
            TcpState::Connecting => return None,
            TcpState::Failed(why) => return Some(fail(con, why)),
            TcpState::Open | TcpState::PeerClosed => {}
        }
        if !self.connected {
            self.connected = true;
            self.since = now;
        }
        if self.sent < self.request.len() {
            let n = net.send(conn, &self.request[self.sent..]);
            if n > 0 {
                self.sent += n;
                self.since = now;
            }
        }
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let n = net.recv(conn, &mut buf);
            if n == 0 {
                break;
            }
            self.since = now;
            self.out.write(&buf[..n], con);
        }
        match net.state(conn) {
            TcpState::PeerClosed => Some(0),
            TcpState::Failed(why) => Some(fail(con, why)),
            TcpState::Connecting | TcpState::Open => None,
        }
    }
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
