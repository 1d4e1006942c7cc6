//! The embedded journal, like Redis's AOF: a segmented, CRC-framed append-only log of opaque
//! payloads, written by a group-commit thread under an fsync policy, with snapshots, recovery
//! (torn tails cut, damage refused unless repairing) and an exclusive lock on its directory.
//! The record semantics live with the lock core; this module only stores bytes.
//!
//! Layout: `log` is the API ([`Log`]); `frame` the on-disk formats; `dir` the directory, its lock
//! and file names; `state` what the threads share; `writer` the group-commit and everysec fsync
//! threads; `recovery` reading back at open; `snapshot` writing snapshots; `error` the errors.

mod dir;
mod durable;
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

pub(crate) use durable::unix_ms;
pub(crate) use durable::{Journal, JournalOptions, Restored};
pub(crate) use error::LogError;
pub(crate) use frame::{NextRecord, RecordReader, encode_record, encode_record_of_parts};
pub(crate) use log::{
    FSYNC_BUCKETS_US, FsyncPolicy, Gather, Log, LogOptions, LogStatus, appending_for_a_waiting_loop,
    flush_owed_records, owe_flush_on_this_loop,
};
#[cfg(test)]
pub(crate) use record::SNAPSHOT_PAYLOAD_BYTES;
pub(crate) use record::{MAX_QUEUE_BYTES, Record, batch_payload, encode_snapshot_batches};
pub(crate) use recovery::{RecoveredRecord, Recovery};
