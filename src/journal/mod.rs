//! The embedded journal, like Redis's AOF: a segmented, CRC-framed append-only log of opaque
//! payloads, written by a group-commit thread under an fsync policy, with snapshots, recovery
//! (torn tails cut, damage refused unless repairing) and an exclusive lock on its directory.
//! The record semantics live with the lock core; this module only stores bytes.
//!
//! Layout: `log` is the API ([`Log`]); `frame` the on-disk formats; `dir` the directory, its lock
//! and file names; `state` what the threads share; `writer` the group-commit and everysec fsync
//! threads; `recovery` reading back at open; `snapshot` writing snapshots; `error` the errors.

// Until the server uses the journal: nothing outside this module calls it yet, so its items and
// the re-exports below look unused.
#![allow(dead_code, unused_imports)]

mod dir;
mod error;
mod frame;
mod log;
mod record;
mod recovery;
mod snapshot;
mod state;
mod writer;

#[cfg(test)]
mod tests;

/// Log sequence number: 1, 2, 3, ... one per appended record, never reused across restarts.
pub(crate) type Lsn = u64;

pub(crate) use error::{Corruption, LogError, WriteFailure};
pub(crate) use log::{FsyncPolicy, Log, LogOptions, LogStatus};
pub(crate) use recovery::{RecoveredRecord, Recovery, TruncatedTail};
pub(crate) use snapshot::SnapshotWriter;
