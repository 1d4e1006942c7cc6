//! C3: failover. With all members up and agreeing on a leader, a client that has just taken and
//! released a lock watches the leader get SIGKILLed, then tries to take a lock until it is granted:
//! the time from the kill to that grant is one sample.
//!
//! Each attempt is abandoned after `--attempt-ms` and sent again: a request that reached a member
//! while there was no leader may hang until that member's own request timeout (etcd's is 7 s), so
//! the attempt bound, not the server, would set the figure. A new attempt on the same name is
//! harmless on both systems (the same owner, the same lease: the holder's own grant comes back).
//! The figure is thus at most an attempt (plus the pause) later than the first moment a grant
//! could be had. Before each kill, and after the last, the
//! given command restarts whatever member is down and the members must agree on a leader.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use crate::cli::{ClusterCommon, ClusterTarget};
use crate::locker::{Locker, Outcome, await_leader, timeout};
use crate::report::{emit_latencies, note};
use crate::results::System;
use crate::stats::{new_hist, now_ns, secs_ns};
use crate::{Res, fail};

/// Between a failed attempt and the next.
const PAUSE: Duration = Duration::from_millis(10);

pub async fn failover(
    cluster: &ClusterCommon,
    kills: usize,
    pid_dir: &Path,
    restart: &str,
    attempt_ms: u64,
    max_seconds: f64,
) -> Res<()> {
    if cluster.target == ClusterTarget::BatonSingle {
        return fail("one baton node has no failover");
    }
    let system = System::from(cluster.target);
    let timeout = timeout(cluster);
    let mut hist = new_hist();
    for kill in 1..=kills {
        // Also brings back a member an interrupted run left down.
        restart_down(restart).await?;
        let Some(leader) = await_leader(cluster, Duration::from_secs(60)).await? else {
            return fail("no leader");
        };
        let pid_file = pid_dir.join(format!("n{leader}.pid"));
        let pid = std::fs::read_to_string(&pid_file).map_err(|error| format!("{}: {error}", pid_file.display()))?;
        let pid = pid.trim();
        let mut prober = Locker::connect(cluster, format!("c3-{kill}")).await?;
        let warm = prober.take(&format!("c3:warm:{kill}"), timeout).await?;
        prober.release(warm, Outcome::Success, timeout).await?;
        let killed_at = now_ns();
        let status = Command::new("kill").args(["-KILL", pid]).status().await?;
        if !status.success() {
            return fail(format!("kill -KILL {pid} (member {leader}) failed"));
        }
        let give_up_at = killed_at + secs_ns(max_seconds);
        let attempt = Duration::from_millis(attempt_ms);
        let Some(granted_at) = first_grant(&mut prober, &format!("c3:{kill}"), attempt, give_up_at).await? else {
            return fail(format!("kill {kill}: no lock granted within {max_seconds} s of the kill"));
        };
        hist.saturating_record(granted_at - killed_at);
        note(format!(
            "{system}: kill {kill}/{kills}: leader n{leader} (pid {pid}); a lock granted after {:.0} ms",
            (granted_at - killed_at) as f64 / 1e6
        ));
    }
    restart_down(restart).await?;
    let workload = "C3 cluster failover: SIGKILL the leader, time to the first lock granted";
    emit_latencies("c3.failover", system, &hist, &format!("{workload} ({kills} kills)"), "kill to grant");
    Ok(())
}

/// Runs the command that starts the members that are down and returns once all are up.
async fn restart_down(restart: &str) -> Res<()> {
    let restarted = tokio::time::timeout(Duration::from_secs(120), Command::new("sh").args(["-c", restart]).status());
    match restarted.await {
        Ok(Ok(status)) if status.success() => Ok(()),
        other => fail(format!("restart command {restart:?} failed: {other:?}")),
    }
}

/// Takes `name` over and over until it is granted; returns when, or None at `give_up_at`. The lock
/// is left to the prober's end (its connections closing on baton, its lease running out on etcd):
/// an unlock could meet the cluster still settling and is no part of the measurement.
async fn first_grant(prober: &mut Locker, name: &str, attempt: Duration, give_up_at: u64) -> Res<Option<u64>> {
    loop {
        if prober.take(name, attempt).await.is_ok() {
            return Ok(Some(now_ns()));
        }
        if now_ns() > give_up_at {
            return Ok(None);
        }
        tokio::time::sleep(PAUSE).await;
    }
}
