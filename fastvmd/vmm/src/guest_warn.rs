//! Warnings a guest can cause (a bad MMIO access, a bad descriptor, a bad
//! packet), rate-limited and counted: each kind (call site of
//! [`guest_warn!`](crate::guest_warn)) logs at most one line per
//! [`WINDOW`], the next one saying how many were suppressed, so a hostile
//! guest cannot grow the monitor's log without bound; every occurrence is
//! counted, and [`counts`] (the `status` control op) reports them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// At most one line per kind in this long.
pub const WINDOW: Duration = Duration::from_secs(1);

/// One kind of guest-caused warning.
#[derive(Debug)]
pub struct GuestWarning {
    kind: &'static str,
    count: AtomicU64,
    /// Milliseconds since the epoch of the last line logged.
    last_logged_ms: AtomicU64,
    suppressed: AtomicU64,
    registered: AtomicBool,
}

static REGISTRY: Mutex<Vec<&'static GuestWarning>> = Mutex::new(Vec::new());

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl GuestWarning {
    /// A kind named `kind` (the message's fixed part).
    pub const fn new(kind: &'static str) -> Self {
        GuestWarning {
            kind,
            count: AtomicU64::new(0),
            last_logged_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            registered: AtomicBool::new(false),
        }
    }

    /// Counts one occurrence at `now_ms`; `Some(suppressed)` when it is to
    /// be logged (with how many were not since the last line).
    pub fn hit_at(&'static self, now_ms: u64) -> Option<u64> {
        if !self.registered.swap(true, Ordering::AcqRel) {
            REGISTRY
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= WINDOW.as_millis() as u64;
        if due
            && self
                .last_logged_ms
                .compare_exchange(last, now_ms.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// [`GuestWarning::hit_at`] now.
    pub fn hit(&'static self) -> Option<u64> {
        self.hit_at(now_ms())
    }

    /// Occurrences so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Every kind that occurred, with its count, sorted by kind.
pub fn counts() -> std::collections::BTreeMap<String, u64> {
    let registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = std::collections::BTreeMap::new();
    for w in registry.iter() {
        *out.entry(w.kind.to_string()).or_insert(0) += w.count();
    }
    out
}

/// Logs a warning a guest can cause, rate-limited and counted per call
/// site: `guest_warn!("kind", fields..., "message", args...)` — the first
/// argument names the kind, the rest is what `tracing::warn!` takes.
#[macro_export]
macro_rules! guest_warn {
    ($kind:literal, $($arg:tt)+) => {{
        static WARNING: $crate::guest_warn::GuestWarning =
            $crate::guest_warn::GuestWarning::new($kind);
        match WARNING.hit() {
            Some(0) => ::tracing::warn!($($arg)+),
            Some(suppressed) => ::tracing::warn!(suppressed, $($arg)+),
            None => {}
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_and_every_hit_counted() {
        static W: GuestWarning = GuestWarning::new("test: a kind");
        let t = 1_000_000;
        assert_eq!(W.hit_at(t), Some(0), "the first is logged");
        for i in 1..=500 {
            assert_eq!(W.hit_at(t + i), None, "within the window: suppressed");
        }
        assert_eq!(
            W.hit_at(t + 1000),
            Some(500),
            "the next window says how many"
        );
        assert_eq!(W.hit_at(t + 1001), None);
        assert_eq!(W.count(), 503);
        assert_eq!(counts().get("test: a kind"), Some(&503));
    }

    #[test]
    fn the_macro_counts_per_call_site() {
        for _ in 0..3 {
            crate::guest_warn!("test: macro kind", value = 1, "a guest did {}", "this");
        }
        assert_eq!(counts().get("test: macro kind"), Some(&3));
    }
}
