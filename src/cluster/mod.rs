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

#[cfg(test)]
mod tests;
