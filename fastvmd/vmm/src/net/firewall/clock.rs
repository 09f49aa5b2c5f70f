//! The time the flow table is given: [`std::time::Instant`], read lazily
//! and shared by the frames of a batch.

use std::time::Instant;

/// The clock of one batch of frames: read on first use and again after
/// every [`BatchClock::REUSE`] uses, so frames that need no flow never read
/// it, and a long batch does not stop time.
#[derive(Debug, Default)]
pub struct BatchClock {
    now: Option<Instant>,
    uses: u32,
}

impl BatchClock {
    /// Uses of one reading.
    pub const REUSE: u32 = 64;

    /// A clock not read yet.
    pub fn new() -> BatchClock {
        BatchClock::default()
    }

    /// The time, read at most once per [`BatchClock::REUSE`] calls.
    pub fn now(&mut self) -> Instant {
        self.uses += 1;
        match self.now {
            Some(now) if self.uses <= Self::REUSE => now,
            _ => {
                self.uses = 1;
                *self.now.insert(Instant::now())
            }
        }
    }
}
