//! What appenders, the writer thread, the everysec syncer and waiters share: the in-memory buffer
//! of framed records, the LSN watermarks, the failure slots and the counters.
//!
//! Lock order: the writer's state (`Log`'s, taken by the writer thread or a task writing for its
//! reply) before `pending` before `files`. Appenders take only `pending`, briefly, and never wait
//! for anything while holding it: they run under the lock core's shard mutexes.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

use super::Lsn;
use super::error::{LogError, WriteFailure};
use super::log::{FSYNC_BUCKETS_US, FsyncPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Run,
    /// close(): write and fsync everything, then exit.
    Drain,
    /// Dropped without close(): exit at once, like a crash (buffered records are lost).
    Abandon,
}

#[derive(Debug)]
pub(crate) struct Pending {
    /// Records not yet taken by the writer, in LSN order, each a run of entries; the last is
    /// still open. Their lengths and CRCs are filled in by the writer.
    pub(crate) buffer: Vec<u8>,
    /// Where each record in `buffer` starts.
    pub(crate) record_starts: Vec<usize>,
    pub(crate) buffer_first_lsn: Lsn,
    pub(crate) next_lsn: Lsn,
    /// The highest LSN appended with `append_synced`: its batch is fsynced before release.
    pub(crate) must_sync_upto: Lsn,
    /// The highest LSN a blocking caller (snapshot, close) waits to see fsynced.
    pub(crate) sync_wanted: Lsn,
    /// Threads blocked on `Shared::progress`, so the writer locks `pending` to wake them only
    /// when someone waits.
    pub(crate) blocking_waiters: usize,
    /// Under `always`, the highest LSN the writer thread is asked to write and fsync. A record
    /// appended on an event loop is asked for only at the end of the loop's turn (see
    /// [`crate::journal::log::Log::released`]); the thread then takes the whole buffer.
    pub(crate) flush_asked: Lsn,
    /// Under everysec and no the writer thread polls for records nobody wrote (the replies'
    /// tasks write the rest, see [`crate::journal::log::Log::released`]); after a while with
    /// nothing to do it sleeps until an appender wakes it, which this tells appenders to do.
    pub(crate) writer_idle: bool,
    pub(crate) stop: Stop,
}

impl Pending {
    /// Whether the buffer holds a record appended with `append_synced`.
    pub(crate) fn holds_synced_record(&self) -> bool {
        !self.buffer.is_empty() && self.must_sync_upto >= self.buffer_first_lsn
    }

    /// Whether the buffer holds a record the writer was asked for under `always`.
    pub(crate) fn holds_asked_record(&self) -> bool {
        !self.buffer.is_empty() && self.flush_asked >= self.buffer_first_lsn
    }

    /// Asks the writer for the records up to `lsn` under `always`; whether it must be woken for
    /// them (it was not asked for any record of this buffer yet).
    pub(crate) fn ask_flush(&mut self, lsn: Lsn) -> bool {
        let woken_already = self.holds_asked_record();
        self.flush_asked = self.flush_asked.max(lsn);
        !woken_already && self.holds_asked_record()
    }
}

/// The segments as the writer last left them, for the syncer, snapshots and status.
#[derive(Debug)]
pub(crate) struct Files {
    pub(crate) current: Arc<File>,
    pub(crate) current_path: PathBuf,
    pub(crate) current_first_lsn: Lsn,
    /// Bytes written to the current segment (header included).
    pub(crate) current_len: u64,
    /// Bytes of the current segment known to be fsynced.
    pub(crate) current_synced_len: u64,
    /// The LSN of the last record written; kept with `current_len` so the syncer captures a
    /// consistent pair.
    pub(crate) written_lsn: Lsn,
    /// (first LSN, bytes) of every older segment still on disk.
    pub(crate) older_segments: Vec<(Lsn, u64)>,
    pub(crate) snapshot_bytes: u64,
}

/// Requests to the background syncer thread.
#[derive(Debug, Default)]
pub(crate) struct SyncerControl {
    pub(crate) stop: bool,
    /// The current segment is nearly full: fsync it now, so that the fsync the writer does when
    /// it closes the segment (on the reply path) finds little left to flush.
    pub(crate) early_sync: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) fsyncs: AtomicU64,
    pub(crate) fsync_nanos_total: AtomicU64,
    pub(crate) fsync_nanos_max: AtomicU64,
    pub(crate) last_fsync_unix_secs: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) records_written: AtomicU64,
    /// Fsyncs by latency: entry i counts those that took at most `FSYNC_BUCKETS_US[i]` and more
    /// than the bound before it (the slower ones are counted only in `fsyncs`).
    pub(crate) fsync_buckets: [AtomicU64; FSYNC_BUCKETS_US.len()],
    /// Records taken from `pending` that the writer has not written yet (while failing).
    pub(crate) backlog_bytes: AtomicU64,
}

/// Both event loops' threads append, wait and write here at once: what one of them writes on
/// every record or batch sits on a cache line of its own (`CachePadded`), so that it does not
/// take away the lines others only read (the policy, `failing`, checked by every state change).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) policy: FsyncPolicy,
    failing: AtomicBool,
    pub(crate) pending: CachePadded<Mutex<Pending>>,
    pub(crate) writer_wake: Condvar,
    /// Wakes blocking waiters (snapshot, close) after a sync or a failure; used with `pending`.
    pub(crate) progress: Condvar,
    pub(crate) released_lsn: CachePadded<AtomicU64>,
    pub(crate) synced_lsn: CachePadded<AtomicU64>,
    /// The last LSN appended, kept beside `pending` so that every reply can read the position it
    /// waits for without taking the appenders' mutex.
    pub(crate) last_appended_lsn: CachePadded<AtomicU64>,
    /// `Pending::flush_asked`, for the waiters that find their record asked for already and
    /// need not take the appenders' mutex.
    flush_asked: CachePadded<AtomicU64>,
    /// Wakes async waiters after `released_lsn` moves or a failure appears; they re-check.
    pub(crate) released_changed: CachePadded<Notify>,
    pub(crate) files: CachePadded<Mutex<Files>>,
    write_failure: Mutex<Option<WriteFailure>>,
    sync_failure: Mutex<Option<WriteFailure>>,
    pub(crate) counters: CachePadded<Counters>,
    pub(crate) snapshot_running: AtomicBool,
    pub(crate) syncer: Mutex<SyncerControl>,
    /// Wakes the syncer thread for an early sync or to stop; also its everysec timer.
    pub(crate) syncer_wake: Condvar,
    #[cfg(test)]
    pub(crate) injected_failure: Mutex<Option<std::io::ErrorKind>>,
}

/// Which of the two independent failure slots: the writer's write(2)s and the fsyncs (of either
/// thread). Each clears only on its own kind of success, so a working write cannot hide a
/// failing fsync.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FailureKind {
    Write,
    Sync,
}

impl Shared {
    pub(crate) fn new(policy: FsyncPolicy, next_lsn: Lsn, files: Files) -> Shared {
        let last = next_lsn - 1;
        Shared {
            policy,
            failing: AtomicBool::new(false),
            pending: CachePadded::new(Mutex::new(Pending {
                buffer: Vec::new(),
                record_starts: Vec::new(),
                buffer_first_lsn: next_lsn,
                next_lsn,
                must_sync_upto: 0,
                sync_wanted: 0,
                flush_asked: 0,
                blocking_waiters: 0,
                writer_idle: false,
                stop: Stop::Run,
            })),
            writer_wake: Condvar::new(),
            progress: Condvar::new(),
            released_lsn: CachePadded::new(AtomicU64::new(last)),
            synced_lsn: CachePadded::new(AtomicU64::new(last)),
            last_appended_lsn: CachePadded::new(AtomicU64::new(last)),
            flush_asked: CachePadded::new(AtomicU64::new(0)),
            released_changed: CachePadded::new(Notify::new()),
            files: CachePadded::new(Mutex::new(files)),
            write_failure: Mutex::new(None),
            sync_failure: Mutex::new(None),
            counters: CachePadded::default(),
            snapshot_running: AtomicBool::new(false),
            syncer: Mutex::new(SyncerControl::default()),
            syncer_wake: Condvar::new(),
            #[cfg(test)]
            injected_failure: Mutex::new(None),
        }
    }

    fn slot(&self, kind: FailureKind) -> &Mutex<Option<WriteFailure>> {
        match kind {
            FailureKind::Write => &self.write_failure,
            FailureKind::Sync => &self.sync_failure,
        }
    }

    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Checked before every state change: inline, one load while the journal works.
    #[inline]
    pub(crate) fn failure(&self) -> Option<WriteFailure> {
        if !self.is_failing() {
            return None;
        }
        self.current_failure()
    }

    #[cold]
    fn current_failure(&self) -> Option<WriteFailure> {
        self.write_failure.lock().clone().or_else(|| self.sync_failure.lock().clone())
    }

    pub(crate) fn set_failure(&self, kind: FailureKind, failure: WriteFailure) {
        let mut slot = self.slot(kind).lock();
        if slot.is_none() {
            tracing::error!(
                "{failure}; state changes are refused until it succeeds again (retrying, nothing buffered is dropped)"
            );
        }
        // Keep the first failure's time: it says how long the journal has been failing.
        let since = slot.as_ref().map_or(failure.since, |old| old.since);
        *slot = Some(WriteFailure { since, ..failure });
        drop(slot);
        self.failing.store(true, Ordering::Release);
        self.wake_waiters();
    }

    pub(crate) fn clear_failure(&self, kind: FailureKind) {
        if !self.is_failing() {
            return;
        }
        let mut slot = self.slot(kind).lock();
        if let Some(old) = slot.take() {
            tracing::warn!("journal {} to {} works again", old.operation, old.file.display());
        }
        drop(slot);
        let still = self.write_failure.lock().is_some() || self.sync_failure.lock().is_some();
        self.failing.store(still, Ordering::Release);
    }

    /// Wakes async waiters and blocking waiters so they re-check the watermarks and failures.
    pub(crate) fn wake_waiters(&self) {
        self.released_changed.notify_waiters();
        let pending = self.pending.lock();
        if pending.blocking_waiters > 0 {
            self.progress.notify_all();
        }
    }

    pub(crate) fn publish_released(&self, lsn: Lsn) {
        self.released_lsn.fetch_max(lsn, Ordering::Release);
        self.released_changed.notify_waiters();
    }

    /// Under `always`: asks the writer thread to write and fsync every record up to `lsn`.
    pub(crate) fn ask_flush(&self, lsn: Lsn) {
        if self.flush_asked.load(Ordering::Acquire) >= lsn {
            return;
        }
        let mut pending = self.pending.lock();
        self.note_asked(&mut pending, lsn);
    }

    /// [`Shared::ask_flush`] for a caller that holds `pending` already.
    pub(crate) fn note_asked(&self, pending: &mut Pending, lsn: Lsn) {
        let wake = pending.ask_flush(lsn);
        self.flush_asked.store(pending.flush_asked, Ordering::Release);
        if wake {
            self.writer_wake.notify_one();
        }
    }

    /// Blocks until every record up to `lsn` is fsynced (asking the writer to do it), or fails.
    pub(crate) fn wait_synced(&self, lsn: Lsn) -> Result<(), LogError> {
        let mut pending = self.pending.lock();
        pending.sync_wanted = pending.sync_wanted.max(lsn);
        pending.blocking_waiters += 1;
        self.writer_wake.notify_one();
        let outcome = loop {
            if self.synced_lsn.load(Ordering::Acquire) >= lsn {
                break Ok(());
            }
            if let Some(failure) = self.failure() {
                break Err(LogError::WriteFailing(failure));
            }
            if pending.stop != Stop::Run {
                let gone = std::io::Error::other("the journal is closing");
                break Err(LogError::io("waiting for fsync", gone));
            }
            self.progress.wait(&mut pending);
        };
        pending.blocking_waiters -= 1;
        outcome
    }

    pub(crate) fn note_fsync(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let counters = &self.counters;
        counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        counters.fsync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        counters.fsync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        counters.last_fsync_unix_secs.store(now, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(bucket) = FSYNC_BUCKETS_US.iter().position(|bound| micros <= *bound) {
            counters.fsync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A test's stand-in for a full or failing disk: the next writes and fsyncs fail with it.
    #[cfg(test)]
    pub(crate) fn injected(&self) -> Option<std::io::Error> {
        self.injected_failure.lock().map(std::io::Error::from)
    }

    #[cfg(not(test))]
    pub(crate) fn injected(&self) -> Option<std::io::Error> {
        None
    }
}
