//! The consensus engine, openraft, pinned to one pre-1.0 version (`=0.10.0-alpha.37` in
//! Cargo.toml): its types are declared here once and the rest of the cluster names them through
//! these aliases, so an upgrade touches this module and the trait implementations only.

use serde::{Deserialize, Serialize};

/// A Raft node's id, as given by `--cluster-node-id`.
pub(crate) type NodeId = u64;

/// One log entry's application data: one journal record (see `journal::record`), as bytes. The
/// log stores it without looking inside; only the state machine decodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record(pub(crate) Vec<u8>);

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "record of {} bytes", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// baton's Raft types: entries carry journal records; applying one answers nothing (replies
    /// come from the leader's live core).
    pub(crate) TypeConfig:
        D = Record,
        R = (),
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

/// Heartbeats and elections slow enough for the fsync tails of a loaded machine (a few ms at
/// p99 here) and for a 2-core host running three nodes, as etcd's defaults are (100 ms heartbeat,
/// 1 s election timeout): openraft's defaults (50 ms, 150-300 ms) would depose leaders that are
/// merely slow.
pub(crate) fn config() -> openraft::Config {
    openraft::Config {
        cluster_name: "baton".to_owned(),
        heartbeat_interval: 100,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        ..Default::default()
    }
}
