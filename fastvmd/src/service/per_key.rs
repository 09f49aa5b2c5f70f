//! Things in progress counted per key (a VM, an org), at most a number per
//! key: console sessions of a VM, snapshots of a VM, execs of an org. A
//! place is taken with [`PerKey::take`] and given back when its [`Held`]
//! is dropped, whatever ends the work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

#[cfg(test)]
mod tests {
    use super::*;

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
