//! The replicated cluster (issue 12): baton nodes that agree, through Raft, on the changes of the
//! lock core, so that the locks survive the loss of any minority of nodes.
//!
//! What is replicated is what the journal records: the core's [`crate::core::Change`] batches,
//! encoded as journal records. The leader serves clients from its live core exactly as a single
//! node does, and each batch the core emits is proposed as one log entry instead of being written
//! to the journal; a reply that reports a state change waits for its entry to commit, where a
//! single node waits for its record to be written. Followers apply committed entries to their own
//! core by replay, the same code that rebuilds a core from the journal after a restart, so one
//! encoding and one replay serve both and are tested once. Replicating effects rather than
//! commands keeps the core's hot path (hand-offs under the shard lock, timers, blocked WAITs)
//! unchanged and makes applying an entry deterministic without a clock: tokens, leases and
//! hand-off decisions are the leader's and arrive as facts.
//!
//! Layout: [`raft`] pins the consensus engine and declares its types; [`log_store`] keeps the Raft
//! log and vote; [`state_machine`] applies committed entries to a core and snapshots it.

pub(crate) mod bus;
pub(crate) mod log_store;
pub(crate) mod node;
pub(crate) mod raft;
pub(crate) mod state_machine;
pub(crate) mod topology;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use openraft::type_config::async_runtime::WatchReceiver;

use self::node::Node;
use self::topology::{Peer, Topology};

/// The running server's cluster membership: its Raft node and the members it was started with.
pub(crate) struct Cluster {
    node: Node,
    peers: Vec<Peer>,
}

impl Cluster {
    /// What CLUSTER replies and -MOVED are made from, read now.
    pub(crate) fn topology(&self) -> Topology {
        let metrics = self.node.raft.metrics().borrow_watched().clone();
        let mut reachable = vec![self.node.id];
        if let Some(heartbeats) = &metrics.heartbeat {
            reachable.extend(heartbeats.iter().filter(|(_, seen)| seen.is_some()).map(|(id, _)| *id));
        }
        reachable.sort_unstable();
        reachable.dedup();
        Topology {
            myself: self.node.id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            peers: self.peers.clone(),
            reachable,
        }
    }
}

/// Shared by every connection; None when not started as a cluster node.
pub(crate) type ClusterHandle = Option<Arc<Cluster>>;
