//! What can go wrong with the journal, worded for an operator: each error names the file or
//! directory involved and, where there is one, what to do about it.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::Lsn;

#[derive(Debug)]
pub(crate) enum LogError {
    /// An I/O call failed; `action` says what was being done, naming the path.
    Io { action: String, source: io::Error },
    /// Another process holds the directory's lock file.
    Locked { dir: PathBuf },
    /// Damage that is not a torn tail: acknowledged records may follow it.
    Corrupt(Corruption),
    /// The snapshot file cannot be read back.
    CorruptSnapshot { file: PathBuf, offset: u64, reason: String },
    /// The writer cannot write or fsync; records stay buffered and it keeps retrying.
    WriteFailing(WriteFailure),
    /// Another snapshot is being written.
    SnapshotInProgress,
    /// `SnapshotWriter::finish` was given an LSN past the next one to be appended.
    ReplayFromAhead { replay_from: Lsn, next_lsn: Lsn },
}

/// Where mid-journal damage is and what cutting there would lose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Corruption {
    pub(crate) file: PathBuf,
    pub(crate) offset: u64,
    pub(crate) reason: String,
    /// The first LSN that would be lost: every record from it on.
    pub(crate) first_lost_lsn: Lsn,
    /// Bytes from the damage to the end of the journal (this file's rest and every later segment).
    pub(crate) bytes_lost: u64,
}

/// The writer's last failed write or fsync, kept until one succeeds.
#[derive(Debug, Clone)]
pub(crate) struct WriteFailure {
    pub(crate) operation: &'static str,
    pub(crate) file: PathBuf,
    pub(crate) error: Arc<io::Error>,
    pub(crate) since: SystemTime,
}

impl LogError {
    pub(crate) fn io(action: impl Into<String>, source: io::Error) -> LogError {
        LogError::Io { action: action.into(), source }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io { action, source } => write!(f, "journal: {action}: {source}"),
            LogError::Locked { dir } => write!(
                f,
                "journal directory {} is in use by another process (its lock file is held); \
                 two servers cannot share a journal",
                dir.display()
            ),
            LogError::Corrupt(corruption) => write!(f, "{corruption}"),
            LogError::CorruptSnapshot { file, offset, reason } => write!(
                f,
                "journal snapshot {} is corrupt at byte {offset}: {reason}; it cannot be repaired \
                 (restore it from a backup or remove the journal directory to start empty)",
                file.display()
            ),
            LogError::WriteFailing(failure) => write!(f, "{failure}"),
            LogError::SnapshotInProgress => write!(f, "journal: a snapshot is already being written"),
            LogError::ReplayFromAhead { replay_from, next_lsn } => {
                write!(f, "journal: snapshot replay_from {replay_from} is past the next LSN {next_lsn}")
            }
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "journal file {} is corrupt at byte {}: {}; valid records may follow, so this is not a \
             torn tail. Restart with --journal-repair to truncate the journal there, losing every \
             record from LSN {} on ({} bytes)",
            self.file.display(),
            self.offset,
            self.reason,
            self.first_lost_lsn,
            self.bytes_lost
        )
    }
}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "journal {} to {} failing: {}", self.operation, self.file.display(), self.error)
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
