//! Execs in flight, bounded: at most a number per org (429 past it, so one
//! org's long commands cannot take what every org needs) and in all. An
//! exec waits on its guest without a thread ([`crate::agent_async`]), so
//! the blocking pool where the store's work and authentication run is
//! never held by a guest.

use super::ServiceError;
use super::per_key::{Held, PerKey};

/// Execs one org may have running at once, by default.
pub const DEFAULT_PER_ORG: usize = 64;
/// Execs running at once over every org.
pub const MAX_TOTAL: usize = 1024;

/// The counts, shared by every exec: per org, and in all (one key).
#[derive(Debug, Clone)]
pub struct ExecSlots {
    per_org: PerKey,
    total: PerKey,
}

impl ExecSlots {
    /// At most `per_org` execs per org (and [`MAX_TOTAL`] in all).
    pub fn new(per_org: usize) -> ExecSlots {
        ExecSlots {
            per_org: PerKey::new(per_org),
            total: PerKey::new(MAX_TOTAL),
        }
    }

    /// A slot for one exec of `org`, held until the [`Slot`] is dropped.
    pub fn take(&self, org: &str) -> Result<Slot, ServiceError> {
        let cap = self.per_org.cap();
        let mine = self.per_org.take(org).ok_or_else(|| {
            ServiceError::TooMany(format!(
                "this org has {cap} execs running, the most it may at once \
                 (fastvmd serve --max-execs-per-org); try again when one ends"
            ))
        })?;
        let all = self.total.take("").ok_or_else(|| {
            ServiceError::TooMany(format!(
                "the daemon has {MAX_TOTAL} execs running, the most it runs at once; \
                 try again when one ends"
            ))
        })?;
        Ok(Slot {
            _org: mine,
            _all: all,
        })
    }
}

/// One exec's place among those running.
#[derive(Debug)]
pub struct Slot {
    _org: Held,
    _all: Held,
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
