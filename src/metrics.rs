//! Figures for INFO and the Prometheus endpoint that need more than a counter: the instantaneous
//! command rate (sampled like Redis's, 16 samples 100 ms apart) and hand-off latency percentiles.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use parking_lot::Mutex;

use crate::core::CoreStats;
use crate::{cpu, logging};

const OPS_SAMPLES: usize = 16;
pub(crate) const OPS_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct OpsSampler {
    last_total: u64,
    last_at: Instant,
    per_sec: [u64; OPS_SAMPLES],
    next: usize,
}

/// Hand-off latency in microseconds, over the server's lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HandoffLatency {
    pub(crate) count: u64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) max_us: u64,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    ops: Mutex<OpsSampler>,
    handoff_us: Mutex<Histogram<u64>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid")));
        Metrics {
            ops: Mutex::new(OpsSampler { last_total: 0, last_at: Instant::now(), per_sec: [0; OPS_SAMPLES], next: 0 }),
            handoff_us: Mutex::new(histogram),
        }
    }

    /// Time from the core sending a grant to a blocked waiter until its reply was written.
    pub(crate) fn record_handoff(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.handoff_us.lock().saturating_record(micros);
    }

    pub(crate) fn handoff_latency(&self) -> HandoffLatency {
        let histogram = self.handoff_us.lock();
        HandoffLatency {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }

    pub(crate) fn sample_ops(&self, total_commands: u64, now: Instant) {
        let mut ops = self.ops.lock();
        let elapsed_ms = now.saturating_duration_since(ops.last_at).as_millis().max(1);
        let delta = u128::from(total_commands.saturating_sub(ops.last_total));
        let index = ops.next;
        ops.per_sec[index] = u64::try_from(delta * 1000 / elapsed_ms).unwrap_or(u64::MAX);
        ops.next = (index + 1) % OPS_SAMPLES;
        ops.last_total = total_commands;
        ops.last_at = now;
    }

    pub(crate) fn reset(&self) {
        self.handoff_us.lock().reset();
        let mut ops = self.ops.lock();
        ops.per_sec = [0; OPS_SAMPLES];
        ops.last_total = 0;
    }

    pub(crate) fn instantaneous_ops_per_sec(&self) -> u64 {
        let ops = self.ops.lock();
        ops.per_sec.iter().sum::<u64>() / OPS_SAMPLES as u64
    }
}

/// Every figure the Prometheus endpoint exports, read at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Figures {
    pub(crate) core: CoreStats,
    pub(crate) connections_received: u64,
    pub(crate) commands_processed: u64,
    pub(crate) rejected_connections: u64,
    pub(crate) connected_clients: u64,
    pub(crate) blocked_clients: u64,
    pub(crate) handoffs_written_by_unlocker: u64,
    pub(crate) dones_written_by_unlocker: u64,
    pub(crate) ops_per_sec: u64,
    pub(crate) handoff: HandoffLatency,
    /// None without a journal (`--appendonly no`).
    pub(crate) journal: Option<JournalFigures>,
}

/// What the journal has done since the server started.
#[derive(Debug, Clone)]
pub(crate) struct JournalFigures {
    pub(crate) records_written: u64,
    pub(crate) bytes_written: u64,
    /// Rewrites of the journal as a snapshot (compactions) that completed.
    pub(crate) rewrites: u64,
    pub(crate) fsyncs: u64,
    pub(crate) fsync_seconds: f64,
    /// (upper bound in seconds, fsyncs that took at most that long), bounds ascending.
    pub(crate) fsync_buckets: Vec<(f64, u64)>,
}

/// The Prometheus text page, recorded from the figures when it is asked for: nothing is
/// refreshed while nobody scrapes.
pub(crate) struct Prometheus {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Prometheus {
    fn default() -> Prometheus {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Prometheus { recorder, handle }
    }
}

impl Prometheus {
    /// The page for `figures`.
    pub(crate) fn render(&self, figures: &Figures) -> String {
        self.publish(figures);
        let mut page = self.handle.render();
        page.push_str(&process_cpu_counter());
        if let Some(journal) = &figures.journal {
            page.push_str(&fsync_histogram(journal));
        }
        page
    }

    /// Copies the figures into the recorder (counters as absolute values).
    fn publish(&self, figures: &Figures) {
        let core = &figures.core;
        let latency = &figures.handoff;
        metrics::with_local_recorder(&self.recorder, || {
            let counters = [
                ("baton_lock_grants_total", core.grants),
                ("baton_lock_handoffs_total", core.handoffs),
                ("baton_lock_handoffs_written_by_unlocker_total", figures.handoffs_written_by_unlocker),
                ("baton_lock_dones_written_by_unlocker_total", figures.dones_written_by_unlocker),
                ("baton_lock_successes_total", core.successes),
                ("baton_lock_failures_total", core.failures),
                ("baton_lock_lease_expiries_total", core.lease_expiries),
                ("baton_lock_disconnect_releases_total", core.disconnect_releases),
                ("baton_lock_done_answers_total", core.done_answers),
                ("baton_connections_received_total", figures.connections_received),
                ("baton_commands_processed_total", figures.commands_processed),
                ("baton_rejected_connections_total", figures.rejected_connections),
                ("baton_log_lines_dropped_total", logging::lines_dropped()),
            ];
            for (name, value) in counters {
                metrics::counter!(name).absolute(value);
            }
            let gauges = [
                ("baton_locks_held", core.held_keys),
                ("baton_lock_waiters", core.waiters),
                ("baton_lock_blocked_waiters", core.blocked_waiters),
                ("baton_lock_keys", core.keys),
                ("baton_connected_clients", figures.connected_clients),
                ("baton_blocked_clients", figures.blocked_clients),
                ("baton_instantaneous_ops_per_sec", figures.ops_per_sec),
            ];
            for (name, value) in gauges {
                metrics::gauge!(name).set(value as f64);
            }
            for (quantile, micros) in [("0.5", latency.p50_us), ("0.99", latency.p99_us), ("0.999", latency.p999_us)] {
                metrics::gauge!("baton_handoff_latency_seconds", "quantile" => quantile).set(micros as f64 / 1e6);
            }
            metrics::counter!("baton_handoff_latency_samples_total").absolute(latency.count);
            if let Some(journal) = &figures.journal {
                let counters = [
                    ("baton_journal_records_written_total", journal.records_written),
                    ("baton_journal_bytes_written_total", journal.bytes_written),
                    ("baton_journal_rewrites_total", journal.rewrites),
                ];
                for (name, value) in counters {
                    metrics::counter!(name).absolute(value);
                }
            }
        });
    }
}

/// `baton_journal_fsync_seconds` in Prometheus's histogram format. Written out here: the page's
/// recorder is given figures when scraped, and a histogram there could only be fed samples.
/// Written here rather than through the recorder, whose counters hold whole numbers: the
/// standard name every Prometheus client library exports, in seconds.
fn process_cpu_counter() -> String {
    let name = "process_cpu_seconds_total";
    format!(
        "# HELP {name} Total user and system CPU time spent in seconds.\n# TYPE {name} counter\n{name} {:.6}\n",
        cpu::process_seconds()
    )
}

fn fsync_histogram(journal: &JournalFigures) -> String {
    let name = "baton_journal_fsync_seconds";
    let mut text = format!("# HELP {name} Time each fsync of the journal took.\n# TYPE {name} histogram\n");
    for (bound, count) in &journal.fsync_buckets {
        text.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {count}\n"));
    }
    text.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {}\n", journal.fsyncs));
    text.push_str(&format!("{name}_sum {}\n{name}_count {}\n", journal.fsync_seconds, journal.fsyncs));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_rate_is_the_mean_of_recent_samples() {
        let metrics = Metrics::new();
        let start = Instant::now();
        for step in 1..=OPS_SAMPLES as u64 {
            metrics.sample_ops(step * 100, start + OPS_SAMPLE_INTERVAL * step as u32);
        }
        // 100 commands every 100 ms, after the first sample which also counts from t=start.
        assert_eq!(metrics.instantaneous_ops_per_sec(), 1_000);
    }

    #[test]
    fn handoff_percentiles() {
        let metrics = Metrics::new();
        for micros in 1..=1_000 {
            metrics.record_handoff(Duration::from_micros(micros));
        }
        let latency = metrics.handoff_latency();
        assert_eq!(latency.count, 1_000);
        assert!((495..=505).contains(&latency.p50_us), "{latency:?}");
        assert!((985..=995).contains(&latency.p99_us), "{latency:?}");
        assert!(latency.max_us >= 1_000);
    }
}
