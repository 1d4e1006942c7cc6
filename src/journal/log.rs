//! The journal's face: [`Log`] opens a directory, appends records, tells when they are released
//! (written, or fsynced under `always`), writes snapshots, reports its status and closes cleanly.
//! The work is done by the writer (`writer`: its thread, or under everysec and no the task that
//! waits for a record), recovery (`recovery`) and `snapshot`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Lsn;
use super::dir::JournalDir;
use super::error::{LogError, WriteFailure};
use super::frame;
use super::recovery::{self, Recovery};
use super::snapshot::SnapshotWriter;
use super::state::{Files, Shared, Stop};
use super::writer::{self, OpenSegment, Writer};
use crate::run_queue::yield_to_queued;

/// When a record counts as released, and how often the journal is fsynced: Redis's
/// `appendfsync`, as the flag spells it. `No` still fsyncs around closing a segment, for
/// `append_synced`, snapshots and close.
pub(crate) use crate::config::AppendFsync as FsyncPolicy;

/// Whether a task waiting for its records to be written lets the other tasks ready on its event
/// loop run first, so that one write covers their records too (see [`Log::released`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gather {
    WithOthers,
    /// A blocked WAIT's answer: its client has waited already, and the change it reports is
    /// complete, so its write goes out at once.
    No,
}

#[derive(Debug, Clone)]
pub(crate) struct LogOptions {
    pub(crate) fsync: FsyncPolicy,
    /// A segment is closed once it reaches this size (it may exceed it by one batch).
    pub(crate) segment_bytes: u64,
    /// This boot's id (/proc/sys/kernel/random/boot_id), recorded in each segment header.
    pub(crate) boot_id: String,
    /// Truncate at mid-journal damage instead of refusing to open.
    pub(crate) repair: bool,
}

/// The upper bounds, in microseconds, of the buckets of fsync latency that Prometheus is shown
/// (INFO shows the count, the average and the maximum).
pub(crate) const FSYNC_BUCKETS_US: [u64; 12] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000];

/// For INFO `# Persistence` and the Prometheus endpoint.
#[derive(Debug, Clone)]
pub(crate) struct LogStatus {
    pub(crate) policy: FsyncPolicy,
    /// Segments plus the snapshot.
    pub(crate) disk_bytes: u64,
    /// The size of the last snapshot (0 without one).
    pub(crate) snapshot_bytes: u64,
    pub(crate) segments: u64,
    pub(crate) last_lsn: Lsn,
    pub(crate) written_lsn: Lsn,
    pub(crate) synced_lsn: Lsn,
    pub(crate) released_lsn: Lsn,
    /// Appended but not yet written (grows while writes fail).
    pub(crate) unwritten_bytes: u64,
    /// None while writes and fsyncs succeed.
    pub(crate) write_failure: Option<WriteFailure>,
    pub(crate) last_fsync_unix_secs: Option<u64>,
    pub(crate) fsyncs: u64,
    pub(crate) fsync_total: Duration,
    pub(crate) fsync_max: Duration,
    /// See `Counters::fsync_buckets`.
    pub(crate) fsync_buckets: [u64; FSYNC_BUCKETS_US.len()],
    pub(crate) bytes_written: u64,
    pub(crate) records_written: u64,
    pub(crate) current_segment: PathBuf,
    /// The current segment is known to be fsynced up to this byte offset: a power-loss test
    /// truncates it there.
    pub(crate) current_segment_synced_bytes: u64,
}

/// The journal. Send + Sync: the server shares it in an Arc.
#[derive(Debug)]
pub(crate) struct Log {
    shared: Arc<Shared>,
    dir: Arc<JournalDir>,
    /// The segment being written and what is queued for it: the writer thread's, and under
    /// everysec and no also that of a task writing for its reply (see [`Log::released`]).
    writer_state: Arc<Mutex<Writer>>,
    /// Taken when the threads stop; behind mutexes so that a log shared with the lock core (its
    /// change sink) and every connection can still be closed by the server.
    writer: Mutex<Option<JoinHandle<()>>>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

impl Log {
    /// Creates `dir` if missing, takes its lock (a second server on it fails with
    /// [`LogError::Locked`]), validates and recovers what is there, and starts the writer on a new
    /// segment after the last good record.
    pub(crate) fn open(dir: &Path, options: LogOptions) -> Result<(Log, Recovery), LogError> {
        let dir = Arc::new(JournalDir::open(dir)?);
        let recovered = recovery::recover(&dir, &options.boot_id, options.repair)?;
        let next_lsn = recovered.next_lsn;
        let mut older_segments = recovered.segment_sizes;

        // Only the last segment can hold records the previous process never fsynced (it crashed
        // under everysec, say). Make them durable before this process writes a later segment,
        // or an OS crash could leave a hole in the middle of the journal.
        let segment_path = dir.segment_path(next_lsn);
        if let Some(&(first_lsn, _)) = older_segments.last() {
            let path = dir.segment_path(first_lsn);
            if recovered.empty_last_segment.as_ref() != Some(&path) {
                sync_file(&path)?;
            }
        }
        if let Some(empty) = &recovered.empty_last_segment {
            // Holds no record: rewritten below if it has the new segment's name, removed if not.
            older_segments.retain(|&(first_lsn, _)| dir.segment_path(first_lsn) != *empty);
            if *empty != segment_path {
                dir.remove_if_present(empty).map_err(|e| LogError::io(format!("removing {}", empty.display()), e))?;
            }
        }

        // Each process writes a segment of its own, whose header records this boot: the next open
        // compares it with its own boot id.
        let create_error = |e| LogError::io(format!("creating {}", segment_path.display()), e);
        let (file, header_len) =
            writer::create_segment(&segment_path, next_lsn, &options.boot_id).map_err(create_error)?;
        file.sync_all().map_err(create_error)?;
        dir.sync().map_err(|e| LogError::io(format!("syncing {}", dir.path().display()), e))?;
        let file = Arc::new(file);

        let files = Files {
            current: Arc::clone(&file),
            current_path: segment_path.clone(),
            current_first_lsn: next_lsn,
            current_len: header_len,
            current_synced_len: header_len,
            written_lsn: next_lsn - 1,
            older_segments,
            snapshot_bytes: recovered.snapshot_bytes,
        };
        let shared = Arc::new(Shared::new(options.fsync, next_lsn, files));
        let segment =
            OpenSegment { file, path: segment_path, first_lsn: next_lsn, len: header_len, has_records: false };
        let writer_state = Arc::new(Mutex::new(Writer::new(
            Arc::clone(&shared),
            Arc::clone(&dir),
            segment,
            options.segment_bytes,
            options.boot_id,
        )));
        let (thread_shared, thread_state) = (Arc::clone(&shared), Arc::clone(&writer_state));
        let writer = spawn("journal-writer", move || writer::run(thread_shared, thread_state))?;
        let log = Log {
            shared: Arc::clone(&shared),
            dir,
            writer_state,
            writer: Mutex::new(Some(writer)),
            syncer: Mutex::new(None),
        };
        if options.fsync != FsyncPolicy::Always {
            let every_second = options.fsync == FsyncPolicy::Everysec;
            *log.syncer.lock() = Some(spawn("journal-fsync", move || writer::run_syncer(shared, every_second))?);
        }
        Ok((log, recovered.recovery))
    }

    /// Buffers one payload, given in pieces, as the entry of the next LSN (see `frame`: entries
    /// buffered together share a framed record) and returns that LSN. No I/O, no waiting on the
    /// writer: only a short mutex around the buffer, so it may be called under the lock core's
    /// shard mutexes.
    pub(crate) fn append_parts(&self, payload: &[&[u8]]) -> Lsn {
        self.append_inner(payload, false)
    }

    #[cfg(test)]
    pub(crate) fn append(&self, payload: &[u8]) -> Lsn {
        self.append_parts(&[payload])
    }

    /// Like [`Log::append`], but the record is fsynced before it or any later LSN is released,
    /// whatever the policy (token-range reservations).
    pub(crate) fn append_synced(&self, payload: &[u8]) -> Lsn {
        self.append_inner(&[payload], true)
    }

    fn append_inner(&self, payload: &[&[u8]], synced: bool) -> Lsn {
        let mut pending = self.shared.pending.lock();
        let lsn = pending.next_lsn;
        pending.next_lsn += 1;
        self.shared.last_appended_lsn.store(lsn, Ordering::Release);
        let first_of_batch = pending.buffer.is_empty();
        if first_of_batch {
            pending.buffer_first_lsn = lsn;
        }
        let open_record_bytes = pending.buffer.len() - pending.record_starts.last().map_or(0, |&start| start);
        let entry_bytes: usize = payload.iter().map(|part| part.len()).sum();
        if first_of_batch || open_record_bytes + entry_bytes > frame::RECORD_TARGET_BYTES {
            let start = pending.buffer.len();
            pending.record_starts.push(start);
            frame::begin_entries(&mut pending.buffer, lsn);
        }
        frame::push_entry(&mut pending.buffer, payload);
        if synced {
            pending.must_sync_upto = lsn;
        }
        if self.shared.policy == FsyncPolicy::Always {
            // The writer thread writes every batch under `always`. A record appended on an event
            // loop waits for the end of the loop's turn, so that one fsync covers every request
            // the turn served (Redis fsyncs once per turn of its loop); one appended anywhere
            // else, or that must be synced, is asked for at once.
            if synced || !owe_flush_here(&self.shared) {
                self.shared.note_asked(&mut pending, lsn);
            }
            return lsn;
        }
        // Under everysec and no the replies' tasks write, and the thread is woken only for a
        // record that must be fsynced, or when it sleeps for want of work.
        let wake = synced || (first_of_batch && pending.writer_idle);
        if wake {
            pending.writer_idle = false;
        }
        drop(pending);
        if wake {
            self.shared.writer_wake.notify_one();
        }
        lsn
    }

    pub(crate) fn last_lsn(&self) -> Lsn {
        self.shared.last_appended_lsn.load(Ordering::Acquire)
    }

    /// Whether every record up to `lsn` is released.
    pub(crate) fn is_released(&self, lsn: Lsn) -> bool {
        self.shared.released_lsn.load(Ordering::Acquire) >= lsn
    }

    /// Waits until every record up to `lsn` is released; errors while the journal cannot write
    /// or fsync. Cancel-safe. `lsn` must have been appended, or this waits forever.
    ///
    /// Under everysec and no the caller writes the buffered records itself (its own and everyone
    /// else's) unless another task is at it, whose write then releases them: one write(2) on the
    /// reply path instead of two thread hops. Under `always` it asks the writer thread for them.
    pub(crate) async fn released(&self, lsn: Lsn, gather: Gather) -> Result<(), LogError> {
        let writes_itself = self.shared.policy != FsyncPolicy::Always;
        if gather == Gather::WithOthers && !self.is_released(lsn) && self.shared.failure().is_none() {
            // Like Redis writing its AOF buffer once per turn of its event loop: the other tasks
            // ready on this thread run first, so one write (or fsync) covers their records too.
            // Nothing is registered with `released_changed` yet: most waits end with this write,
            // and the registration takes a mutex that both event loops' threads contend for.
            yield_to_queued().await;
            if writes_itself && self.write_pending_until(lsn) {
                return Ok(());
            }
        }
        if !writes_itself {
            // Everything this loop's turn appended, not only this waiter's record.
            self.shared.ask_flush(self.last_lsn());
        }
        let relayed = relayed_here(&self.shared);
        let released_changed = relayed.as_deref().unwrap_or(&self.shared.released_changed);
        loop {
            let notified = released_changed.notified();
            tokio::pin!(notified);
            // Registered before checking, so a release between the check and the await still wakes us.
            notified.as_mut().enable();
            if self.is_released(lsn) {
                return Ok(());
            }
            if let Some(failure) = self.shared.failure() {
                return Err(LogError::WriteFailing(failure));
            }
            if writes_itself && self.write_pending_until(lsn) {
                return Ok(());
            }
            notified.await;
        }
    }

    /// Under `always`, a task for each event loop to run (see [`relay_releases`]); `None` under
    /// the other policies, where the replies' own tasks write and rarely wait for another thread.
    pub(crate) fn release_relay(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        (self.shared.policy == FsyncPolicy::Always).then(|| relay_releases(Arc::clone(&self.shared)))
    }

    /// Unless `lsn` is released already, writes what is buffered (if no other task is writing
    /// already); whether `lsn` is released then.
    fn write_pending_until(&self, lsn: Lsn) -> bool {
        if self.is_released(lsn) {
            return true;
        }
        if let Some(mut writer) = self.writer_state.try_lock() {
            writer.write_pending();
        }
        self.is_released(lsn)
    }

    /// The last write or fsync failure, while it lasts (it clears once one succeeds again).
    #[inline]
    pub(crate) fn write_failing(&self) -> Option<WriteFailure> {
        self.shared.failure()
    }

    /// Starts a snapshot; only one at a time. Runs on the caller's thread; appends go on meanwhile.
    pub(crate) fn snapshot(&self) -> Result<SnapshotWriter, LogError> {
        if self.shared.snapshot_running.swap(true, Ordering::AcqRel) {
            return Err(LogError::SnapshotInProgress);
        }
        SnapshotWriter::start(Arc::clone(&self.shared), Arc::clone(&self.dir))
    }

    pub(crate) fn status(&self) -> LogStatus {
        let shared = &*self.shared;
        let (last_lsn, buffered) = {
            let pending = shared.pending.lock();
            (pending.next_lsn - 1, pending.buffer.len() as u64)
        };
        let files = shared.files.lock();
        let older_bytes: u64 = files.older_segments.iter().map(|(_, bytes)| bytes).sum();
        let counters = &shared.counters;
        let last_fsync = counters.last_fsync_unix_secs.load(Ordering::Relaxed);
        LogStatus {
            policy: shared.policy,
            disk_bytes: older_bytes + files.current_len + files.snapshot_bytes,
            snapshot_bytes: files.snapshot_bytes,
            segments: files.older_segments.len() as u64 + 1,
            last_lsn,
            written_lsn: files.written_lsn,
            synced_lsn: shared.synced_lsn.load(Ordering::Acquire),
            released_lsn: shared.released_lsn.load(Ordering::Acquire),
            unwritten_bytes: buffered + counters.backlog_bytes.load(Ordering::Relaxed),
            write_failure: shared.failure(),
            last_fsync_unix_secs: (last_fsync > 0).then_some(last_fsync),
            fsyncs: counters.fsyncs.load(Ordering::Relaxed),
            fsync_total: Duration::from_nanos(counters.fsync_nanos_total.load(Ordering::Relaxed)),
            fsync_max: Duration::from_nanos(counters.fsync_nanos_max.load(Ordering::Relaxed)),
            bytes_written: counters.bytes_written.load(Ordering::Relaxed),
            records_written: counters.records_written.load(Ordering::Relaxed),
            fsync_buckets: counters.fsync_buckets.each_ref().map(|count| count.load(Ordering::Relaxed)),
            current_segment: files.current_path.clone(),
            current_segment_synced_bytes: files.current_synced_len,
        }
    }

    /// Writes and fsyncs everything and marks the shutdown clean; the directory lock goes with the
    /// log. On error the mark is not written, so the next open treats this like a crash. Records
    /// appended afterwards are never written.
    pub(crate) fn close(&self) -> Result<(), LogError> {
        self.stop_threads(Stop::Drain);
        if let Some(failure) = self.shared.failure() {
            return Err(LogError::WriteFailing(failure));
        }
        let last_lsn = self.last_lsn();
        if self.shared.synced_lsn.load(Ordering::Acquire) < last_lsn {
            let unsynced = std::io::Error::other("records remain unsynced after the writer stopped");
            return Err(LogError::io("closing the journal", unsynced));
        }
        let path = self.dir.clean_mark_path();
        self.dir
            .write_durably(&path, &frame::encode_clean_mark(last_lsn))
            .map_err(|e| LogError::io(format!("writing {}", path.display()), e))
    }

    fn stop_threads(&self, stop: Stop) {
        {
            let mut pending = self.shared.pending.lock();
            if pending.stop == Stop::Run {
                pending.stop = stop;
            }
            self.shared.writer_wake.notify_one();
            self.shared.progress.notify_all();
        }
        let writer = self.writer.lock().take();
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            tracing::error!("the journal writer thread panicked");
        }
        self.shared.syncer.lock().stop = true;
        self.shared.syncer_wake.notify_one();
        let syncer = self.syncer.lock().take();
        if let Some(syncer) = syncer
            && syncer.join().is_err()
        {
            tracing::error!("the journal fsync thread panicked");
        }
    }

    #[cfg(test)]
    pub(crate) fn inject_failure(&self, error: Option<std::io::ErrorKind>) {
        *self.shared.injected_failure.lock() = error;
    }
}

/// Dropped without close(): like a crash, the threads stop without writing what is buffered and
/// no clean-shutdown mark is written. The directory lock goes with the last reference to it.
impl Drop for Log {
    fn drop(&mut self) {
        self.stop_threads(Stop::Abandon);
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, LogError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map_err(|e| LogError::io(format!("starting the {name} thread"), e))
}

fn sync_file(path: &Path) -> Result<(), LogError> {
    let error = |e| LogError::io(format!("syncing {}", path.display()), e);
    std::fs::File::open(path).map_err(error)?.sync_data().map_err(error)
}

thread_local! {
    /// The relay running on this thread, if any.
    static RELAY: RefCell<Option<LoopRelay>> = const { RefCell::new(None) };
    /// See [`appending_for_a_waiting_loop`].
    static APPENDING_FOR_A_WAITING_LOOP: Cell<bool> = const { Cell::new(false) };
}

struct LoopRelay {
    /// The journal it relays for.
    shared: Arc<Shared>,
    /// What this loop's waiters wait on instead of the journal's own notify.
    waiters: Arc<Notify>,
    /// Records were appended on this loop since it last asked the writer for them.
    flush_owed: Cell<bool>,
}

/// Under `always`, whether a record appended now on this thread may wait for the end of its
/// event loop's turn: true on a loop that relays for `shared`, which asks for the record at the
/// latest when it goes to sleep ([`flush_owed_records`]), and on a thread appending for a loop
/// that waits for it ([`appending_for_a_waiting_loop`]).
fn owe_flush_here(shared: &Arc<Shared>) -> bool {
    APPENDING_FOR_A_WAITING_LOOP.get() || with_relay_for(shared, |relay| relay.flush_owed.set(true)).is_some()
}

/// Runs `append` on a thread that works for an event loop while the loop waits for it (a long
/// line's DONEs written on the spare core), leaving the records it appends under `always` to that
/// loop's turn, as the loop's own are. Asked for one by one, the payments of a 3,000-waiter
/// fan-out kept the writer thread fsyncing through it (10 to 29 fsyncs, against 2), and 10,000
/// waiters were told in 1.14x the time. The loop then calls [`owe_flush_on_this_loop`].
pub(crate) fn appending_for_a_waiting_loop<R>(append: impl FnOnce() -> R) -> R {
    APPENDING_FOR_A_WAITING_LOOP.set(true);
    let appended = append();
    APPENDING_FOR_A_WAITING_LOOP.set(false);
    appended
}

/// On an event loop: its turn asks for every record appended so far (see
/// [`appending_for_a_waiting_loop`]).
pub(crate) fn owe_flush_on_this_loop() {
    RELAY.with_borrow(|relay| {
        if let Some(relay) = relay {
            relay.flush_owed.set(true);
        }
    });
}

/// `act` on the relay running on this thread, if it relays for `shared`.
fn with_relay_for<R>(shared: &Arc<Shared>, act: impl FnOnce(&LoopRelay) -> R) -> Option<R> {
    RELAY.with_borrow(|relay| match relay {
        Some(relay) if Arc::ptr_eq(&relay.shared, shared) => Some(act(relay)),
        _ => None,
    })
}

/// For an event loop about to sleep: asks the writer thread for the records its turn appended
/// under `always`, including those no reply waits for (a lease that ran out, say).
pub(crate) fn flush_owed_records() {
    RELAY.with_borrow(|relay| {
        if let Some(relay) = relay
            && relay.flush_owed.replace(false)
        {
            relay.shared.ask_flush(relay.shared.last_appended_lsn.load(Ordering::Acquire));
        }
    });
}

/// Under `always` every reply waits for the writer thread's fsync. Woken one by one from that
/// thread, each waiting task costs a write to its event loop's eventfd (tokio wakes a loop per
/// remote wake-up): about 1.7 such writes per request under `redis-benchmark -c 50 -P 1`, 42 per
/// fsync. A relay on each loop is the only task the writer thread wakes there; it wakes the
/// loop's waiters from their own thread, which costs no system call.
async fn relay_releases(shared: Arc<Shared>) {
    let local = Arc::new(Notify::new());
    let _installed = RelayInstalled::install(&shared, &local);
    loop {
        let released = shared.released_changed.notified();
        tokio::pin!(released);
        // Registered before the local waiters are woken: a release after they were woken wakes
        // the relay again, so a waiter that found its LSN unreleased is always woken after.
        released.as_mut().enable();
        local.notify_waiters();
        released.await;
    }
}

/// The relay's notify, if a relay for `shared` runs on this thread.
fn relayed_here(shared: &Arc<Shared>) -> Option<Arc<Notify>> {
    with_relay_for(shared, |relay| Arc::clone(&relay.waiters))
}

/// Marks the relay as running on this thread until it is dropped, so that no waiter waits on a
/// notify nobody relays to any more.
struct RelayInstalled;

impl RelayInstalled {
    fn install(shared: &Arc<Shared>, local: &Arc<Notify>) -> RelayInstalled {
        RELAY.with_borrow_mut(|relay| {
            *relay = Some(LoopRelay {
                shared: Arc::clone(shared),
                waiters: Arc::clone(local),
                flush_owed: Cell::new(false),
            });
        });
        RelayInstalled
    }
}

impl Drop for RelayInstalled {
    fn drop(&mut self) {
        RELAY.with_borrow_mut(|relay| *relay = None);
    }
}
