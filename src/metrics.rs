//! Figures for INFO and the Prometheus endpoint that need more than a counter: the instantaneous
//! command rate (sampled like Redis's, 16 samples 100 ms apart) and hand-off latency percentiles.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::server::Shared;

const OPS_SAMPLES: usize = 16;
pub const OPS_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct OpsSampler {
    last_total: u64,
    last_at: Instant,
    per_sec: [u64; OPS_SAMPLES],
    next: usize,
}

/// Hand-off latency in microseconds, over the server's lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffLatency {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

#[derive(Debug)]
pub struct Metrics {
    ops: Mutex<OpsSampler>,
    handoff_us: Mutex<Histogram<u64>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid")));
        Metrics {
            ops: Mutex::new(OpsSampler { last_total: 0, last_at: Instant::now(), per_sec: [0; OPS_SAMPLES], next: 0 }),
            handoff_us: Mutex::new(histogram),
        }
    }

    /// Time from the core sending a grant to a blocked waiter until its reply was written.
    pub fn record_handoff(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.handoff_us.lock().saturating_record(micros);
    }

    pub fn handoff_latency(&self) -> HandoffLatency {
        let histogram = self.handoff_us.lock();
        HandoffLatency {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }

    pub fn sample_ops(&self, total_commands: u64, now: Instant) {
        let mut ops = self.ops.lock();
        let elapsed_ms = now.saturating_duration_since(ops.last_at).as_millis().max(1);
        let delta = u128::from(total_commands.saturating_sub(ops.last_total));
        let index = ops.next;
        ops.per_sec[index] = u64::try_from(delta * 1000 / elapsed_ms).unwrap_or(u64::MAX);
        ops.next = (index + 1) % OPS_SAMPLES;
        ops.last_total = total_commands;
        ops.last_at = now;
    }

    pub fn reset(&self) {
        self.handoff_us.lock().reset();
        let mut ops = self.ops.lock();
        ops.per_sec = [0; OPS_SAMPLES];
        ops.last_total = 0;
    }

    pub fn instantaneous_ops_per_sec(&self) -> u64 {
        let ops = self.ops.lock();
        ops.per_sec.iter().sum::<u64>() / OPS_SAMPLES as u64
    }
}

/// Samples the command rate until shutdown.
pub async fn sample_ops(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(OPS_SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let total = shared.stats.total_commands_processed.load(Ordering::Relaxed);
                shared.metrics.sample_ops(total, Instant::now());
            }
            () = shared.shutdown.cancelled() => return,
        }
    }
}

/// Starts the Prometheus exporter on `addr` and keeps its figures current until shutdown.
pub async fn serve_prometheus(shared: Arc<Shared>, addr: SocketAddr) {
    let (recorder, exporter) = match PrometheusBuilder::new().with_http_listener(addr).build() {
        Ok(built) => built,
        Err(error) => {
            warn!(%addr, %error, "cannot start the Prometheus endpoint");
            return;
        }
    };
    info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    let exporter = tokio::spawn(exporter);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = ticker.tick() => publish(&shared, &recorder),
            () = shared.shutdown.cancelled() => break,
        }
    }
    exporter.abort();
}

/// Copies the server's figures into the recorder (counters as absolute values).
fn publish(shared: &Shared, recorder: &PrometheusRecorder) {
    let core = shared.core.stats();
    let stats = &shared.stats;
    let latency = shared.metrics.handoff_latency();
    metrics::with_local_recorder(recorder, || {
        let counters = [
            ("baton_lock_grants_total", core.grants),
            ("baton_lock_handoffs_total", core.handoffs),
            ("baton_lock_successes_total", core.successes),
            ("baton_lock_failures_total", core.failures),
            ("baton_lock_lease_expiries_total", core.lease_expiries),
            ("baton_lock_disconnect_releases_total", core.disconnect_releases),
            ("baton_lock_done_answers_total", core.done_answers),
            ("baton_connections_received_total", stats.total_connections_received.load(Ordering::Relaxed)),
            ("baton_commands_processed_total", stats.total_commands_processed.load(Ordering::Relaxed)),
            ("baton_rejected_connections_total", stats.rejected_connections.load(Ordering::Relaxed)),
        ];
        for (name, value) in counters {
            metrics::counter!(name).absolute(value);
        }
        let gauges = [
            ("baton_locks_held", core.held_keys),
            ("baton_lock_waiters", core.waiters),
            ("baton_lock_blocked_waiters", core.blocked_waiters),
            ("baton_lock_keys", core.keys),
            ("baton_connected_clients", shared.clients.len() as u64),
            ("baton_blocked_clients", stats.blocked_clients.load(Ordering::Relaxed)),
            ("baton_instantaneous_ops_per_sec", shared.metrics.instantaneous_ops_per_sec()),
        ];
        for (name, value) in gauges {
            metrics::gauge!(name).set(value as f64);
        }
        for (quantile, micros) in [("0.5", latency.p50_us), ("0.99", latency.p99_us), ("0.999", latency.p999_us)] {
            metrics::gauge!("baton_handoff_latency_seconds", "quantile" => quantile).set(micros as f64 / 1e6);
        }
        metrics::counter!("baton_handoff_latency_samples_total").absolute(latency.count);
    });
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
