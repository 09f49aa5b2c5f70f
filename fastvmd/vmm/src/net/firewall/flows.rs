//! The flow table: what the guest opened, so that the replies pass a
//! restricted policy (the connection tracking of a cloud security group).
//!
//! A flow is keyed by protocol, the guest's address and port (or ICMP echo
//! identifier) and the remote address and port. Frames the guest sends
//! record or refresh flows ([`FlowTable::record_egress`]); frames to the
//! guest look them up ([`FlowTable::admit_reply`], [`FlowTable::admit_error`]).
//!
//! Idle timeouts: an answered TCP flow lives [`TCP_ESTABLISHED_IDLE`];
//! a TCP flow that never got an answer, or saw a FIN or RST either way, and
//! a UDP flow live [`SHORT_IDLE`]; an ICMP echo flow [`ICMP_ECHO_IDLE`].
//!
//! The table holds at most [`MAX_FLOWS`]. Lookups are one hash probe
//! (SipHash with a random key: remote hosts choose the keys of the frames
//! looked up). Flows sit in a slab, each on the least-recently-used list of
//! its timeout; within one timeout, the least recently used flow is the
//! first to expire, so expiry pops list tails and never scans. A new flow
//! in a full table first expires what is stale, then evicts the least
//! recently used of the three list tails. Every operation is O(1)
//! (amortized over the flows it expires).
//!
//! Time is passed in (`now`), so tests drive it; the device reads it
//! through a [`BatchClock`](super::BatchClock).

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub use super::flow_key::{FlowKey, FlowProtocol, tcp_flags};

/// Most flows one VM's table holds.
pub const MAX_FLOWS: usize = 4096;
/// Idle lifetime of a TCP flow the remote end answered.
pub const TCP_ESTABLISHED_IDLE: Duration = Duration::from_secs(15 * 60);
/// Idle lifetime of a UDP flow, of a TCP flow that never got an answer and
/// of one that saw a FIN or RST.
pub const SHORT_IDLE: Duration = Duration::from_secs(60);
/// Idle lifetime of an ICMP echo flow.
pub const ICMP_ECHO_IDLE: Duration = Duration::from_secs(30);

/// The timeout classes; each has its own recency list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifetime {
    Established = 0,
    Short = 1,
    Echo = 2,
}

impl Lifetime {
    const ALL: [Lifetime; 3] = [Lifetime::Established, Lifetime::Short, Lifetime::Echo];

    fn idle(self) -> Duration {
        match self {
            Lifetime::Established => TCP_ESTABLISHED_IDLE,
            Lifetime::Short => SHORT_IDLE,
            Lifetime::Echo => ICMP_ECHO_IDLE,
        }
    }
}

/// End of a list.
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Slot {
    key: FlowKey,
    last_seen: Instant,
    /// A frame of the flow came back to the guest.
    answered: bool,
    /// A FIN or RST was seen either way.
    closing: bool,
    lifetime: Lifetime,
    /// Toward the more recently used end of its list.
    newer: u32,
    /// Toward the less recently used end.
    older: u32,
}

impl Slot {
    fn lifetime_now(&self) -> Lifetime {
        match self.key.protocol {
            FlowProtocol::Tcp if self.answered && !self.closing => Lifetime::Established,
            FlowProtocol::Tcp | FlowProtocol::Udp => Lifetime::Short,
            FlowProtocol::IcmpEcho => Lifetime::Echo,
        }
    }

    fn is_stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_seen) >= self.lifetime.idle()
    }

    /// Takes note of the TCP flags of one of the flow's segments.
    fn see_tcp_flags(&mut self, flags: u8) {
        if flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
            self.closing = true;
        }
    }
}

/// A recency list: `newest` and `oldest` slot indices.
#[derive(Debug, Clone, Copy)]
struct List {
    newest: u32,
    oldest: u32,
}

impl Default for List {
    fn default() -> Self {
        List {
            newest: NIL,
            oldest: NIL,
        }
    }
}

/// What the table did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Flows removed to make room while still live.
    pub evicted: u64,
    /// Flows removed after their idle timeout.
    pub expired: u64,
    /// Frames to the guest admitted because they belong to a flow.
    pub replies: u64,
}

/// A VM's flows; see the module documentation.
#[derive(Default)]
pub struct FlowTable {
    index: HashMap<FlowKey, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    lists: [List; 3],
    stats: FlowStats,
    /// Datagrams whose later fragments may pass.
    pub fragments: super::fragments::Fragments,
}

impl std::fmt::Debug for FlowTable {
    /// The size and counts, not the flows (up to [`MAX_FLOWS`] of them).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("len", &self.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl FlowTable {
    /// An empty table (it allocates as flows come).
    pub fn new() -> FlowTable {
        FlowTable::default()
    }

    /// Flows held (some may be stale until the next operation).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// No flow held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Counts so far.
    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// Forgets every flow (the counts stay).
    pub fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.lists = Default::default();
        self.fragments.clear();
    }

    /// Slots allocated: never more than [`MAX_FLOWS`].
    pub fn slot_capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Panics unless every list is consistent with the index and the slab
    /// (each held flow on exactly one list, the one of its lifetime, in
    /// order of use).
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let mut listed = 0;
        for lifetime in Lifetime::ALL {
            let list = self.lists[lifetime as usize];
            let (mut newer, mut at) = (NIL, list.newest);
            while at != NIL {
                let slot = &self.slots[at as usize];
                assert_eq!(slot.newer, newer, "back link of {at}");
                assert_eq!(slot.lifetime, lifetime, "list of {at}");
                assert_eq!(self.index.get(&slot.key), Some(&at), "index of {at}");
                if newer != NIL {
                    assert!(self.slots[newer as usize].last_seen >= slot.last_seen);
                }
                listed += 1;
                assert!(listed <= self.index.len(), "a cycle");
                (newer, at) = (at, slot.older);
            }
            assert_eq!(list.oldest, newer, "tail of {lifetime:?}");
        }
        assert_eq!(listed, self.index.len());
        assert_eq!(self.index.len() + self.free.len(), self.slots.len());
        assert!(self.index.len() <= MAX_FLOWS);
    }

    /// Records a frame the guest sent on `key` (TCP: with `tcp_flags`),
    /// refreshing its flow or starting one.
    pub fn record_egress(&mut self, key: FlowKey, tcp_flags: u8, now: Instant) {
        self.expire(now);
        if let Some(&at) = self.index.get(&key) {
            let slot = &mut self.slots[at as usize];
            if key.protocol == FlowProtocol::Tcp {
                let opening = tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
                if opening && slot.closing {
                    // The ports are reused for a new connection.
                    slot.answered = false;
                    slot.closing = false;
                }
                slot.see_tcp_flags(tcp_flags);
            }
            self.touch(at, now);
            return;
        }
        if self.index.len() >= MAX_FLOWS {
            self.evict_least_recent();
        }
        let mut slot = Slot {
            key,
            last_seen: now,
            answered: false,
            closing: false,
            lifetime: Lifetime::Short,
            newer: NIL,
            older: NIL,
        };
        if key.protocol == FlowProtocol::Tcp {
            slot.see_tcp_flags(tcp_flags);
        }
        slot.lifetime = slot.lifetime_now();
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at as usize] = slot;
                at
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, at);
        self.push_newest(at);
    }

    /// Whether a frame to the guest on `key` (TCP: with `tcp_flags`)
    /// belongs to a live flow; if so the flow is refreshed and marked
    /// answered.
    pub fn admit_reply(&mut self, key: &FlowKey, tcp_flags: u8, now: Instant) -> bool {
        self.expire(now);
        let Some(at) = self.live(key, now) else {
            return false;
        };
        let slot = &mut self.slots[at as usize];
        slot.answered = true;
        if key.protocol == FlowProtocol::Tcp {
            slot.see_tcp_flags(tcp_flags);
        }
        self.touch(at, now);
        self.stats.replies += 1;
        true
    }

    /// Whether an ICMP error about `key` concerns a live flow (the flow is
    /// not refreshed: an error is no sign of life).
    pub fn admit_error(&mut self, key: &FlowKey, now: Instant) -> bool {
        self.expire(now);
        if self.live(key, now).is_none() {
            return false;
        }
        self.stats.replies += 1;
        true
    }

    /// Removes the stale flows at the old end of each list.
    pub fn expire(&mut self, now: Instant) {
        for lifetime in Lifetime::ALL {
            loop {
                let oldest = self.lists[lifetime as usize].oldest;
                if oldest == NIL || !self.slots[oldest as usize].is_stale(now) {
                    break;
                }
                self.remove(oldest);
                self.stats.expired += 1;
            }
        }
    }

    /// The slot of `key` when its flow is live; a stale one is removed.
    fn live(&mut self, key: &FlowKey, now: Instant) -> Option<u32> {
        let at = *self.index.get(key)?;
        if self.slots[at as usize].is_stale(now) {
            self.remove(at);
            self.stats.expired += 1;
            return None;
        }
        Some(at)
    }

    /// Removes the least recently used flow of all.
    fn evict_least_recent(&mut self) {
        let oldest = Lifetime::ALL
            .iter()
            .map(|l| self.lists[*l as usize].oldest)
            .filter(|at| *at != NIL)
            .min_by_key(|at| self.slots[*at as usize].last_seen);
        if let Some(at) = oldest {
            self.remove(at);
            self.stats.evicted += 1;
        }
    }

    /// Marks `at` used now, moving it to the newest end of the list of its
    /// (possibly new) timeout.
    fn touch(&mut self, at: u32, now: Instant) {
        self.unlink(at);
        let slot = &mut self.slots[at as usize];
        slot.last_seen = now;
        slot.lifetime = slot.lifetime_now();
        self.push_newest(at);
    }

    fn remove(&mut self, at: u32) {
        self.unlink(at);
        let key = self.slots[at as usize].key;
        self.index.remove(&key);
        self.free.push(at);
    }

    fn push_newest(&mut self, at: u32) {
        let list = self.slots[at as usize].lifetime as usize;
        let newest = self.lists[list].newest;
        {
            let slot = &mut self.slots[at as usize];
            slot.newer = NIL;
            slot.older = newest;
        }
        if newest == NIL {
            self.lists[list].oldest = at;
        } else {
            self.slots[newest as usize].newer = at;
        }
        self.lists[list].newest = at;
    }

    fn unlink(&mut self, at: u32) {
        let (list, newer, older) = {
            let slot = &self.slots[at as usize];
            (slot.lifetime as usize, slot.newer, slot.older)
        };
        if newer == NIL {
            self.lists[list].newest = older;
        } else {
            self.slots[newer as usize].older = older;
        }
        if older == NIL {
            self.lists[list].oldest = newer;
        } else {
            self.slots[older as usize].newer = newer;
        }
        let slot = &mut self.slots[at as usize];
        slot.newer = NIL;
        slot.older = NIL;
    }
}
