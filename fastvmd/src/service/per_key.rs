//! Things in progress counted per key (a VM, an org), at most a number per
//! key: console sessions of a VM, snapshots of a VM, execs of an org. A
//! place is taken with [`PerKey::take`] and given back when its [`Held`]
//! is dropped, whatever ends the work. [`Turns`] is the waiting kind: one
//! at a time per key, the others wait (firewall changes of a VM).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};

/// Counts per key, each at most `cap`.
#[derive(Debug, Clone)]
pub struct PerKey {
    cap: usize,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl PerKey {
    /// At most `cap` at once per key.
    pub fn new(cap: usize) -> PerKey {
        PerKey {
            cap,
            counts: Arc::default(),
        }
    }

    /// The most per key.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// A place for `key`, or `None` when it has [`PerKey::cap`] already.
    pub fn take(&self, key: &str) -> Option<Held> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.to_string()).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Held {
            of: self.clone(),
            key: key.to_string(),
        })
    }
}

/// One place taken; given back on drop.
#[derive(Debug)]
pub struct Held {
    of: PerKey,
    key: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.of.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// One holder at a time per key; others wait for their turn. Only keys
/// held are kept.
#[derive(Debug, Default)]
pub struct Turns {
    busy: Mutex<HashSet<String>>,
    freed: Condvar,
}

impl Turns {
    /// Waits until no one holds `key`, then holds it until the [`Turn`]
    /// is dropped. Blocking: for the threads that do monitor work.
    pub fn wait_for(&self, key: &str) -> Turn<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while busy.contains(key) {
            busy = self.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        busy.insert(key.to_string());
        Turn {
            of: self,
            key: key.to_string(),
        }
    }
}

/// A key held; the next waiter's turn when dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    of: &'a Turns,
    key: String,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut busy = self.of.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.remove(&self.key);
        self.of.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_turn_per_key_and_other_keys_do_not_wait() {
        let turns = Turns::default();
        let a = turns.wait_for("a");
        let _b = turns.wait_for("b");
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let _a = turns.wait_for("a");
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!waiter.is_finished(), "a second holder of a");
            drop(a);
            waiter.join().unwrap();
        });
        assert_eq!(turns.busy.lock().unwrap().len(), 1, "only b is held");
    }

    #[test]
    fn each_key_has_its_cap_and_a_place_comes_back_when_dropped() {
        let places = PerKey::new(2);
        let a1 = places.take("a").unwrap();
        let _a2 = places.take("a").unwrap();
        assert!(places.take("a").is_none());
        let _b = places.take("b").unwrap();
        drop(a1);
        assert!(places.take("a").is_some());
    }
}
