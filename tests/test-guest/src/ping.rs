//! `net-ping ADDR`: ICMP echo from the guest to ADDR (an IPv4 or IPv6
//! literal). It prints `reply from ADDR` at the first reply and exits 0,
//! or exits 1 after [`TIMEOUT_MS`] without one; a usage error exits 2.
//! Driven by the main loop like [`crate::fetch`].

use alloc::format;
use alloc::string::String;
use core::net::IpAddr;

use fastvm_proto::agent_stream::{CHANNEL_ERR, CHANNEL_OUT};

use crate::network::{Handle, Network};
use crate::program::Console;

/// How long it waits for a reply (ms).
pub const TIMEOUT_MS: u64 = 5_000;
/// Its usage line.
pub const USAGE: &str = "test-guest: usage: net-ping ADDR (an IPv4 or IPv6 literal)\n";

/// A running `net-ping`.
#[derive(Debug)]
pub struct Ping {
    to: IpAddr,
    ping: Option<Handle>,
    until: u64,
}

/// The address of `net-ping`'s arguments.
pub fn parse_args(args: &[String]) -> Option<IpAddr> {
    match args {
        [addr] => addr.parse().ok(),
        _ => None,
    }
}

fn fail(con: &mut dyn Console, why: &str) -> i32 {
    con.write(
        CHANNEL_ERR,
        format!("test-guest: net-ping: {why}\n").as_bytes(),
    );
    1
}

impl Ping {
    /// A ping of `to` started at `now` (ms); it starts on its first
    /// [`Ping::on_net`].
    pub fn new(to: IpAddr, now: u64) -> Self {
        Ping {
            to,
            ping: None,
            until: now.saturating_add(TIMEOUT_MS),
        }
    }

    /// When it gives up.
    pub fn deadline(&self) -> u64 {
        self.until
    }

    /// No reply in time; its exit code.
    pub fn on_time(&mut self, con: &mut dyn Console) -> i32 {
        let secs = TIMEOUT_MS / 1000;
        fail(con, &format!("no reply from {} after {secs} s", self.to))
    }

    /// Looks for the reply over `net`; the exit code once it ends.
    pub fn on_net(
        &mut self,
        net: Option<&mut (dyn Network + '_)>,
        con: &mut dyn Console,
    ) -> Option<i32> {
        let Some(net) = net else {
            return Some(fail(con, "no network (no NIC configured)"));
        };
        if self.ping.is_none() {
            match net.ping(self.to) {
                Ok(ping) => self.ping = Some(ping),
                Err(why) => return Some(fail(con, &why)),
            }
        }
        let ping = self.ping.as_ref()?;
        if !net.ping_replied(ping) {
            return None;
        }
        con.write(CHANNEL_OUT, format!("reply from {}\n", self.to).as_bytes());
        Some(0)
    }
}
