//! Our own view of a vsock peer's receive credit, so large replies are sent in
//! chunks the peer can take instead of being refused by the driver.

/// Credit state of one connection, from the peer's buffer announcements and
/// the bytes we have sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCredit {
    buf_alloc: u32,
    fwd_cnt: u32,
    tx_cnt: u32,
}

impl PeerCredit {
    /// Records the `buf_alloc` / `fwd_cnt` pair the peer sent with a packet.
    pub fn update(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.buf_alloc = buf_alloc;
        self.fwd_cnt = fwd_cnt;
    }

    /// Records `n` body bytes sent to the peer.
    pub fn sent(&mut self, n: usize) {
        self.tx_cnt = self.tx_cnt.wrapping_add(n as u32);
    }

    /// Bytes the peer can take now (never negative, counters wrap).
    pub fn free(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.fwd_cnt);
        self.buf_alloc.saturating_sub(in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_follows_sends_and_updates_and_wraps() {
        let mut c = PeerCredit::default();
        assert_eq!(c.free(), 0);
        c.update(1000, 0);
        c.sent(600);
        assert_eq!(c.free(), 400);
        c.sent(400);
        assert_eq!(c.free(), 0);
        c.update(1000, 1000);
        assert_eq!(c.free(), 1000);

        let mut w = PeerCredit {
            buf_alloc: 100,
            fwd_cnt: u32::MAX - 10,
            tx_cnt: u32::MAX - 10,
        };
        w.sent(50);
        assert_eq!(w.free(), 50);
    }
}
