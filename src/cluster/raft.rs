//! The consensus engine, openraft, pinned to one pre-1.0 version (`=0.10.0-alpha.37` in
//! Cargo.toml): its types are declared here once and the rest of the cluster names them through
//! these aliases, so an upgrade touches this module and the trait implementations only.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A Raft node's id, as given by `--cluster-node-id`.
pub(crate) type NodeId = u64;

/// One log entry's application data: journal records (see `journal::record`) framed as the
/// journal frames them, the batches of changes the leader's core made since its last entry. The
/// log stores them without looking inside; only the state machine decodes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record(pub(crate) Vec<u8>);

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "records of {} bytes", self.0.len())
    }
}

/// A member as the Raft membership records it, so that every node knows every member, also one
/// added after this node was started: where clients reach it (what -MOVED and CLUSTER SLOTS
/// name) and where the other nodes do (its bus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    pub(crate) client: SocketAddr,
    pub(crate) bus: SocketAddr,
}

openraft::declare_raft_types!(
    /// baton's Raft types: entries carry journal records; applying one answers nothing (replies
    /// come from the leader's live core).
    pub(crate) TypeConfig:
        D = Record,
        R = (),
        Node = Member,
);

/// A node's handle on its Raft.
pub(crate) type Raft = openraft::Raft<TypeConfig, super::state_machine::StateMachine>;
pub(crate) type Entry = openraft::alias::EntryOf<TypeConfig>;
pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::alias::VoteOf<TypeConfig>;
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its data: the core as framed journal records (see `state_machine`).
pub(crate) type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;

/// Heartbeats every 100 ms; elections after 250-500 ms of silence. In openraft a follower
/// starts an election only once the leader's lease (the maximum election timeout, 500 ms) *and*
/// its own election timeout have run out since it last heard from the leader: 750-1000 ms, after
/// which a dead leader is replaced within a vote round. That is the silence a leader must keep to
/// be deposed: about as long as etcd's 1 s election timeout, and far above a loaded 2-core host's
/// scheduling and fsync tails (openraft's defaults, 150-300 ms, would depose leaders that are
/// merely slow). With 500-1000 ms the silence was 1.5-2 s, and failovers took 1.6-2.0 s.
///
/// No leader restore: openraft would let a leader that restarts resume leading in its old term
/// without an election. Its state machine is rebuilt from the snapshot and the log, and the
/// commit point is not on disk, so it would not know what had been committed and would serve
/// from a state machine missing the latest committed changes (a lock released before the
/// restart held again after it). An election's first entry, committed in the new term, tells
/// it: the promotion's read barrier waits until everything before it is applied.
///
/// Pre-vote: a node that was cut off has timed out again and again meanwhile; without asking
/// first whether the others would vote for it, it would come back with a higher term and depose
/// the leader they follow, a second of unavailability for nothing.
pub(crate) fn config() -> openraft::Config {
    openraft::Config {
        cluster_name: "baton".to_owned(),
        heartbeat_interval: 100,
        election_timeout_min: 250,
        election_timeout_max: 500,
        enable_pre_vote: Some(true),
        enable_leader_restore: Some(false),
        ..Default::default()
    }
}
