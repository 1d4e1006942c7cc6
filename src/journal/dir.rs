//! The journal directory: its lock, its file names, and making changes to its entries durable.
//!
//! ```text
//! LOCK                                   flock'ed by the process that owns the journal
//! journal-00000000000000000001.seg       segments, named by the LSN of their first record
//! snapshot.snap                          the last complete snapshot (renamed into place)
//! snapshot.snap.tmp                      a snapshot being written (removed at open)
//! clean-shutdown                         written by close(), removed by open
//! ```

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::Lsn;
use super::error::LogError;

const LOCK_FILE: &str = "LOCK";
const SNAPSHOT_FILE: &str = "snapshot.snap";
const SNAPSHOT_TEMP_FILE: &str = "snapshot.snap.tmp";
const CLEAN_MARK_FILE: &str = "clean-shutdown";
const SEGMENT_PREFIX: &str = "journal-";
const SEGMENT_SUFFIX: &str = ".seg";

/// An open journal directory, exclusively ours while this lives: the flock goes with the file.
#[derive(Debug)]
pub(crate) struct JournalDir {
    path: PathBuf,
    _lock: File,
}

/// A segment file found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub(crate) first_lsn: Lsn,
    pub(crate) path: PathBuf,
}

impl JournalDir {
    /// Creates the directory if missing and takes its lock without waiting: a second server on the
    /// same directory must fail at once, not hang.
    pub(crate) fn open(path: &Path) -> Result<JournalDir, LogError> {
        fs::create_dir_all(path)
            .map_err(|e| LogError::io(format!("creating journal directory {}", path.display()), e))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| LogError::io(format!("opening lock file {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LogError::Locked { dir: path.to_path_buf() }),
            Err(TryLockError::Error(e)) => {
                return Err(LogError::io(format!("locking {}", lock_path.display()), e));
            }
        }
        let dir = JournalDir { path: path.to_path_buf(), _lock: lock };
        dir.sync().map_err(|e| LogError::io(format!("syncing journal directory {}", path.display()), e))?;
        Ok(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Makes created, renamed and removed entries durable: fsync of a file covers its data, not
    /// the directory entry that names it.
    pub(crate) fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }

    pub(crate) fn segment_path(&self, first_lsn: Lsn) -> PathBuf {
        self.path.join(format!("{SEGMENT_PREFIX}{first_lsn:020}{SEGMENT_SUFFIX}"))
    }

    pub(crate) fn snapshot_path(&self) -> PathBuf {
        self.path.join(SNAPSHOT_FILE)
    }

    pub(crate) fn snapshot_temp_path(&self) -> PathBuf {
        self.path.join(SNAPSHOT_TEMP_FILE)
    }

    pub(crate) fn clean_mark_path(&self) -> PathBuf {
        self.path.join(CLEAN_MARK_FILE)
    }

    /// Segment files in LSN order. Other files are left alone (an operator's notes, say).
    pub(crate) fn segments(&self) -> Result<Vec<SegmentFile>, LogError> {
        let listing_error = |e| LogError::io(format!("listing journal directory {}", self.path.display()), e);
        let mut segments = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(listing_error)? {
            let entry = entry.map_err(listing_error)?;
            let name = entry.file_name();
            let Some(first_lsn) = name.to_str().and_then(parse_segment_name) else { continue };
            segments.push(SegmentFile { first_lsn, path: entry.path() });
        }
        segments.sort_by_key(|segment| segment.first_lsn);
        Ok(segments)
    }

    /// Writes a small file whole and durably: temp file, fsync, rename, directory fsync.
    pub(crate) fn write_durably(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let temp = path.with_extension("tmp");
        let mut file = File::create(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        self.sync()
    }

    /// Removes a file if it is there; the caller syncs the directory once after a batch of these.
    pub(crate) fn remove_if_present(&self, path: &Path) -> io::Result<bool> {
        match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_strangers_are_ignored() {
        let temp = tempfile::tempdir().unwrap();
        let dir = JournalDir::open(temp.path()).unwrap();
        for lsn in [12, 1, 300] {
            File::create(dir.segment_path(lsn)).unwrap();
        }
        File::create(temp.path().join("journal-1.seg")).unwrap();
        File::create(temp.path().join("notes.txt")).unwrap();
        let found: Vec<Lsn> = dir.segments().unwrap().iter().map(|s| s.first_lsn).collect();
        assert_eq!(found, vec![1, 12, 300]);
    }

    #[test]
    fn a_second_open_fails_naming_the_directory_until_the_first_is_gone() {
        let temp = tempfile::tempdir().unwrap();
        let first = JournalDir::open(temp.path()).unwrap();
        let error = JournalDir::open(temp.path()).unwrap_err();
        assert!(matches!(error, LogError::Locked { .. }));
        assert!(error.to_string().contains(&temp.path().display().to_string()), "{error}");
        drop(first);
        JournalDir::open(temp.path()).unwrap();
    }

    #[test]
    fn an_unusable_path_is_a_clear_error() {
        let temp = tempfile::tempdir().unwrap();
        let file = temp.path().join("plain-file");
        File::create(&file).unwrap();
        let error = JournalDir::open(&file.join("journal")).unwrap_err();
        assert!(error.to_string().contains("creating journal directory"), "{error}");
    }
}
