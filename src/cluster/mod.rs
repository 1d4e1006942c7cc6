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
//! log and vote; [`state_machine`] applies committed entries to a core and snapshots it; [`bus`]
//! carries Raft's messages between nodes (`bus::security`: TLS and the handshake that admits a
//! peer); [`node`] puts them together; [`proposals`] numbers the
//! live core's changes and tells replies when theirs are committed; [`leadership`] makes the
//! node serve clients while it leads and stop when it does not; [`topology`] is what the Redis
//! Cluster protocol shows of all this.

pub(crate) mod bus;
pub(crate) mod identity;
pub(crate) mod leadership;
pub(crate) mod log_store;
pub(crate) mod membership;
pub(crate) mod node;
pub(crate) mod proposals;
pub(crate) mod raft;
pub(crate) mod state_machine;
pub(crate) mod topology;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::type_config::async_runtime::WatchReceiver;

use self::bus::security::BusSecurity;
use self::node::Node;
use self::proposals::{Lost, Proposals};
use self::raft::Member;
use self::topology::{Peer, Redirect, Topology};
use crate::config::{ClusterId, Config};
use crate::core::{Clock, CoreSettings, Gauges};

/// The running server's cluster membership: its Raft node, the members it was started with, and
/// whether it serves clients now.
pub(crate) struct Cluster {
    node: Node,
    id: ClusterId,
    peers: Vec<Peer>,
    /// `--cluster-bus-port`: the bus port of a member whose own is not named.
    default_bus_port: Option<u16>,
    proposals: Arc<Proposals>,
    /// The term in which this node serves clients as leader; 0 while it does not.
    serving_term: AtomicU64,
}

impl Cluster {
    /// Starts this node's Raft when the flags make it a cluster node (None otherwise).
    pub(crate) async fn start(config: &Config, settings: CoreSettings, clock: Clock) -> io::Result<Option<Cluster>> {
        let (Some(id), Some(peers)) = (config.cluster_node_id, &config.cluster_peers) else {
            return Ok(None);
        };
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        let mut members = Vec::new();
        for peer in &peers.0 {
            let bus_addr = membership::bus_addr(peer.client_addr, peer.bus_port.or(config.cluster_bus_port))
                .ok_or_else(|| {
                    invalid(format!(
                        "node {}'s port {} + 10000 is no port: name its bus port (id@host:port@busport)",
                        peer.id,
                        peer.client_addr.port()
                    ))
                })?;
            members.push(Peer { id: peer.id, client_addr: peer.client_addr, bus_addr });
        }
        let own = members
            .iter()
            .find(|peer| peer.id == id)
            .ok_or_else(|| invalid(format!("--cluster-node-id {id} is not in --cluster-peers")))?;
        if !config.ephemeral_port && own.client_addr.port() != config.port {
            return Err(invalid(format!(
                "--cluster-peers names node {id} at {}, but this node listens on port {}",
                own.client_addr, config.port
            )));
        }
        let raft_members: BTreeMap<u64, Member> =
            members.iter().map(|peer| (peer.id, Member { client: peer.client_addr, bus: peer.bus_addr })).collect();
        let wall_ms_at_zero = proposals::wall_ms_at_zero(clock.now());
        let cluster_id = identity::resolve(&config.dir.join("raft"), config.cluster_join, peers)?;
        let security = BusSecurity::from_config(config, cluster_id).map_err(invalid)?;
        let joining = config.cluster_join.is_some();
        let node = Node::start(id, &raft_members, &config.dir, settings, clock, Arc::new(security), joining).await?;
        Ok(Some(Cluster {
            node,
            id: cluster_id,
            peers: members,
            default_bus_port: config.cluster_bus_port,
            proposals: Arc::new(Proposals::new(wall_ms_at_zero)),
            serving_term: AtomicU64::new(0),
        }))
    }

    /// What CLUSTER replies and -MOVED are made from, read now.
    pub(crate) fn topology(&self) -> Topology {
        let metrics = self.node.raft.metrics().borrow_watched().clone();
        // The members the log says, once it says any (a member added later is known to every
        // node that way); before the cluster forms, the ones this node was started with.
        let members: Vec<Peer> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, member)| Peer { id: *id, client_addr: member.client, bus_addr: member.bus })
            .collect();
        let peers = if members.is_empty() { self.peers.clone() } else { members };
        let mut reachable = vec![self.node.id];
        match &metrics.heartbeat {
            // The leader hears from every member.
            Some(heartbeats) => {
                reachable.extend(heartbeats.iter().filter(|(_, seen)| seen.is_some()).map(|(id, _)| *id));
            }
            // A follower hears only from the leader, which keeps its quorum: it cannot tell which
            // other member is down, and does not show a healthy one as failing.
            None if metrics.current_leader.is_some() => reachable.extend(peers.iter().map(|peer| peer.id)),
            None => {}
        }
        reachable.sort_unstable();
        reachable.dedup();
        Topology {
            cluster: self.id,
            myself: self.node.id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            peers,
            reachable,
        }
    }

    /// What the replicated state holds, as of the last entry this node applied.
    pub(crate) fn replicated_gauges(&self) -> Gauges {
        self.node.state.core().0.gauges()
    }

    /// The term in which this node serves clients as leader; 0 while it does not (key commands
    /// are then redirected).
    pub(crate) fn serving_term(&self) -> u64 {
        self.serving_term.load(Ordering::Acquire)
    }

    /// The live core's change sink while this node runs.
    pub(crate) fn proposals(&self) -> Arc<Proposals> {
        Arc::clone(&self.proposals)
    }

    /// A reply sent now depends on the changes made so far, up to this one.
    pub(crate) fn position(&self) -> u64 {
        self.proposals.position()
    }

    pub(crate) fn is_committed(&self, position: u64) -> bool {
        self.proposals.fate(position) == Some(Ok(()))
    }

    /// Waits until the changes up to `position` are committed, or are known never to be.
    pub(crate) async fn committed(&self, position: u64) -> Result<(), Lost> {
        self.proposals.settled(position).await
    }

    /// Where a command on `key` must go while this node does not serve it: to the leader, or
    /// nowhere yet while none is known or this node, just elected, is not serving yet.
    pub(crate) fn redirect(&self, key: &[u8]) -> Redirect {
        self.topology().redirect(key).unwrap_or(Redirect::Down)
    }

    /// Stops the node's Raft and its bus.
    pub(crate) async fn stop(&self) {
        self.node.stop().await;
    }
}

/// Shared by every connection; None when not started as a cluster node.
pub(crate) type ClusterHandle = Option<Arc<Cluster>>;
