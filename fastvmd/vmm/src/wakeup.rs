//! Guest idle wait: `hlt` for a guest that cannot halt (the test guest runs
//! at CPL 3). Its vCPU thread sleeps until something the guest may care
//! about happens ([`Wakeup::ring`]: a device interrupt, console input, a
//! pause or stop) or the time is up, so an idle guest stops taking a host
//! core. Linux guests never touch the port.
//!
//! - a 32-bit `out` to [`IDLE_PORT`] waits at most that many microseconds
//!   (for a guest with a timer due);
//! - a 32-bit `in` from it waits at most [`MAX_IDLE`] and reads the
//!   monitor's *epoch*, a random number per monitor process: a guest that
//!   reads a new one knows it runs in a restored clone (new vsock CID, new
//!   identity) without polling for it. The first `in` of each vCPU returns at
//!   once, so a clone restored in the middle of a wait sees the new epoch
//!   before it sleeps again.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::bus::lock;

/// The idle port (a 32-bit `out`: the longest wait in microseconds).
pub const IDLE_PORT: u16 = 0x610;
/// Longest wait honoured, whatever the guest asks; also the wait of an `in`.
pub const MAX_IDLE: Duration = Duration::from_millis(100);

/// Wakes idle vCPUs. Every ring is seen by every waiter that waits with an
/// older generation, so a ring between the guest's last look at its devices
/// and its idle request is never lost.
#[derive(Debug, Default)]
pub struct Wakeup {
    generation: Mutex<u64>,
    rung: Condvar,
}

impl Wakeup {
    /// A wakeup nobody has rung.
    pub fn new() -> Self {
        Wakeup::default()
    }

    /// Something happened: wake every idle vCPU.
    pub fn ring(&self) {
        *lock(&self.generation) += 1;
        self.rung.notify_all();
    }

    /// Sleeps until a ring newer than `seen` or `timeout`, whichever comes
    /// first; returns the generation to pass next time. A new `Wakeup` is
    /// at generation 0.
    pub fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let generation = lock(&self.generation);
        let (generation, _) = self
            .rung
            .wait_timeout_while(generation, timeout.min(MAX_IDLE), |g| *g == seen)
            .unwrap_or_else(|p| p.into_inner());
        *generation
    }
}

/// The wait a guest asked for with the bytes of its `out` to [`IDLE_PORT`].
pub fn requested_wait(data: &[u8]) -> Duration {
    let mut micros = [0u8; 4];
    let n = data.len().min(4);
    micros[..n].copy_from_slice(&data[..n]);
    Duration::from_micros(u64::from(u32::from_le_bytes(micros))).min(MAX_IDLE)
}

/// A fresh epoch for this monitor process (never 0, which a guest may use
/// for "none seen yet").
pub fn new_epoch() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        b = std::process::id().to_le_bytes();
    }
    u32::from_le_bytes(b).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_ring_before_the_wait_is_not_lost() {
        let w = Wakeup::new();
        let seen = 0;
        w.ring();
        let t = Instant::now();
        let next = w.wait(seen, Duration::from_secs(5));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "waited despite a ring"
        );
        assert_eq!(next, seen + 1);
    }

    #[test]
    fn a_ring_during_the_wait_ends_it_and_silence_times_out() {
        let w = Arc::new(Wakeup::new());
        let seen = 0;
        let t = Instant::now();
        assert_eq!(w.wait(seen, Duration::from_millis(20)), seen);
        assert!(t.elapsed() >= Duration::from_millis(20));
        let ringer = {
            let w = w.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                w.ring();
            })
        };
        let t = Instant::now();
        assert_eq!(w.wait(seen, Duration::from_secs(5)), seen + 1);
        assert!(t.elapsed() < Duration::from_secs(1));
        ringer.join().unwrap();
    }

    #[test]
    fn requested_wait_is_little_endian_and_capped() {
        assert_eq!(
            requested_wait(&1500u32.to_le_bytes()),
            Duration::from_micros(1500)
        );
        assert_eq!(requested_wait(&[0x10]), Duration::from_micros(16));
        assert_eq!(requested_wait(&u32::MAX.to_le_bytes()), MAX_IDLE);
    }
}
