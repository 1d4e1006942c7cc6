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
//! The entries are also kept in memory, for the leader's replication reads. Snapshots purge the
//! entries they cover; the file then drops them too (see [`COMPACT_MIN_BYTES`]), so the log on
//! disk and in memory stays proportional to what followers may still need.

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
    /// Appended entries are reported flushed by the syncer thread, so that an fdatasync never
    /// blocks the runtime that runs Raft (and the server's accepts and lease expiries).
    syncer: std::sync::mpsc::Sender<IOFlushed<TypeConfig>>,
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
/// Purged entries are cut from the front of the log file once they take this much and at least
/// as much as the entries kept: the file stays within about twice what followers may still need.
const COMPACT_MIN_BYTES: u64 = 4 << 20;
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
        let inner =
            Arc::new(Mutex::new(Inner { dir: dir.to_owned(), file, entries, end, vote, purged, committed: None }));
        let syncer = spawn_syncer(Arc::clone(&inner))?;
        Ok(LogStore { inner, syncer })
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
        let kept_from = self.entries.values().next().map_or(self.end, |(offset, _)| *offset);
        if kept_from >= COMPACT_MIN_BYTES && kept_from >= self.end - kept_from {
            self.compact(kept_from)?;
        }
        Ok(())
    }

    /// Rewrites the log file without its first `drop` bytes (purged entries): the kept ones are
    /// copied to a new file, synced, and renamed over the old one, so a crash leaves one or the
    /// other, and both hold every kept entry.
    fn compact(&mut self, drop: u64) -> io::Result<()> {
        let mut kept = vec![0; (self.end - drop) as usize];
        self.file.seek(SeekFrom::Start(drop))?;
        std::io::Read::read_exact(&mut self.file, &mut kept)?;
        let path = self.dir.join(LOG_FILE);
        let temporary = path.with_extension("tmp");
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&temporary)?;
        file.write_all(&kept)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.file = file;
        self.end -= drop;
        for (offset, _) in self.entries.values_mut() {
            *offset -= drop;
        }
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

/// Syncs the log file for every append handed over, one fdatasync for all the appends that queued
/// while the last one ran (group commit), and reports them flushed in the order they came.
/// The file is looked up for each sync (a duplicate descriptor, taken under the lock), because a
/// compaction replaces it.
fn spawn_syncer(inner: Arc<Mutex<Inner>>) -> io::Result<std::sync::mpsc::Sender<IOFlushed<TypeConfig>>> {
    let (sender, receiver) = std::sync::mpsc::channel::<IOFlushed<TypeConfig>>();
    let inner = Arc::downgrade(&inner);
    std::thread::Builder::new().name("raft-log-sync".to_owned()).spawn(move || {
        while let Ok(first) = receiver.recv() {
            let mut flushed = vec![first];
            flushed.extend(receiver.try_iter());
            let file = match inner.upgrade() {
                Some(inner) => inner.lock().file.try_clone(),
                None => Err(io::Error::other("raft log closed")),
            };
            let synced = file.and_then(|file| file.sync_data());
            for callback in flushed {
                callback.io_completed(match &synced {
                    Ok(()) => Ok(()),
                    Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
                });
            }
        }
    })?;
    Ok(sender)
}

fn invalid(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// A file of one record, absent until first written.
pub(super) fn read_single<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
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
pub(super) fn write_single<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = Vec::new();
    encode_record(&mut bytes, 0, &postcard::to_allocvec(value).map_err(invalid)?);
    replace_file(path, &[&bytes])
}

/// Replaces the file at `path` with `parts`, one after the other, so that a crash leaves either
/// the old file or the whole new one.
pub(super) fn replace_file(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary)?;
    for part in parts {
        file.write_all(part)?;
    }
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
        match &result {
            Ok(()) => {
                if let Err(unsent) = self.syncer.send(callback) {
                    unsent.0.io_completed(Err(io::Error::other("raft log: the syncer thread is gone")));
                }
            }
            Err(error) => callback.io_completed(Err(io::Error::new(error.kind(), error.to_string()))),
        }
        result
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.inner.lock().truncate_after(last_log_id)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.inner.lock().purge(log_id)
    }
}
