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

use super::change_codec::{BATCH_PART_BYTES, ChangeEncoder};
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

    pub fn as_ref(&self) -> ChangeRef<'_> {
        match self {
            Change::Hold { key, owner, token, lease_ms } => {
                ChangeRef::Hold { key, owner, token: *token, lease_ms: *lease_ms }
            }
            Change::Free { key, cause } => ChangeRef::Free { key, cause: cause.as_ref() },
            Change::Join { key, owner, lease_ms } => ChangeRef::Join { key, owner, lease_ms: *lease_ms },
            Change::Leave { key, owner } => ChangeRef::Leave { key, owner },
            Change::LeaveAll { key } => ChangeRef::LeaveAll { key },
            Change::Finish { key, completion } => ChangeRef::Finish { key, completion },
            Change::Keep { key, token, until } => ChangeRef::Keep { key, token: *token, until: *until },
            Change::Unkeep { key } => ChangeRef::Unkeep { key },
            Change::Owe { key, owner, token, until } => ChangeRef::Owe { key, owner, token: *token, until: *until },
            Change::Paid { key, owner } => ChangeRef::Paid { key, owner },
            Change::Unlocked { key, owner, token, outcome } => {
                ChangeRef::Unlocked { key, owner, token: *token, outcome: *outcome }
            }
        }
    }
}

/// A [`Change`] borrowing its strings: what the live core records, encoded at once (see
/// [`ChangeEncoder`]), so that recording copies no key and counts no reference.
#[derive(Debug, Clone, Copy)]
pub enum ChangeRef<'a> {
    Hold { key: &'a [u8], owner: &'a [u8], token: u64, lease_ms: u64 },
    Free { key: &'a [u8], cause: Option<&'a ReleaseCause> },
    Join { key: &'a [u8], owner: &'a [u8], lease_ms: u64 },
    Leave { key: &'a [u8], owner: &'a [u8] },
    LeaveAll { key: &'a [u8] },
    Finish { key: &'a [u8], completion: &'a Completion },
    Keep { key: &'a [u8], token: u64, until: u64 },
    Unkeep { key: &'a [u8] },
    Owe { key: &'a [u8], owner: &'a [u8], token: u64, until: u64 },
    Paid { key: &'a [u8], owner: &'a [u8] },
    Unlocked { key: &'a [u8], owner: &'a [u8], token: u64, outcome: UnlockOutcome },
}

impl<'a> ChangeRef<'a> {
    pub fn key(&self) -> &'a [u8] {
        match *self {
            ChangeRef::Hold { key, .. }
            | ChangeRef::Free { key, .. }
            | ChangeRef::Join { key, .. }
            | ChangeRef::Leave { key, .. }
            | ChangeRef::LeaveAll { key }
            | ChangeRef::Finish { key, .. }
            | ChangeRef::Keep { key, .. }
            | ChangeRef::Unkeep { key }
            | ChangeRef::Owe { key, .. }
            | ChangeRef::Paid { key, .. }
            | ChangeRef::Unlocked { key, .. } => key,
        }
    }
}

/// Where a shard's changes go, called under the shard lock right after the operation that made
/// them, so changes of one key reach it in the order they were made. It must not block: the
/// journal only frames them into its in-memory buffer.
pub trait ChangeSink: Send + Sync {
    /// Wall-clock milliseconds (since the Unix epoch) when the server's clock read zero:
    /// deadlines are encoded as wall-clock times (see [`crate::core::WallClock`]).
    fn wall_ms_at_zero(&self) -> u64;

    /// Takes the changes of one operation, encoded: each of `changes.parts()` is a batch to be
    /// replayed as one (see [`crate::core::LockCore::replay`]). Returns the position a reply
    /// reporting them waits for, where the sink has positions a connection waits on (the
    /// journal's last LSN for them).
    fn record(&self, changes: &mut ChangeEncoder) -> Option<u64>;
}

/// The changes of the shard operation under way, encoded as they are made while a sink is
/// attached (a server without a journal does not even encode them).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    encoder: Option<ChangeEncoder>,
}

impl Recorder {
    pub(crate) fn enable(&mut self, wall_ms_at_zero: Option<u64>) {
        self.encoder = wall_ms_at_zero.map(|wall_ms_at_zero| ChangeEncoder::new(wall_ms_at_zero, BATCH_PART_BYTES));
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.encoder.is_some()
    }

    pub(crate) fn record(&mut self, change: ChangeRef<'_>) {
        if let Some(encoder) = &mut self.encoder {
            encoder.push(change);
        }
    }

    /// The operation's changes, if it made any.
    pub(crate) fn changes(&mut self) -> Option<&mut ChangeEncoder> {
        self.encoder.as_mut().filter(|encoder| !encoder.is_empty())
    }
}
