//! What a node knows of its cluster at one moment, in the terms the Redis Cluster protocol shows
//! it in (CLUSTER SLOTS / SHARDS / NODES / INFO, -MOVED): one shard that owns every slot, the
//! Raft leader as its master and the other members as its replicas.

use std::net::SocketAddr;

use super::raft::NodeId;
use crate::config::ClusterId;
use crate::core::key_slot;

/// The name Redis Cluster gives a node is 40 hex characters; a member's is its id in decimal,
/// zero-padded to 40 digits, so that every member names every member alike and an operator reads
/// the id off it.
pub(crate) fn node_name(id: NodeId) -> String {
    format!("{id:040}")
}

/// The id of the one shard (CLUSTER MYSHARDID), the same on every member; no member's name is
/// this one, since node ids start at 1.
pub(crate) const SHARD_ID: &str = "0000000000000000000000000000000000000000";

/// Why a key command must not run on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// Another member leads: the client retries there (`-MOVED`).
    Moved { slot: u16, addr: SocketAddr },
    /// No leader is known, as during an election (`-CLUSTERDOWN`): the client retries later.
    Down,
}

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
    /// What a node joining this cluster is given (`--cluster-join`).
    pub(crate) cluster: ClusterId,
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

    /// What to answer instead of running a command on `key` here; None when this node leads.
    pub(crate) fn redirect(&self, key: &[u8]) -> Option<Redirect> {
        if self.leader == Some(self.myself) {
            return None;
        }
        Some(match self.leader_addr() {
            Some(addr) => Redirect::Moved { slot: key_slot(key), addr },
            None => Redirect::Down,
        })
    }

    /// The member shown as the shard's master: the leader, or while none is known this node, which
    /// answers key commands with -CLUSTERDOWN. An election thus shows the slots still served, as
    /// a Redis failover shows them with the failed master until a replica takes over: a client
    /// that finds slots uncovered gives up (redis-py's RedisCluster raises an error it does not
    /// retry), whereas -CLUSTERDOWN makes it wait, refresh and retry.
    pub(crate) fn master(&self) -> NodeId {
        self.leader.unwrap_or(self.myself)
    }

    /// Whether this node has heard from `id` lately. Knowing a leader means hearing from it: a
    /// follower forgets its leader when the leader's heartbeats stop.
    pub(crate) fn is_reachable(&self, id: NodeId) -> bool {
        id == self.myself || self.leader == Some(id) || self.reachable.contains(&id)
    }
}

/// Members 1, 2 and 3 on 127.0.0.1:700N (bus 1700N) in term 7, seen from `myself`, which has
/// heard from no one else.
#[cfg(test)]
pub(crate) fn three_nodes(myself: NodeId, leader: Option<NodeId>) -> Topology {
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let peer = |id: NodeId| Peer { id, client_addr: addr(7000 + id as u16), bus_addr: addr(17000 + id as u16) };
    Topology {
        cluster: ClusterId([0xab; 32]),
        myself,
        leader,
        term: 7,
        peers: (1..=3).map(peer).collect(),
        reachable: vec![myself],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_forty_digits() {
        assert_eq!(node_name(1), "0000000000000000000000000000000000000001");
        assert_eq!(node_name(u64::MAX), "0000000000000000000018446744073709551615");
        assert_eq!(SHARD_ID.len(), 40);
    }

    #[test]
    fn the_leader_serves_followers_redirect_to_it() {
        assert_eq!(three_nodes(2, Some(2)).redirect(b"anything"), None);
        let moved = three_nodes(1, Some(2)).redirect(b"{user1000}.following");
        assert_eq!(moved, Some(Redirect::Moved { slot: 3443, addr: "127.0.0.1:7002".parse().unwrap() }));
        assert_eq!(three_nodes(1, None).redirect(b"k"), Some(Redirect::Down));
        assert_eq!(three_nodes(1, Some(9)).redirect(b"k"), Some(Redirect::Down), "a leader with no known address");
    }

    #[test]
    fn an_election_shows_this_node_as_master() {
        assert_eq!(three_nodes(3, None).master(), 3);
        assert_eq!(three_nodes(3, Some(1)).master(), 1);
    }

    #[test]
    fn the_leader_and_this_node_are_reachable() {
        let mut topology = three_nodes(1, Some(2));
        assert!(topology.is_reachable(1) && topology.is_reachable(2) && !topology.is_reachable(3));
        topology.reachable.push(3);
        assert!(topology.is_reachable(3));
    }
}
