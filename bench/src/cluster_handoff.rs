//! C2: hand-off latency through a cluster. A holder and its waiters pass one lock along: each
//! holder lets go at once (baton: LOCK.UNLOCK FAILURE, which hands the lock to the head of the
//! line; etcd: Unlock, whose deletion wakes the next key's Lock) and gets back in line once the
//! lock has moved on. Timed from the moment the holder starts its unlock to the moment the next
//! holder's wait (LOCK.WAIT, Lock) returns.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::cli::{ClusterCommon, ClusterTarget};
use crate::handoff::HandoffShared;
use crate::locker::{Held, Locker, Outcome, await_leader, timeout};
use crate::report::note;
use crate::results::System;
use crate::stats::now_ns;
use crate::{Res, fail, join_all};

const NAME: &str = "c2:handoff";

pub async fn cluster_handoff(cluster: &ClusterCommon, waiters: usize, handoffs: u64, max_seconds: f64) -> Res<()> {
    if cluster.target == ClusterTarget::BatonSingle {
        return fail("one baton node is C1's baseline only (W3 measures its hand-offs)");
    }
    await_leader(cluster, Duration::from_secs(30)).await?;
    let timeout = timeout(cluster);
    let mut holder = Locker::connect(cluster, "c2-0".to_owned()).await?;
    let held = holder.take(NAME, timeout).await?;
    let shared = Arc::new(HandoffShared::new(handoffs));
    let mut set = JoinSet::new();
    for index in 1..=waiters {
        let locker = Locker::connect(cluster, format!("c2-{index}")).await?;
        set.spawn(relay(locker, None, Arc::clone(&shared), timeout));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while holder.waiting(NAME, timeout).await? < waiters {
        if tokio::time::Instant::now() > deadline {
            return fail(format!("{waiters} waiters did not all queue within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    set.spawn(relay(holder, Some(held), Arc::clone(&shared), timeout));
    let finished = async {
        while !shared.stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs_f64(max_seconds), finished).await.is_err() {
        note(format!("{}: stopped after {max_seconds} s", System::from(cluster.target)));
        shared.stop.store(true, Ordering::Release);
    }
    // Every waiter still in line gets the lock once more, sees the stop and passes it on.
    match tokio::time::timeout(timeout, join_all(set)).await {
        Ok(result) => result?,
        Err(_) => return fail(format!("the waiters did not drain within {timeout:?}")),
    };
    let workload = format!("C2 cluster hand-off, {waiters} waiters on one lock");
    shared.emit("c2.handoff", cluster.target, &workload);
    Ok(())
}

/// Holds (letting go at once) or waits, until the run stops.
async fn relay(mut locker: Locker, mut held: Option<Held>, shared: Arc<HandoffShared>, timeout: Duration) -> Res<()> {
    loop {
        let holding = match held.take() {
            Some(holding) => holding,
            None => {
                let holding = locker.wait(NAME, timeout).await?;
                if shared.acquired(now_ns()) {
                    return locker.release(holding, Outcome::Failure, timeout).await;
                }
                holding
            }
        };
        let mut moved = shared.generation.subscribe();
        moved.borrow_and_update();
        shared.unlock_sent.store(now_ns(), Ordering::Release);
        locker.release(holding, Outcome::Failure, timeout).await?;
        if !shared.moved_on(moved).await {
            return Ok(());
        }
    }
}
