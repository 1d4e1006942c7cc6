//! The Raft log and vote, on disk under `<dir>/raft/`, in the journal's record framing.
//!
//! Raft's safety rests on two things a node must never forget once it has said so: its vote (or
//! it could vote twice in a term) and the entries it acknowledged (or a committed entry could be
//! lost). So `save_vote` returns only after the vote file is replaced durably, and `append`
//! reports its entries flushed only after `fdatasync`; openraft hands over entries in batches,
//! so one sync covers every entry queued meanwhile (group commit).
//!
//! - `log`: records `[len][crc][index][postcard entry]` (journal framing, the Raft index in the
//!   LSN field). A torn tail (a crash inside a write) is cut at the first bad record; it was never
//!   acknowledged.
//! - `vote`, `purged`: one record each, replaced by write-to-temporary, fsync, rename.
//!
//! The entries are also kept in memory, for the leader's replication reads: the log is compacted
//! by snapshots (`purge`), so it stays proportional to what followers may still need.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::raft::{Entry, LogId, TypeConfig, Vote};
use crate::journal::{NextRecord, RecordReader, encode_record};

#[derive(Debug, Clone)]
pub(crate) struct LogStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    file: File,
    /// Each entry in the log file, by index, with the offset its record starts at.
    entries: BTreeMap<u64, (u64, Entry)>,
    /// Where the next record goes: the end of the last valid record.
    end: u64,
    vote: Option<Vote>,
    purged: Option<LogId>,
    committed: Option<LogId>,
}

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote";
const PURGED_FILE: &str = "purged";

impl LogStore {
    /// Opens the log under `dir` (created if missing), cutting a torn tail.
    pub(crate) fn open(dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let vote = read_single(&dir.join(VOTE_FILE))?;
        let purged: Option<LogId> = read_single(&dir.join(PURGED_FILE))?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(false)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOG_FILE))?;
        let length = file.metadata()?.len();
        let mut entries = BTreeMap::new();
        let mut reader = RecordReader::new(BufReader::new(&mut file), 0, length);
        let end = loop {
            let offset = reader.offset();
            match reader.next_record()? {
                NextRecord::Record { lsn: index, payload } => {
                    let entry: Entry = postcard::from_bytes(payload).map_err(invalid)?;
                    if purged.as_ref().is_none_or(|purged: &LogId| index > purged.index()) {
                        entries.insert(index, (offset, entry));
                    }
                }
                NextRecord::End => break offset,
                NextRecord::Bad(bad) => {
                    tracing::warn!(offset, %bad, "raft log: cutting a torn tail");
                    break offset;
                }
            }
        };
        file.set_len(end)?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_owned(),
                file,
                entries,
                end,
                vote,
                purged,
                committed: None,
            })),
        })
    }
}

impl Inner {
    fn append(&mut self, entries: impl IntoIterator<Item = Entry>) -> io::Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            let offset = self.end + bytes.len() as u64;
            let payload = postcard::to_allocvec(&entry).map_err(invalid)?;
            encode_record(&mut bytes, entry.index(), &payload);
            self.entries.insert(entry.index(), (offset, entry));
        }
        self.file.seek(SeekFrom::Start(self.end))?;
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        let first_removed = last.map_or(0, |last| last.index() + 1);
        let removed = self.entries.split_off(&first_removed);
        if let Some((offset, _)) = removed.values().next() {
            self.file.set_len(*offset)?;
            self.file.sync_data()?;
            self.end = *offset;
        }
        Ok(())
    }

    fn purge(&mut self, upto: LogId) -> io::Result<()> {
        write_single(&self.dir.join(PURGED_FILE), &upto)?;
        self.entries = self.entries.split_off(&(upto.index() + 1));
        self.purged = Some(upto);
        Ok(())
    }

    fn state(&self) -> LogState<TypeConfig> {
        let last = self.entries.values().next_back().map(|(_, entry)| entry.log_id());
        LogState { last_purged_log_id: self.purged, last_log_id: last.or(self.purged) }
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        self.entries.range(range).map(|(_, (_, entry))| entry.clone()).collect()
    }
}

fn invalid(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// A file of one record, absent until first written.
fn read_single<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let length = file.metadata()?.len();
    let mut reader = RecordReader::new(BufReader::new(file), 0, length);
    match reader.next_record()? {
        NextRecord::Record { payload, .. } => postcard::from_bytes(payload).map(Some).map_err(invalid),
        NextRecord::End => Ok(None),
        NextRecord::Bad(bad) => Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: {bad}", path.display()))),
    }
}

/// Replaces a one-record file so that a crash leaves either the old or the new record.
fn write_single<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = Vec::new();
    encode_record(&mut bytes, 0, &postcard::to_allocvec(value).map_err(invalid)?);
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.inner.lock().entries(range))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.inner.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        Ok(self.inner.lock().state())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut inner = self.inner.lock();
        write_single(&inner.dir.join(VOTE_FILE), vote)?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.inner.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let result = self.inner.lock().append(entries);
        let reported = result.as_ref().map(|_| ()).map_err(|error| io::Error::new(error.kind(), error.to_string()));
        callback.io_completed(reported);
        result
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.inner.lock().truncate_after(last_log_id)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.inner.lock().purge(log_id)
    }
}
