//! The core works in milliseconds on a monotonic clock passed in by the caller, so tests can move
//! time by hand and wall-clock jumps never expire or extend a lease.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { start: Instant::now() }
    }

    /// Milliseconds since the clock was made, never decreasing.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant a core deadline (in this clock's milliseconds) falls on.
    pub fn instant_at(&self, ms: u64) -> Instant {
        self.start + std::time::Duration::from_millis(ms)
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// First fencing token of a fresh server: microseconds since the Unix epoch. Tokens then only grow,
/// so a holder fenced before a restart stays fenced after it (as long as the wall clock does not
/// go back and grants stay below a million per second per shard on average).
pub fn token_seed() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |since| u64::try_from(since.as_micros()).unwrap_or(1)).max(1)
}
