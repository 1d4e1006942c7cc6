//! What a node knows of its cluster at one moment, in the terms the Redis Cluster protocol shows
//! it in (CLUSTER SLOTS / SHARDS / NODES / INFO, -MOVED): one shard that owns every slot, the
//! Raft leader as its master and the other members as its replicas.

use std::net::SocketAddr;

use super::raft::NodeId;

/// A member of the cluster as `--cluster-peers` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    /// Where clients reach it (what -MOVED and CLUSTER SLOTS name).
    pub(crate) client_addr: SocketAddr,
    /// Where the other nodes reach it.
    pub(crate) bus_addr: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Topology {
    pub(crate) myself: NodeId,
    /// The leader this node knows of; None during an election (clients get -CLUSTERDOWN).
    pub(crate) leader: Option<NodeId>,
    /// The Raft term, which plays Redis Cluster's epochs.
    pub(crate) term: u64,
    /// Every member, in id order.
    pub(crate) peers: Vec<Peer>,
    /// Members this node has recently heard from (itself included); the others show as failing.
    pub(crate) reachable: Vec<NodeId>,
}

impl Topology {
    pub(crate) fn peer(&self, id: NodeId) -> Option<&Peer> {
        self.peers.iter().find(|peer| peer.id == id)
    }

    /// Where key commands must go: the leader's client address.
    pub(crate) fn leader_addr(&self) -> Option<SocketAddr> {
        self.leader.and_then(|id| self.peer(id)).map(|peer| peer.client_addr)
    }
}

/// Where a key command goes when this node does not serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// To the leader, which owns every slot.
    Moved { slot: u16, addr: SocketAddr },
    /// Nowhere yet: no leader is known, or this node was just elected and is not serving yet.
    Down,
}
