//! The durable changes of a key's state, as the journal records them and a recovery replays them.
//!
//! Each [`Change`] is one step of the state a restart must keep: who holds a key (owner, token,
//! lease), who waits in line and in what order, the remembered completion and the DONEs owed,
//! the answers of recent UNLOCKs. What does not survive a restart is not recorded: blocked WAITs
//! (the client re-sends them), connection bindings (they re-form on the next TRY, WAIT or EXTEND),
//! statistics. Changes are emitted in the order the core makes them, under the shard lock, so
//! replaying them in that order rebuilds the same state; a snapshot is the live state re-expressed
//! as the changes that build it.
//!
//! Times: leases travel as durations (a recovery re-arms every holder and place for its whole
//! lease from the moment it recovers, never shorter than what was promised); the ends of a
//! completion and of an owed DONE travel as deadlines on the recording server's clock, which the
//! journal turns into wall-clock time and back.

use std::sync::Arc;

use super::events::ReleaseCause;
use super::outcome::{Completion, UnlockOutcome};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `owner` holds `key` with `token` for `lease_ms` from now: a grant, or the holder renewed
    /// (a re-TRY, a WAIT) or extended its lease.
    Hold {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
        token: u64,
        lease_ms: u64,
    },
    /// The holding ended: by SUCCESS (no cause) or for `cause`, which LOCK.INFO then reports.
    Free {
        key: Arc<[u8]>,
        cause: Option<ReleaseCause>,
    },
    /// `owner` joins the end of the line, or renews its place (kept where it is) for `lease_ms`.
    Join {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
        lease_ms: u64,
    },
    Leave {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
    },
    /// A SUCCESS emptied the line.
    LeaveAll {
        key: Arc<[u8]>,
    },
    /// The holding `completion.token` ended in SUCCESS; `Keep` and `Owe` refer to it by token.
    /// Recorded only before the first of them: a SUCCESS with neither leaves nothing to replay.
    Finish {
        key: Arc<[u8]>,
        completion: Arc<Completion>,
    },
    /// The completion of `token` is remembered (KEEP) until `until`.
    Keep {
        key: Arc<[u8]>,
        token: u64,
        until: u64,
    },
    /// The remembered completion is forgotten.
    Unkeep {
        key: Arc<[u8]>,
    },
    /// `owner` is owed the DONE of the completion `token` until `until`.
    Owe {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
        token: u64,
        until: u64,
    },
    /// The DONE owed to `owner` was delivered or ran out.
    Paid {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
    },
    /// The UNLOCK of `owner`'s holding `token` answered `outcome`: a retried UNLOCK gets it again.
    Unlocked {
        key: Arc<[u8]>,
        owner: Arc<[u8]>,
        token: u64,
        outcome: UnlockOutcome,
    },
}

impl Change {
    pub fn key(&self) -> &Arc<[u8]> {
        match self {
            Change::Hold { key, .. }
            | Change::Free { key, .. }
            | Change::Join { key, .. }
            | Change::Leave { key, .. }
            | Change::LeaveAll { key }
            | Change::Finish { key, .. }
            | Change::Keep { key, .. }
            | Change::Unkeep { key }
            | Change::Owe { key, .. }
            | Change::Paid { key, .. }
            | Change::Unlocked { key, .. } => key,
        }
    }
}

/// Where a shard's changes go, called under the shard lock right after the operation that made
/// them, so changes of one key reach it in the order they were made. It must not block: the
/// journal only frames them into its in-memory buffer.
pub trait ChangeSink: Send + Sync {
    /// Takes every change in `changes` (leaving it empty): the changes of one operation, to be
    /// replayed as one batch (see [`crate::core::LockCore::replay`]).
    fn record(&self, changes: &mut Vec<Change>);
}

/// The changes one shard operation made, collected only while a sink is attached (so a server
/// without a journal does not even build them).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    enabled: bool,
    changes: Vec<Change>,
}

impl Recorder {
    pub(crate) fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    pub(crate) fn record(&mut self, change: impl FnOnce() -> Change) {
        if self.enabled {
            self.changes.push(change());
        }
    }

    pub(crate) fn changes(&mut self) -> &mut Vec<Change> {
        &mut self.changes
    }
}
