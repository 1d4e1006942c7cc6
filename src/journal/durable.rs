//! The journal as the server uses it: the lock core's change sink (every batch of changes framed
//! into the log under the shard lock that made it), recovery (snapshot and log replayed into a
//! fresh core), token reservations, and compaction.
//!
//! Tokens: every token ever sent to a client is below a reservation that was fsynced before the
//! reply went out (a reply waits for its records, and the log releases records in order), so a
//! restart, even after an OS crash that lost unsynced records, starts its tokens above every one
//! issued before. A reservation covers a million grants, so it costs one fsync per million.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::core::{ChangeEncoder, ChangeSink, Clock, LockCore, Timestamp, WallClock};

use super::record::{self, Record};
use super::{FsyncPolicy, Log, LogError, LogOptions, LogStatus, RecoveredRecord, Recovery};

/// Grants one reservation covers.
const RESERVED_TOKENS: u64 = 1 << 20;

/// Added to the lease ceiling when grants pause after an OS crash: clocks of holders and server
/// do not run at exactly the same rate.
const LOCK_DELAY_SLACK_MS: u64 = 1_000;

#[derive(Debug, Clone)]
pub(crate) struct JournalOptions {
    pub(crate) dir: PathBuf,
    pub(crate) fsync: FsyncPolicy,
    pub(crate) repair: bool,
    pub(crate) boot_id: String,
    pub(crate) segment_bytes: u64,
    /// Compaction starts once the journal is this large ...
    pub(crate) rewrite_min_bytes: u64,
    /// ... and has grown by this percentage over the last snapshot (Redis's
    /// `auto-aof-rewrite-percentage`; 0 turns compaction off).
    pub(crate) rewrite_percentage: u64,
    pub(crate) max_lease_ms: u64,
    /// See `--wall-clock-offset-ms`.
    pub(crate) wall_offset_ms: i64,
}

/// What a recovery found and did, for the log and INFO.
#[derive(Debug, Clone, Default)]
pub(crate) struct Restored {
    pub(crate) records: u64,
    pub(crate) changes: u64,
    pub(crate) keys: u64,
    pub(crate) took: Duration,
    /// The previous process did not close the journal and the machine rebooted since: records
    /// it had not fsynced may be lost.
    pub(crate) unclean_reboot: bool,
    pub(crate) clean_shutdown: bool,
    pub(crate) first_token: u64,
    /// How long grants are paused for (see [`LockCore::pause_grants_until`]); 0: not paused.
    pub(crate) grants_paused_ms: u64,
}

pub(crate) struct Journal {
    log: Log,
    options: JournalOptions,
    /// Wall-clock milliseconds when the server's clock read zero.
    wall_ms_at_zero: u64,
    /// No token at or above this has been reserved yet (see the module comment).
    tokens_below: AtomicU64,
    /// The longest lease any holder was promised, as recorded (synced) in the journal.
    lease_ceiling_ms: AtomicU64,
    snapshot_bytes_at_last_rewrite: AtomicU64,
}

#[derive(Debug)]
pub(crate) enum RestoreError {
    Log(LogError),
    Record { lsn: Option<u64>, error: record::DecodeError },
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Log(error) => write!(f, "{error}"),
            RestoreError::Record { lsn: Some(lsn), error } => write!(f, "journal record {lsn}: {error}"),
            RestoreError::Record { lsn: None, error } => write!(f, "journal snapshot: {error}"),
        }
    }
}

impl From<LogError> for RestoreError {
    fn from(error: LogError) -> RestoreError {
        RestoreError::Log(error)
    }
}

impl Journal {
    /// Opens (or creates) the journal directory; its contents are replayed by [`Journal::restore`].
    pub(crate) fn open(options: JournalOptions, clock: &Clock) -> Result<(Journal, Recovery), LogError> {
        let (log, recovery) = Log::open(
            &options.dir,
            LogOptions {
                fsync: options.fsync,
                segment_bytes: options.segment_bytes,
                boot_id: options.boot_id.clone(),
                repair: options.repair,
            },
        )?;
        let wall_ms_at_zero = unix_ms().saturating_add_signed(options.wall_offset_ms).saturating_sub(clock.now().ms());
        // The snapshot found is the last rewrite: a restart rewrites only a journal that has grown
        // past it, however long ago it was written.
        let base_bytes = log.status().snapshot_bytes;
        let journal = Journal {
            log,
            options,
            wall_ms_at_zero,
            tokens_below: AtomicU64::new(0),
            lease_ceiling_ms: AtomicU64::new(0),
            snapshot_bytes_at_last_rewrite: AtomicU64::new(base_bytes),
        };
        Ok((journal, recovery))
    }

    pub(crate) fn log(&self) -> &Log {
        &self.log
    }

    pub(crate) fn options(&self) -> &JournalOptions {
        &self.options
    }

    fn wall_clock(&self, now: Timestamp) -> WallClock {
        WallClock { wall_ms_at_zero: self.wall_ms_at_zero, now_ms: now.ms(), max_ahead_ms: self.options.max_lease_ms }
    }

    /// Replays the snapshot and the log into `core` (which serves nobody yet), then reserves the
    /// tokens the server starts with. Holders and places come back as the journal left them,
    /// leased afresh from now; completions and owed DONEs keep their wall-clock end.
    pub(crate) fn restore(&self, recovery: Recovery, core: &LockCore, clock: &Clock) -> Result<Restored, RestoreError> {
        let started = Instant::now();
        let now = clock.now();
        let wall = self.wall_clock(now);
        let mut restored = Restored {
            unclean_reboot: recovery.boot_id_changed && !recovery.clean_shutdown,
            clean_shutdown: recovery.clean_shutdown,
            ..Restored::default()
        };
        let mut tokens_below = 0u64;
        // Set by the snapshot's closing record: per shard, the last LSN its contents include.
        let mut marks: Vec<u64> = Vec::new();
        recovery.for_each(|item| {
            let (lsn, payload) = match item {
                RecoveredRecord::Snapshot(payload) => (None, payload),
                RecoveredRecord::Logged { lsn, payload } => (Some(lsn), payload),
            };
            restored.records += 1;
            let record = Record::decode(payload, wall).map_err(|error| RestoreError::Record { lsn, error })?;
            match record {
                Record::Batch(mut changes) => {
                    if let (Some(lsn), Some(first)) = (lsn, changes.first())
                        && !marks.is_empty()
                        && lsn <= marks[LockCore::shard_index(first.key(), marks.len())]
                    {
                        // Already in the snapshot, which was taken after this record.
                        changes.clear();
                    }
                    restored.changes += changes.len() as u64;
                    core.replay(changes, now);
                }
                Record::Reserve { tokens_below: below } => tokens_below = tokens_below.max(below),
                Record::LeaseCeiling { ms } => {
                    self.lease_ceiling_ms.fetch_max(ms, Ordering::AcqRel);
                }
                Record::SnapshotMarks { marks: snapshot_marks, tokens_below: below } => {
                    tokens_below = tokens_below.max(below);
                    marks = snapshot_marks;
                }
            }
            Ok::<(), RestoreError>(())
        })?;
        // Tokens go on from the highest of: the reservations, the tokens replayed (the core
        // raised its counters past them), and the wall clock's microseconds (what a fresh server
        // starts from, so an empty journal changes nothing).
        let first_token = tokens_below.max(crate::core::token_seed(self.options.wall_offset_ms));
        core.finish_replay(first_token);
        self.reserve_tokens(first_token);
        restored.first_token = first_token;
        // After an OS crash (a new boot, and the journal not closed) records written but not
        // synced may be gone, among them grants whose holders may still be working: nothing is
        // granted until every lease that may have been lost has run out. With `always` nothing
        // acknowledged was unsynced.
        if restored.unclean_reboot && self.options.fsync != FsyncPolicy::Always {
            restored.grants_paused_ms =
                self.lease_ceiling_ms.load(Ordering::Acquire).saturating_add(LOCK_DELAY_SLACK_MS);
            core.pause_grants_until(now.ms().saturating_add(restored.grants_paused_ms));
        }
        restored.keys = core.key_count() as u64;
        restored.took = started.elapsed();
        Ok(restored)
    }

    /// Reserves the tokens from `from` on, synced before any later record is released.
    fn reserve_tokens(&self, from: u64) {
        let below = from.saturating_add(RESERVED_TOKENS);
        self.raise_synced(&self.tokens_below, below, Record::Reserve { tokens_below: below });
    }

    /// Records a longer lease than any before, synced before any later record is released.
    fn raise_lease_ceiling(&self, ms: u64) {
        self.raise_synced(&self.lease_ceiling_ms, ms, Record::LeaseCeiling { ms });
    }

    /// Raises a high-water mark to `value` and, if it rose, appends `record` (which says so) to
    /// be fsynced before any later record is released.
    fn raise_synced(&self, mark: &AtomicU64, value: u64, record: Record) {
        if mark.fetch_max(value, Ordering::AcqRel) < value {
            let mut payload = Vec::with_capacity(12);
            record.encode(self.wall_clock(Timestamp::from_ms(0)), &mut payload);
            self.log.append_synced(&payload);
        }
    }

    /// Whether the journal has grown enough over its last snapshot to rewrite it.
    pub(crate) fn wants_rewrite(&self, status: &LogStatus) -> bool {
        let percentage = self.options.rewrite_percentage;
        if percentage == 0 || status.disk_bytes < self.options.rewrite_min_bytes {
            return false;
        }
        let base = self.snapshot_bytes_at_last_rewrite.load(Ordering::Relaxed).max(1);
        status.disk_bytes.saturating_sub(base).saturating_mul(100) / base >= percentage
    }

    /// Writes a snapshot of `core` and lets the log drop what it replaces. Each shard is copied
    /// under its own lock (a stall of one shard's copy, not of the server); the records of a
    /// shard's keys logged after its copy are replayed on top of it.
    pub(crate) fn rewrite(&self, core: &LockCore, clock: &Clock) -> Result<u64, LogError> {
        let mut writer = self.log.snapshot()?;
        let mut marks = Vec::with_capacity(core.shard_count());
        let mut payload = Vec::new();
        for index in 0..core.shard_count() {
            let now = clock.now();
            let wall = self.wall_clock(now);
            let (changes, mark) = core.snapshot_shard(index, now, || self.log.last_lsn());
            marks.push(mark);
            record::encode_snapshot_batches(&changes, wall, |batch| writer.push(batch))?;
        }
        let replay_from = marks.iter().min().copied().unwrap_or(0) + 1;
        payload.clear();
        let tokens_below = self.tokens_below.load(Ordering::Acquire);
        Record::SnapshotMarks { marks, tokens_below }.encode(self.wall_clock(clock.now()), &mut payload);
        writer.push(&payload)?;
        payload.clear();
        Record::LeaseCeiling { ms: self.lease_ceiling_ms.load(Ordering::Acquire) }
            .encode(self.wall_clock(clock.now()), &mut payload);
        writer.push(&payload)?;
        writer.finish(replay_from)?;
        let bytes = self.log.status().disk_bytes;
        self.snapshot_bytes_at_last_rewrite.store(bytes, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Writes everything and marks the shutdown clean.
    pub(crate) fn close(&self) -> Result<(), LogError> {
        self.log.close()
    }
}

impl ChangeSink for Journal {
    fn wall_ms_at_zero(&self) -> u64 {
        self.wall_ms_at_zero
    }

    fn record(&self, changes: &mut ChangeEncoder) -> Option<u64> {
        if let Some((token, lease_ms)) = changes.max_hold() {
            if token >= self.tokens_below.load(Ordering::Acquire) {
                self.reserve_tokens(token);
            }
            if lease_ms > self.lease_ceiling_ms.load(Ordering::Acquire) {
                self.raise_lease_ceiling(lease_ms);
            }
        }
        // A token reservation appended above is fsynced before any later LSN is released.
        let mut last_lsn = None;
        for part in changes.parts() {
            last_lsn = Some(self.log.append_parts(&record::batch_payload(part)));
        }
        last_lsn
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(0))
}
