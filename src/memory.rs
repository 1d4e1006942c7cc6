//! Memory: the allocator, the figures INFO reports, and the `--maxmemory` check.
//!
//! The allocator is jemalloc, as Redis's: it keeps fragmentation low under the churn of many
//! small keys, and with its background thread it hands freed pages back to the OS after a load
//! ends instead of keeping the process at its peak. Binaries that link this crate select it with
//! `#[global_allocator] static ALLOCATOR: baton::memory::Allocator = baton::memory::Allocator;`
//! (the server and the integration tests do), or every figure here reads near zero.
//!
//! jemalloc's counters are cached per epoch, and advancing the epoch merges every arena's
//! statistics: too dear for each request, so the server's cron calls [`refresh`] every
//! [`REFRESH_INTERVAL`] to copy them into atomics, and the request path reads one atomic. A client can
//! therefore overshoot `--maxmemory` by what it allocates in one interval.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tikv_jemalloc_ctl::{background_thread, epoch, stats};
use tracing::warn;

pub use tikv_jemallocator::Jemalloc as Allocator;

/// How stale the used-memory figure the `--maxmemory` check reads may be (Redis samples its
/// memory figures from a cron at the same rate).
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

static USED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The figures INFO's `# Memory` section reports, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Bytes the process has allocated and not freed (Redis's `used_memory`).
    pub(crate) used: usize,
    /// The process's resident set as the OS counts it.
    pub(crate) rss: usize,
    /// The largest `used` seen since the process started.
    pub(crate) peak: usize,
}

/// Reads the allocator's figures now and records them for [`over_maxmemory`]: the bytes in
/// use and the peak.
pub(crate) fn refresh() -> (usize, usize) {
    // Without a new epoch jemalloc answers with the figures it cached at the last one.
    let _ = epoch::advance();
    let used = stats::allocated::read().unwrap_or(0);
    USED.store(used, Ordering::Relaxed);
    let peak = PEAK.fetch_max(used, Ordering::Relaxed).max(used);
    (used, peak)
}

/// [`refresh`], and the resident set: read only when asked for (a file read the periodic
/// refresh of an idle server need not make ten times a second).
fn usage() -> Usage {
    let (used, peak) = refresh();
    let rss = process_rss().unwrap_or_else(|| stats::resident::read().unwrap_or(0));
    Usage { used, rss, peak }
}

/// Whether commands that add state must be refused: memory in use, as last refreshed, is over
/// `maxmemory` (0: no limit).
pub(crate) fn over_maxmemory(maxmemory: u64) -> bool {
    exceeds(USED.load(Ordering::Relaxed), maxmemory)
}

fn exceeds(used: usize, maxmemory: u64) -> bool {
    maxmemory != 0 && u64::try_from(used).unwrap_or(u64::MAX) > maxmemory
}

/// Starts returning freed memory to the OS in the background and takes a first reading at once,
/// so that `--maxmemory` holds from the first request; [`refresh`] keeps the figures current.
pub(crate) fn start() {
    // jemalloc otherwise purges freed pages only from inside later allocations, so an idle
    // server would sit at its peak.
    if let Err(error) = background_thread::write(true) {
        warn!(%error, "cannot start jemalloc's background purging; freed memory returns to the OS more slowly");
    }
    refresh();
}

/// INFO's `# Memory` section, with Redis's field names.
pub(crate) fn info_fields(maxmemory: u64) -> Vec<(&'static str, String)> {
    let Usage { used, rss, peak } = usage();
    let as_u64 = |bytes: usize| u64::try_from(bytes).unwrap_or(u64::MAX);
    let fragmentation = if used == 0 { 0.0 } else { rss as f64 / used as f64 };
    vec![
        ("used_memory", used.to_string()),
        ("used_memory_human", human(as_u64(used))),
        ("used_memory_rss", rss.to_string()),
        ("used_memory_rss_human", human(as_u64(rss))),
        ("used_memory_peak", peak.to_string()),
        ("used_memory_peak_human", human(as_u64(peak))),
        ("maxmemory", maxmemory.to_string()),
        ("maxmemory_human", human(maxmemory)),
        ("maxmemory_policy", "noeviction".to_owned()),
        ("mem_fragmentation_ratio", format!("{fragmentation:.2}")),
        ("mem_allocator", allocator_name()),
    ]
}

/// `jemalloc-5.3.1`, as Redis names its allocator (jemalloc's own version string goes on with
/// the git description).
fn allocator_name() -> String {
    let version = tikv_jemalloc_ctl::version::read().unwrap_or("unknown");
    format!("jemalloc-{}", version.split('-').next().unwrap_or(version))
}

/// Redis's `bytesToHuman`: binary units with two decimals, plain bytes below 1 KiB and from
/// 1 EiB on.
fn human(bytes: u64) -> String {
    const UNITS: [(u64, char); 5] = [(1 << 10, 'K'), (1 << 20, 'M'), (1 << 30, 'G'), (1 << 40, 'T'), (1 << 50, 'P')];
    match UNITS.iter().rev().find(|&&(size, _)| bytes >= size) {
        Some(&(size, unit)) if bytes < size * 1024 => format!("{:.2}{unit}", bytes as f64 / size as f64),
        _ => format!("{bytes}B"),
    }
}

/// The resident set size from `/proc/self/statm`; None where there is no procfs.
fn process_rss() -> Option<usize> {
    /// Linux's page size on the platforms baton is built for; statm counts in pages.
    const PAGE: usize = 4096;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE)
}

/// A memory size in Redis's configuration syntax (`memtoll`): plain bytes, or a number with a
/// case-insensitive unit, `k`/`m`/`g` in powers of 1000 and `kb`/`mb`/`gb` in powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let split = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    let multiplier: Option<u64> = match unit {
        "" | "b" => Some(1),
        "k" => Some(1000),
        "kb" => Some(1024),
        "m" => Some(1000 * 1000),
        "mb" => Some(1024 * 1024),
        "g" => Some(1000 * 1000 * 1000),
        "gb" => Some(1024 * 1024 * 1024),
        _ => None,
    };
    multiplier
        .zip(digits.parse::<u64>().ok())
        .and_then(|(multiplier, number)| number.checked_mul(multiplier))
        .ok_or_else(|| {
            format!("'{text}' is not a size: a whole number of bytes with an optional unit b, k, kb, m, mb, g or gb (e.g. 100mb)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_redis_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("100b"), Ok(100));
        assert_eq!(parse_size("1k"), Ok(1000));
        assert_eq!(parse_size("1kb"), Ok(1024));
        assert_eq!(parse_size("100mb"), Ok(100 * 1024 * 1024));
        assert_eq!(parse_size("100MB"), Ok(100 * 1024 * 1024));
        assert_eq!(parse_size("2m"), Ok(2_000_000));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        assert_eq!(parse_size("3G"), Ok(3_000_000_000));
    }

    #[test]
    fn malformed_sizes_are_refused() {
        for text in ["", "mb", "-1", "1.5gb", "1 gb", "1tb", "10x", "+5", "18446744073709551616", "17179869184gb"] {
            assert!(parse_size(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn human_sizes_match_redis() {
        assert_eq!(human(0), "0B");
        assert_eq!(human(1023), "1023B");
        assert_eq!(human(1024), "1.00K");
        assert_eq!(human(1536), "1.50K");
        assert_eq!(human(100 * 1024 * 1024), "100.00M");
        assert_eq!(human(3 << 30), "3.00G");
        assert_eq!(human(5 << 50), "5.00P");
        assert_eq!(human(u64::MAX), "18446744073709551615B");
    }

    #[test]
    fn no_limit_is_never_exceeded() {
        assert!(!exceeds(usize::MAX, 0));
        assert!(!exceeds(100, 100));
        assert!(exceeds(101, 100));
        assert!(!exceeds(0, 1));
    }
}
