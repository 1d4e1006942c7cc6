//! Serving clients while this node leads, and only then.
//!
//! Promotion: once Raft elects this node, it first makes sure its state machine has applied
//! everything committed before its term (a read barrier at the term's first entry), then copies
//! that state into the live core the connections use, raises every shard's next token above
//! every token the state machine has seen and above the wall clock, and starts proposing the
//! live core's changes. Holders and places arrive with the leases the state machine armed when
//! it applied them, which is no earlier than the old leader granted them: no holder loses its
//! lock early because the leader changed.
//!
//! Stepping down: the node stops serving at once, every change not known committed is lost (its
//! replies never go out), and the live core is emptied, which ends every blocked LOCK.WAIT with
//! a redirection to the new leader.

use std::sync::Arc;
use std::time::Duration;

use openraft::raft::ReadPolicy;
use openraft::type_config::async_runtime::WatchReceiver;
use tracing::{info, warn};

use super::Cluster;
use super::raft::Record;
use crate::context::Shared;
use crate::core::token_seed;

/// How often leadership is looked at again when nothing changed: a promotion that failed (the
/// node lost its quorum while it waited) is retried this often.
const RECHECK: Duration = Duration::from_millis(100);

/// Follows this node's Raft role until shutdown, promoting and stepping down the live core.
pub(crate) async fn serve_while_leading(shared: Arc<Shared>) {
    let Some(cluster) = shared.cluster.clone() else {
        return;
    };
    let proposer = tokio::spawn(propose(Arc::clone(&shared), Arc::clone(&cluster)));
    let mut metrics = cluster.node.raft.metrics();
    loop {
        let (leads, term) = {
            let metrics = metrics.borrow_watched();
            (metrics.state.is_leader(), metrics.current_term)
        };
        let serving = cluster.serving_term();
        if serving != 0 && (!leads || serving != term) {
            step_down(&shared, &cluster, "this node no longer leads");
        }
        if leads && cluster.serving_term() == 0 {
            promote(&shared, &cluster, term).await;
        }
        tokio::select! {
            _ = metrics.changed() => {}
            () = tokio::time::sleep(RECHECK) => {}
            () = shared.shutdown.cancelled() => break,
        }
    }
    proposer.abort();
}

async fn promote(shared: &Shared, cluster: &Cluster, term: u64) {
    if let Err(error) = cluster.node.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
        info!(term, %error, "cluster: elected, but could not confirm the leadership yet");
        return;
    }
    let still_leads = {
        let metrics = cluster.node.raft.metrics().borrow_watched().clone();
        metrics.state.is_leader() && metrics.current_term == term
    };
    if !still_leads {
        return;
    }
    let started = std::time::Instant::now();
    let (committed, token_floor) = cluster.node.state.core();
    let now = shared.clock.now();
    shared.core.reset(token_seed(shared.config.wall_clock_offset_ms));
    for index in 0..committed.shard_count() {
        let (changes, ()) = committed.snapshot_shard(index, now, || ());
        shared.core.replay(changes, now);
    }
    shared.core.finish_replay(token_floor.max(token_seed(shared.config.wall_clock_offset_ms)));
    cluster.proposals.lead();
    cluster.serving_term.store(term, std::sync::atomic::Ordering::Release);
    info!(
        node = cluster.node.id,
        term,
        keys = shared.core.stats().keys,
        took_ms = started.elapsed().as_millis() as u64,
        "cluster: leading; serving clients"
    );
}

fn step_down(shared: &Shared, cluster: &Cluster, why: &str) {
    let term = cluster.serving_term.swap(0, std::sync::atomic::Ordering::AcqRel);
    if term == 0 {
        return;
    }
    cluster.proposals.step_down();
    shared.core.reset(token_seed(shared.config.wall_clock_offset_ms));
    warn!(node = cluster.node.id, term, why, "cluster: stopped leading; clients are sent to the new leader");
}

/// Proposes the live core's changes, one Raft entry at a time holding every batch queued while
/// the previous one was committing (group commit).
async fn propose(shared: Arc<Shared>, cluster: Arc<Cluster>) {
    loop {
        let (records, through) = cluster.proposals.next_proposal().await;
        match cluster.node.raft.client_write(Record(records)).await {
            Ok(_) => cluster.proposals.committed(through),
            Err(error) => step_down(&shared, &cluster, &format!("a proposal failed: {error}")),
        }
    }
}
