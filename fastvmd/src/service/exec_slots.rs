//! Execs in flight, bounded: at most a number per org (429 past it, so one
//! org's long commands cannot take what every org needs) and in all. An
//! exec waits on its guest without a thread ([`crate::agent_async`]), so
//! the blocking pool where the store's work and authentication run is
//! never held by a guest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::ServiceError;

/// Execs one org may have running at once, by default.
pub const DEFAULT_PER_ORG: usize = 64;
/// Execs running at once over every org.
pub const MAX_TOTAL: usize = 1024;

/// The counts, shared by every exec.
#[derive(Debug, Clone)]
pub struct ExecSlots {
    per_org: usize,
    running: Arc<Mutex<Running>>,
}

#[derive(Debug, Default)]
struct Running {
    total: usize,
    by_org: HashMap<String, usize>,
}

impl ExecSlots {
    /// At most `per_org` execs per org (and [`MAX_TOTAL`] in all).
    pub fn new(per_org: usize) -> ExecSlots {
        ExecSlots {
            per_org,
            running: Arc::default(),
        }
    }

    /// A slot for one exec of `org`, held until the [`Slot`] is dropped.
    pub fn take(&self, org: &str) -> Result<Slot, ServiceError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mine = running.by_org.get(org).copied().unwrap_or(0);
        if mine >= self.per_org {
            return Err(ServiceError::TooMany(format!(
                "this org has {mine} execs running, the most it may at once \
                 (fastvmd serve --max-execs-per-org); try again when one ends"
            )));
        }
        if running.total >= MAX_TOTAL {
            return Err(ServiceError::TooMany(format!(
                "the daemon has {MAX_TOTAL} execs running, the most it runs at once; \
                 try again when one ends"
            )));
        }
        running.total += 1;
        *running.by_org.entry(org.to_string()).or_default() += 1;
        Ok(Slot {
            slots: self.clone(),
            org: org.to_string(),
        })
    }
}

/// One exec's place among those running.
#[derive(Debug)]
pub struct Slot {
    slots: ExecSlots,
    org: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|e| e.into_inner());
        running.total = running.total.saturating_sub(1);
        if let Some(count) = running.by_org.get_mut(&self.org) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.by_org.remove(&self.org);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_org_has_its_own_cap_and_a_slot_comes_back_when_dropped() {
        let slots = ExecSlots::new(2);
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        let refused = slots.take("a").unwrap_err();
        assert_eq!(refused.status(), 429);
        assert!(
            refused.to_string().contains("--max-execs-per-org"),
            "{refused}"
        );
        // Another org is not held up by the first.
        let _b1 = slots.take("b").unwrap();
        drop(a1);
        slots.take("a").unwrap();
    }
}
