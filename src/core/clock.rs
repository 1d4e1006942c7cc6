//! The core works on a monotonic clock passed in by the caller, so tests can move time by hand,
//! a replayed journal reproduces every decision, and wall-clock jumps never expire or extend a
//! lease.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A moment on the server's [`Clock`]: microseconds since the clock was made.
///
/// The core never reads a clock: every operation is handed one `Timestamp`. Leases and deadlines
/// are whole milliseconds ([`Timestamp::ms`]); the microseconds serve the hand-off latency metric,
/// whose starting point is the `Timestamp` of the operation that sent the grant. Carrying them in
/// the same value costs the hot path nothing (one `Instant::now()` per operation, as before), and
/// a `u64` keeps the core deterministic where an `Instant` could not be built by a test or replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    micros: u64,
}

impl Timestamp {
    pub fn from_ms(ms: u64) -> Timestamp {
        Timestamp { micros: ms.saturating_mul(1_000) }
    }

    /// Whole milliseconds: the unit of every lease and deadline.
    pub(crate) fn ms(self) -> u64 {
        self.micros / 1_000
    }

    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { start: Instant::now() }
    }

    /// The current moment, never decreasing.
    pub fn now(&self) -> Timestamp {
        Timestamp { micros: u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX) }
    }

    /// The instant a core deadline (in this clock's milliseconds) falls on.
    pub fn instant_at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
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
/// `wall_offset_ms` moves the wall clock this server reads (tests play a clock stepped back or on).
pub(crate) fn token_seed(wall_offset_ms: i64) -> u64 {
    let micros =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |since| u64::try_from(since.as_micros()).unwrap_or(1));
    micros.saturating_add_signed(wall_offset_ms.saturating_mul(1_000)).max(1)
}
