//! Time and latency histograms.

use std::sync::OnceLock;
use std::time::Instant;

use hdrhistogram::Histogram;

/// The process's time base, fixed on first use (main fixes it before any workload).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since the process's time base.
pub fn now_ns() -> u64 {
    u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub fn secs_ns(secs: f64) -> u64 {
    (secs.max(0.0) * 1e9) as u64
}

/// Sleeps until [`now_ns`] reads `at` (at once if it has passed).
pub async fn sleep_until_ns(at: u64) {
    tokio::time::sleep(std::time::Duration::from_nanos(at.saturating_sub(now_ns()))).await;
}

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid histogram bounds")
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

pub fn quantile_us(hist: &Histogram<u64>, q: f64) -> f64 {
    us(hist.value_at_quantile(q))
}
