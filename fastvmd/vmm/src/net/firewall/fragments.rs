//! Later fragments of datagrams the filter let in. A fragment other than
//! the first carries no ports, so it cannot be judged by itself: when the
//! first fragment of a datagram passes (a reply to a flow, or allowed by a
//! rule), its datagram (source, destination, protocol, identification) is
//! remembered for [`REASSEMBLY_WINDOW`], and later fragments of that
//! datagram pass in that time. Fragments arriving before their first one
//! are dropped, as are those of datagrams never let in. At most
//! [`MAX_DATAGRAMS`] are remembered per VM (the oldest forgotten first).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long the later fragments of a datagram may follow its first.
pub const REASSEMBLY_WINDOW: Duration = Duration::from_secs(5);
/// Datagrams remembered at once per VM.
pub const MAX_DATAGRAMS: usize = 64;

/// One fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The upper-layer protocol.
    pub protocol: u8,
    /// The IPv4 identification or the IPv6 Fragment header's.
    pub id: u32,
}

/// The datagrams whose first fragment passed, oldest first.
#[derive(Debug, Default)]
pub struct Fragments {
    admitted: VecDeque<(DatagramKey, Instant)>,
}

impl Fragments {
    /// Remembers `key`, whose first fragment passed at `now`.
    pub fn admit_first(&mut self, key: DatagramKey, now: Instant) {
        self.forget_stale(now);
        self.admitted.retain(|(k, _)| *k != key);
        if self.admitted.len() >= MAX_DATAGRAMS {
            self.admitted.pop_front();
        }
        self.admitted.push_back((key, now));
    }

    /// Whether a later fragment of `key` may pass at `now`.
    pub fn admits_later(&mut self, key: &DatagramKey, now: Instant) -> bool {
        self.forget_stale(now);
        self.admitted.iter().any(|(k, _)| k == key)
    }

    /// Datagrams remembered.
    pub fn len(&self) -> usize {
        self.admitted.len()
    }

    /// None remembered.
    pub fn is_empty(&self) -> bool {
        self.admitted.is_empty()
    }

    /// Forgets every datagram.
    pub fn clear(&mut self) {
        self.admitted.clear();
    }

    fn forget_stale(&mut self, now: Instant) {
        while let Some((_, at)) = self.admitted.front() {
            if now.saturating_duration_since(*at) < REASSEMBLY_WINDOW {
                break;
            }
            self.admitted.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> DatagramKey {
        DatagramKey {
            src: "198.51.100.7".parse().unwrap(),
            dst: "100.64.0.2".parse().unwrap(),
            protocol: 17,
            id,
        }
    }

    #[test]
    fn a_datagram_admitted_first_lets_its_later_fragments_in_for_a_while() {
        let mut f = Fragments::default();
        let t0 = Instant::now();
        assert!(!f.admits_later(&key(1), t0));
        f.admit_first(key(1), t0);
        assert!(f.admits_later(&key(1), t0 + Duration::from_secs(1)));
        assert!(!f.admits_later(&key(2), t0));
        let other_source = DatagramKey {
            src: "198.51.100.8".parse().unwrap(),
            ..key(1)
        };
        assert!(!f.admits_later(&other_source, t0));
        let other_protocol = DatagramKey {
            protocol: 6,
            ..key(1)
        };
        assert!(!f.admits_later(&other_protocol, t0));
        assert!(!f.admits_later(&key(1), t0 + REASSEMBLY_WINDOW));
        assert!(f.is_empty());
    }

    #[test]
    fn the_oldest_datagram_is_forgotten_first_and_the_count_stays_bounded() {
        let mut f = Fragments::default();
        let t0 = Instant::now();
        for id in 0..(MAX_DATAGRAMS as u32 + 10) {
            f.admit_first(key(id), t0);
        }
        assert_eq!(f.len(), MAX_DATAGRAMS);
        assert!(!f.admits_later(&key(0), t0));
        assert!(f.admits_later(&key(MAX_DATAGRAMS as u32 + 9), t0));
        // Admitting one again moves it to the newest.
        f.admit_first(key(10), t0);
        for id in 1000..1000 + MAX_DATAGRAMS as u32 - 1 {
            f.admit_first(key(id), t0);
        }
        assert!(f.admits_later(&key(10), t0));
        f.clear();
        assert!(f.is_empty());
    }
}
