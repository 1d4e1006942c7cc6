//! C1: lock+unlock cycles on distinct names, one client per name, through the cluster's own client
//! (baton: LOCK.TRY + LOCK.UNLOCK SUCCESS; etcd: Lock + Unlock on the client's lease); and the
//! same cycles against one baton server, the baseline the cluster's cost is read against.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::cli::{ClusterCommon, ClusterTarget};
use crate::locker::{Locker, Outcome, await_leader, timeout};
use crate::report::{Better, emit, emit_latencies};
use crate::stats::{new_hist, now_ns, secs_ns};
use crate::{Res, join_all};

pub async fn cluster_cycle(cluster: &ClusterCommon, clients: usize, duration: f64, warmup: f64) -> Res<()> {
    await_leader(cluster, Duration::from_secs(30)).await?;
    let lockers: Vec<Locker> = futures_util::stream::iter(0..clients)
        .map(|index| Locker::connect(cluster, format!("c1-{index}")))
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let start = now_ns();
    let measure_from = start + secs_ns(warmup);
    let end = measure_from + secs_ns(duration);
    let mut set = JoinSet::new();
    for (index, locker) in lockers.into_iter().enumerate() {
        set.spawn(cycles(locker, format!("c1:{index}"), measure_from, end, timeout(cluster)));
    }
    let mut hist = new_hist();
    let mut count = 0;
    for (cycles, part) in join_all(set).await? {
        count += cycles;
        hist.add(&part)?;
    }
    let rate = count as f64 / ((end - measure_from) as f64 / 1e9);
    let workload = format!("C1 cluster lock+unlock cycles, {clients} clients");
    let id = if cluster.target == ClusterTarget::BatonSingle { "c1.single" } else { "c1" };
    let what = if cluster.target == ClusterTarget::BatonSingle { "one node: " } else { "" };
    emit(&format!("{id}.rate"), cluster.target, rate, Better::Higher, &workload, &format!("{what}cycles/s"));
    emit_latencies(&format!("{id}.lat"), cluster.target, &hist, &workload, &format!("{what}cycle latency"));
    Ok(())
}

/// Cycles on `name` until `end`; returns the cycles that started at `measure_from` or later and
/// ended by `end`, and their latencies.
async fn cycles(
    mut locker: Locker,
    name: String,
    measure_from: u64,
    end: u64,
    timeout: Duration,
) -> Res<(u64, Histogram<u64>)> {
    let mut hist = new_hist();
    let mut count = 0;
    loop {
        let t0 = now_ns();
        if t0 >= end {
            return Ok((count, hist));
        }
        let held = locker.take(&name, timeout).await?;
        locker.release(held, Outcome::Success, timeout).await?;
        let t1 = now_ns();
        if t0 >= measure_from && t1 <= end {
            count += 1;
            hist.saturating_record(t1 - t0);
        }
    }
}
