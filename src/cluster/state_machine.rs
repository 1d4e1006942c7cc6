//! Applies committed entries to a lock core, and snapshots it, for openraft.
//!
//! An entry holds one journal record; a batch of changes is replayed into the core exactly as a
//! restart replays the journal, so a follower's core is what the leader's was after the same
//! records. Applying reads no clock but to re-arm leases and places from the moment they arrive,
//! which is what makes it safe: a follower that becomes leader counts each lease from no earlier
//! than when it learned of it, so no holder loses its lock early, whatever the clocks of the two
//! machines say.
//!
//! A snapshot is the core re-expressed as records (the journal's rewrite does the same), framed
//! as the journal frames them, followed by the token reservation: installing one replays it
//! into a fresh core.
//!
//! openraft purges the log up to a snapshot once it has one, so a snapshot is on disk
//! (`<dir>/raft/snapshot`: its metadata as one record, then its records) before it is reported
//! built or installed, and a node that starts again begins from it: the entries it covers are
//! gone from the log.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{Stream, TryStreamExt};
use openraft::EntryPayload;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use parking_lot::Mutex;

use super::log_store::replace_file;
use super::raft::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::core::{Clock, CoreSettings, LockCore, WallClock, token_seed};
use crate::journal::{NextRecord, Record, RecordReader, encode_record, encode_snapshot_batches};

pub(crate) type SnapshotData = Cursor<Vec<u8>>;

const SNAPSHOT_FILE: &str = "snapshot";

#[derive(Clone)]
pub(crate) struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    snapshot_path: Arc<PathBuf>,
}

struct Inner {
    core: Arc<LockCore>,
    settings: CoreSettings,
    clock: Clock,
    /// Wall-clock milliseconds when `clock` read zero: deadlines travel as wall-clock times.
    wall_ms_at_zero: u64,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// No token below this is ever issued again (the highest reservation applied).
    tokens_below: u64,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

impl StateMachine {
    /// The state machine of the node whose Raft files are in `dir`: empty, or as of the snapshot
    /// saved there.
    pub(crate) fn open(dir: &Path, settings: CoreSettings, clock: Clock) -> io::Result<StateMachine> {
        let wall_ms_at_zero = super::proposals::wall_ms_at_zero(clock.now());
        let mut inner = Inner {
            core: Arc::new(LockCore::new(settings, token_seed(0))),
            settings,
            clock,
            wall_ms_at_zero,
            last_applied: None,
            membership: StoredMembership::default(),
            tokens_below: 0,
            snapshot: None,
        };
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        if let Some((meta, data)) = read_snapshot(&snapshot_path)? {
            inner.install(&meta, data)?;
        }
        Ok(StateMachine { inner: Arc::new(Mutex::new(inner)), snapshot_path: Arc::new(snapshot_path) })
    }

    /// Writes `meta` and `data` to the snapshot file, durably, off the async threads.
    async fn save_snapshot(&self, meta: &SnapshotMeta, data: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut header = Vec::new();
        encode_record(&mut header, 0, &postcard::to_allocvec(meta).map_err(io::Error::other)?);
        let path = Arc::clone(&self.snapshot_path);
        tokio::task::spawn_blocking(move || replace_file(&path, &[&header, &data]).map(|()| data))
            .await
            .map_err(io::Error::other)?
    }

    /// The core as of the last applied entry, and the token floor (see [`Inner::tokens_below`]).
    pub(crate) fn core(&self) -> (Arc<LockCore>, u64) {
        let inner = self.inner.lock();
        (Arc::clone(&inner.core), inner.tokens_below())
    }
}

impl Inner {
    fn wall_clock(&self) -> WallClock {
        WallClock {
            wall_ms_at_zero: self.wall_ms_at_zero,
            now_ms: self.clock.now().ms(),
            max_ahead_ms: self.settings.max_lease_ms,
        }
    }

    fn apply_record(&mut self, bytes: &[u8]) -> io::Result<()> {
        match Record::decode(bytes, self.wall_clock())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?
        {
            Record::Batch(changes) => self.core.replay(changes, self.clock.now()),
            Record::Reserve { tokens_below } | Record::SnapshotMarks { tokens_below, .. } => {
                self.tokens_below = self.tokens_below.max(tokens_below);
            }
            Record::LeaseCeiling { .. } => {}
        }
        Ok(())
    }

    /// Applies framed records one after the other: an entry's batches, or a snapshot.
    fn apply_framed(&mut self, data: &[u8]) -> io::Result<()> {
        let mut reader = RecordReader::new(Cursor::new(data), 0, data.len() as u64);
        loop {
            match reader.next_record()? {
                NextRecord::Record { payload, .. } => {
                    let payload = payload.to_vec();
                    self.apply_record(&payload)?;
                }
                NextRecord::End => return Ok(()),
                NextRecord::Bad(bad) => return Err(io::Error::new(io::ErrorKind::InvalidData, bad.to_string())),
            }
        }
    }

    /// No token at or above this has been issued: the highest reservation, and every token the
    /// applied batches carried (a key's state may be gone, its tokens must still never return).
    fn tokens_below(&self) -> u64 {
        self.tokens_below.max(self.core.token_floor())
    }

    fn build_snapshot(&mut self) -> Vec<u8> {
        let mut framed = Vec::new();
        for index in 0..self.core.shard_count() {
            let (changes, ()) = self.core.snapshot_shard(index, self.clock.now(), || ());
            let framing = encode_snapshot_batches(&changes, self.wall_clock(), |batch| {
                encode_record(&mut framed, 0, batch);
                Ok::<(), std::convert::Infallible>(())
            });
            let Ok(()) = framing;
        }
        let mut payload = Vec::new();
        Record::Reserve { tokens_below: self.tokens_below() }.encode(self.wall_clock(), &mut payload);
        encode_record(&mut framed, 0, &payload);
        framed
    }

    fn install(&mut self, meta: &SnapshotMeta, data: Vec<u8>) -> io::Result<()> {
        self.core = Arc::new(LockCore::new(self.settings, token_seed(0)));
        self.tokens_below = 0;
        self.apply_framed(&data).map_err(|error| io::Error::new(error.kind(), format!("snapshot: {error}")))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.snapshot = Some((meta.clone(), data));
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, data) = {
            let mut inner = self.inner.lock();
            let data = inner.build_snapshot();
            (SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone() }, data)
        };
        let data = self.save_snapshot(&meta, data).await?;
        self.inner.lock().snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Cursor::new(data) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let inner = self.inner.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            {
                let mut inner = self.inner.lock();
                match &entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(record) => inner.apply_framed(&record.0)?,
                    EntryPayload::Membership(membership) => {
                        inner.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    }
                }
                inner.last_applied = Some(entry.log_id);
            }
            if let Some(responder) = responder {
                responder.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let data = self.save_snapshot(meta, snapshot.into_inner()).await?;
        self.inner.lock().install(meta, data)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .inner
            .lock()
            .snapshot
            .as_ref()
            .map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: Cursor::new(data.clone()) }))
    }
}

/// The snapshot saved at `path`, if any.
fn read_snapshot(path: &Path) -> io::Result<Option<(SnapshotMeta, Vec<u8>)>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let corrupt = |what: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
    let mut reader = RecordReader::new(Cursor::new(&bytes[..]), 0, bytes.len() as u64);
    let meta = match reader.next_record()? {
        NextRecord::Record { payload, .. } => {
            postcard::from_bytes::<SnapshotMeta>(payload).map_err(|error| corrupt(error.to_string()))?
        }
        NextRecord::End => return Err(corrupt("empty".to_owned())),
        NextRecord::Bad(bad) => return Err(corrupt(bad.to_string())),
    };
    let data_start = reader.offset() as usize;
    // The records stay where they were read, without a second copy of a large snapshot.
    let mut data = bytes;
    data.drain(..data_start);
    Ok(Some((meta, data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Change;
    use crate::journal::SNAPSHOT_PAYLOAD_BYTES;

    fn records(framed: &[u8]) -> Vec<usize> {
        let mut reader = RecordReader::new(Cursor::new(framed), 0, framed.len() as u64);
        let mut sizes = Vec::new();
        while let NextRecord::Record { payload, .. } = reader.next_record().unwrap() {
            sizes.push(payload.len());
        }
        sizes
    }

    /// One record may not exceed the framing's bound, or the snapshot could never be read back:
    /// a shard with many keys is snapshotted as many records, and installs whole.
    #[test]
    fn a_large_shard_is_snapshotted_in_bounded_records() {
        let settings = CoreSettings {
            default_lease_ms: 30_000,
            max_lease_ms: 3_600_000,
            release_on_disconnect: true,
            shards: 1,
            max_queue_bytes: 48 << 20,
        };
        let dir = tempfile::tempdir().unwrap();
        let machine = StateMachine::open(dir.path(), settings, Clock::new()).unwrap();
        let mut inner = machine.inner.lock();
        let keys = 200_000;
        let holds: Vec<Change> = (0..keys)
            .map(|n| Change::Hold {
                key: Arc::from(format!("pull:sha256:{n:064}").as_bytes()),
                owner: Arc::from(b"node-a".as_slice()),
                token: 1 + n,
                lease_ms: 600_000,
            })
            .collect();
        for chunk in holds.chunks(10_000) {
            let mut payload = Vec::new();
            Record::Batch(chunk.to_vec()).encode(inner.wall_clock(), &mut payload);
            let mut framed = Vec::new();
            encode_record(&mut framed, 0, &payload);
            inner.apply_framed(&framed).unwrap();
        }
        assert_eq!(inner.core.stats().keys, keys);

        let snapshot = inner.build_snapshot();
        let sizes = records(&snapshot);
        assert!(sizes.len() > 2, "one shard's {keys} keys in {} records", sizes.len());
        // Whole keys per record: one past the cut at most, far below the framing's bound.
        assert!(sizes.iter().all(|&size| size <= SNAPSHOT_PAYLOAD_BYTES + 4096), "{sizes:?}");

        let meta = SnapshotMeta { last_log_id: None, last_membership: StoredMembership::default() };
        inner.install(&meta, snapshot).unwrap();
        assert_eq!(inner.core.stats().keys, keys);
    }
}
