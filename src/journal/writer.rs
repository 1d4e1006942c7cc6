//! The writer: group commit. Whoever writes takes the whole buffer at once, writes it with one
//! pwrite, fsyncs when the policy or an `append_synced` record asks, and publishes the released
//! LSN; appenders meanwhile fill the next buffer. Under `always` the writer thread does it all,
//! woken once per batch however many threads append, and asked for records appended on an event
//! loop only once the loop's turn has served every ready request (`Log::released`). Under
//! everysec and no a reply waits only for the write, so the task waiting for it writes the
//! buffer itself ([`Writer::write_pending`]): a hop to the writer thread and back would cost more
//! than the write. The thread then only polls for records nobody waited for, and does what may
//! block for long: retries after a failure, the fsync that closes a full segment, and records
//! that must be synced.
//!
//! On a failed write or fsync the batch stays queued (with later ones behind it) and is retried
//! every [`RETRY_INTERVAL`] at the same offset: nothing is dropped and records land in order.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::Lsn;
use super::dir::JournalDir;
use super::error::WriteFailure;
use super::frame::{self, SegmentHeader};
use super::log::FsyncPolicy;
use super::state::{FailureKind, Pending, Shared, Stop};

pub(crate) const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Under everysec and no, how often the writer thread looks for records that no reply waited
/// for (a lease that ran out with nobody in line, say), and how many empty looks before it
/// sleeps until an appender wakes it.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
const IDLE_POLLS: u32 = 100;

/// The largest batch buffer kept for reuse.
const SPARE_BYTES: usize = 1 << 20;

/// Creates (or empties) a segment file and writes its header. The caller makes it durable.
pub(crate) fn create_segment(path: &std::path::Path, first_lsn: Lsn, boot_id: &str) -> io::Result<(File, u64)> {
    let header = frame::encode_segment_header(&SegmentHeader {
        first_lsn,
        boot_id: boot_id.to_owned(),
        version: frame::SEGMENT_VERSION,
    });
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    file.write_all(&header)?;
    Ok((file, header.len() as u64))
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct OpenSegment {
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) first_lsn: Lsn,
    pub(crate) len: u64,
    pub(crate) has_records: bool,
}

#[derive(Debug)]
struct Batch {
    bytes: Vec<u8>,
    /// Where each record in `bytes` starts; emptied once the records are sealed.
    record_starts: Vec<usize>,
    first_lsn: Lsn,
    last_lsn: Lsn,
    must_sync: bool,
}

impl Batch {
    /// Fills in its records' lengths and CRCs. Here, not as the records are appended: one CRC
    /// over each record of the batch, off the appenders' mutex (they append under the lock
    /// core's shard locks).
    fn seal(&mut self) {
        let mut ends = self.record_starts.iter().skip(1).copied().chain([self.bytes.len()]);
        for &start in &self.record_starts {
            let end = ends.next().unwrap_or(self.bytes.len());
            frame::seal_entries(&mut self.bytes[start..end]);
        }
        self.record_starts.clear();
    }
}

#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) dir: Arc<JournalDir>,
    pub(crate) segment: OpenSegment,
    pub(crate) segment_bytes: u64,
    pub(crate) boot_id: String,
    backlog: VecDeque<Batch>,
    spare: Vec<u8>,
    spare_starts: Vec<usize>,
    /// Whether the syncer was asked to fsync the current segment before it fills up.
    early_sync_asked: bool,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        dir: Arc<JournalDir>,
        segment: OpenSegment,
        segment_bytes: u64,
        boot_id: String,
    ) -> Writer {
        Writer {
            shared,
            dir,
            segment,
            segment_bytes,
            boot_id,
            backlog: VecDeque::new(),
            spare: Vec::new(),
            spare_starts: Vec::new(),
            early_sync_asked: false,
        }
    }

    /// Moves the buffered records into the backlog, in one batch.
    fn take_batch(&mut self, pending: &mut Pending) {
        if pending.buffer.is_empty() {
            return;
        }
        let must_sync = self.shared.policy == FsyncPolicy::Always || pending.holds_synced_record();
        let bytes = std::mem::replace(&mut pending.buffer, std::mem::take(&mut self.spare));
        let record_starts = std::mem::replace(&mut pending.record_starts, std::mem::take(&mut self.spare_starts));
        let first_lsn = pending.buffer_first_lsn;
        let last_lsn = pending.next_lsn - 1;
        pending.buffer_first_lsn = pending.next_lsn;
        self.shared.counters.backlog_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.backlog.push_back(Batch { bytes, record_starts, first_lsn, last_lsn, must_sync });
    }

    /// Writes the buffered records on the caller's thread (a task about to reply), unless that is
    /// the writer thread's job: a record that must be fsynced, a full segment to close (with an
    /// fsync), batches left from a failure (which go first, at the writer's retry pace), or a
    /// stop. Then the writer thread is woken for it.
    pub(crate) fn write_pending(&mut self) {
        let shared = Arc::clone(&self.shared);
        {
            let mut pending = shared.pending.lock();
            if pending.buffer.is_empty() {
                return;
            }
            let threads_job = pending.holds_synced_record()
                || pending.stop != Stop::Run
                || !self.backlog.is_empty()
                || self.segment_full();
            if threads_job {
                pending.writer_idle = false;
                shared.writer_wake.notify_one();
                return;
            }
            self.take_batch(&mut pending);
        }
        match self.flush(0) {
            Ok(()) => shared.clear_failure(FailureKind::Write),
            Err((kind, failure)) => {
                shared.set_failure(kind, failure);
                shared.writer_wake.notify_one();
            }
        }
    }

    fn segment_full(&self) -> bool {
        self.segment.has_records && self.segment.len >= self.segment_bytes
    }

    fn flush(&mut self, sync_wanted: Lsn) -> Result<(), (FailureKind, WriteFailure)> {
        while let Some(batch) = self.backlog.front() {
            let (first_lsn, last_lsn, must_sync) = (batch.first_lsn, batch.last_lsn, batch.must_sync);
            if self.segment_full() {
                self.roll(first_lsn)?;
            }
            let start = self.segment.len;
            self.write_at(start, first_lsn, last_lsn)?;
            if must_sync && let Err(failure) = self.sync() {
                // After a failed fsync the kernel may have dropped the dirty pages and will not
                // report it again: write the batch anew rather than trust a later fsync.
                self.segment.len = start;
                return Err(failure);
            }
            self.shared.publish_released(last_lsn);
            if let Some(batch) = self.backlog.pop_front() {
                self.shared.counters.backlog_bytes.fetch_sub(batch.bytes.len() as u64, Ordering::Relaxed);
                self.recycle(batch.bytes, batch.record_starts);
            }
        }
        if sync_wanted > self.shared.synced_lsn.load(Ordering::Acquire) {
            self.sync()?;
        }
        Ok(())
    }

    fn write_at(&mut self, start: u64, first_lsn: Lsn, last_lsn: Lsn) -> Result<(), (FailureKind, WriteFailure)> {
        let Some(batch) = self.backlog.front_mut() else { return Ok(()) };
        batch.seal();
        let written = match self.shared.injected() {
            Some(error) => Err(error),
            None => self.segment.file.write_all_at(&batch.bytes, start),
        };
        let len = batch.bytes.len() as u64;
        written.map_err(|error| (FailureKind::Write, self.failure("write", error)))?;
        self.segment.len = start + len;
        self.segment.has_records = true;
        let counters = &self.shared.counters;
        counters.bytes_written.fetch_add(len, Ordering::Relaxed);
        counters.records_written.fetch_add(last_lsn - first_lsn + 1, Ordering::Relaxed);
        let mut files = self.shared.files.lock();
        files.current_len = self.segment.len;
        files.written_lsn = last_lsn;
        drop(files);
        let nearly_full = self.segment.len >= self.segment_bytes - self.segment_bytes / 8;
        if nearly_full && !self.early_sync_asked && self.shared.policy != FsyncPolicy::Always {
            self.early_sync_asked = true;
            self.shared.syncer.lock().early_sync = true;
            self.shared.syncer_wake.notify_one();
        }
        Ok(())
    }

    /// Keeps the largest buffer's capacity for the next batch, so steady appends allocate nothing;
    /// but not one that a burst (a mass release or expiry) grew past [`SPARE_BYTES`], which would
    /// stay allocated for good.
    fn recycle(&mut self, mut bytes: Vec<u8>, mut record_starts: Vec<usize>) {
        if bytes.capacity() > self.spare.capacity() && bytes.capacity() <= SPARE_BYTES {
            bytes.clear();
            self.spare = bytes;
        }
        if record_starts.capacity() > self.spare_starts.capacity() {
            record_starts.clear();
            self.spare_starts = record_starts;
        }
    }

    /// fdatasync of the current segment: covers every record written, since older segments were
    /// fsynced when they were closed.
    fn sync(&mut self) -> Result<(), (FailureKind, WriteFailure)> {
        let written_lsn = self.shared.files.lock().written_lsn;
        let started = Instant::now();
        let synced = match self.shared.injected() {
            Some(error) => Err(error),
            None => self.segment.file.sync_data(),
        };
        synced.map_err(|error| (FailureKind::Sync, self.failure("fsync", error)))?;
        self.shared.note_fsync(started.elapsed());
        self.shared.synced_lsn.fetch_max(written_lsn, Ordering::AcqRel);
        let mut files = self.shared.files.lock();
        if files.current_first_lsn == self.segment.first_lsn {
            files.current_synced_len = files.current_synced_len.max(self.segment.len);
        }
        drop(files);
        self.shared.clear_failure(FailureKind::Sync);
        Ok(())
    }

    /// Closes the current segment (fsynced first, so that only the last segment can ever hold a
    /// torn or unsynced tail) and starts one named after `first_lsn`.
    fn roll(&mut self, first_lsn: Lsn) -> Result<(), (FailureKind, WriteFailure)> {
        self.sync()?;
        let path = self.dir.segment_path(first_lsn);
        let created = create_segment(&path, first_lsn, &self.boot_id).and_then(|file| {
            self.dir.sync()?;
            Ok(file)
        });
        let (file, header_len) =
            created.map_err(|error| (FailureKind::Write, self.failure_at("create segment", path.clone(), error)))?;
        let file = Arc::new(file);
        self.early_sync_asked = false;
        let old = std::mem::replace(
            &mut self.segment,
            OpenSegment { file: Arc::clone(&file), path: path.clone(), first_lsn, len: header_len, has_records: false },
        );
        let mut files = self.shared.files.lock();
        files.older_segments.push((old.first_lsn, old.len));
        files.current = file;
        files.current_path = path;
        files.current_first_lsn = first_lsn;
        files.current_len = header_len;
        files.current_synced_len = 0;
        Ok(())
    }

    fn failure(&self, operation: &'static str, error: io::Error) -> WriteFailure {
        self.failure_at(operation, self.segment.path.clone(), error)
    }

    fn failure_at(&self, operation: &'static str, file: PathBuf, error: io::Error) -> WriteFailure {
        WriteFailure { operation, file, error: Arc::new(error), since: SystemTime::now() }
    }
}

/// The writer thread: see the module's documentation.
pub(crate) fn run(shared: Arc<Shared>, state: Arc<Mutex<Writer>>) {
    loop {
        // A failure may be a task's write's: the retries are this thread's.
        if !wait_for_work(&shared, shared.is_failing()) {
            return;
        }
        if shared.policy == FsyncPolicy::Always {
            // Like an event loop before it sleeps (`event_loops`), the writer gives its core away
            // once before it takes the batch: a loop still serving its turn, or the client about
            // to send it the next request, finishes first and the fsync covers their records
            // too. Each fsync costs ~80 µs of CPU on a VM (the disk's doorbell exits to the
            // host); under `redis-benchmark -c 50 -P 1` this yield took 7,100 fsyncs per 100,000
            // requests down to 6,000 and W2 from 0.89× Redis `always` to 1.04–1.07×.
            std::thread::yield_now();
        }
        let mut writer = state.lock();
        let (stop, sync_wanted) = {
            let mut pending = shared.pending.lock();
            writer.take_batch(&mut pending);
            if pending.stop == Stop::Drain {
                pending.sync_wanted = pending.next_lsn - 1;
            }
            (pending.stop, pending.sync_wanted)
        };
        match writer.flush(sync_wanted) {
            Ok(()) => shared.clear_failure(FailureKind::Write),
            Err((kind, failure)) => shared.set_failure(kind, failure),
        }
        drop(writer);
        shared.wake_waiters();
        // close() gets one more attempt, not a retry loop: a dead disk must not hang shutdown.
        if stop == Stop::Drain {
            return;
        }
    }
}

/// Waits until there is something for the writer thread to do; false when abandoned. Under
/// everysec and no, buffered records are its to write only once a batch has sat unwritten
/// through a whole poll interval (the replies' tasks write the rest), unless they must be
/// fsynced. Taking whatever happened to be buffered when it woke raced the tasks about to
/// write it (one batch in 400 under redis-benchmark -P 1), and a task that lost the race waited
/// for a wake-up from this thread.
fn wait_for_work(shared: &Shared, failing: bool) -> bool {
    let mut pending = shared.pending.lock();
    let retry_at = failing.then(|| Instant::now() + RETRY_INTERVAL);
    let polls = shared.policy != FsyncPolicy::Always;
    // The first LSN of the batch that was buffered when this thread last went to sleep.
    let mut batch_seen: Option<Lsn> = None;
    let mut idle_polls = 0;
    loop {
        match pending.stop {
            Stop::Abandon => return false,
            Stop::Drain => return true,
            Stop::Run => {}
        }
        match retry_at {
            // Failing: new records must not trigger a retry each, only the clock does.
            Some(at) => {
                if Instant::now() >= at {
                    return true;
                }
                shared.writer_wake.wait_until(&mut pending, at);
            }
            // A task's write failed meanwhile: its batch waits in the backlog for this thread.
            None if shared.is_failing() => return true,
            None => {
                let sync_owed = pending.sync_wanted > shared.synced_lsn.load(Ordering::Acquire);
                let buffered = !pending.buffer.is_empty();
                let unclaimed = if polls {
                    buffered && batch_seen == Some(pending.buffer_first_lsn)
                } else {
                    pending.holds_asked_record()
                };
                if sync_owed || pending.holds_synced_record() || unclaimed {
                    return true;
                }
                batch_seen = buffered.then_some(pending.buffer_first_lsn);
                if !polls || pending.writer_idle {
                    shared.writer_wake.wait(&mut pending);
                } else if shared.writer_wake.wait_for(&mut pending, POLL_INTERVAL).timed_out()
                    && pending.buffer.is_empty()
                {
                    idle_polls += 1;
                    pending.writer_idle = idle_polls >= IDLE_POLLS;
                }
            }
        }
    }
}

/// The background fsyncs, on their own thread so that a slow fsync (tens to hundreds of
/// milliseconds under writeback) delays no write and so no reply: once a second under everysec,
/// and under everysec and no when the writer says the current segment is nearly full.
pub(crate) fn run_syncer(shared: Arc<Shared>, every_second: bool) {
    const PERIOD: std::time::Duration = std::time::Duration::from_secs(1);
    let mut next = Instant::now() + PERIOD;
    loop {
        let mut control = shared.syncer.lock();
        loop {
            if control.stop {
                return;
            }
            if control.early_sync || (every_second && Instant::now() >= next) {
                break;
            }
            if every_second {
                shared.syncer_wake.wait_until(&mut control, next);
            } else {
                shared.syncer_wake.wait(&mut control);
            }
        }
        control.early_sync = false;
        drop(control);
        if Instant::now() >= next {
            next = Instant::now() + PERIOD;
        }
        sync_current_segment(&shared);
    }
}

fn sync_current_segment(shared: &Shared) {
    // Captured together: every record up to written_lsn is in this file or in an older,
    // already fsynced segment.
    let (file, path, first_lsn, len, written_lsn) = {
        let files = shared.files.lock();
        (
            Arc::clone(&files.current),
            files.current_path.clone(),
            files.current_first_lsn,
            files.current_len,
            files.written_lsn,
        )
    };
    if written_lsn <= shared.synced_lsn.load(Ordering::Acquire) {
        return;
    }
    let started = Instant::now();
    let synced = match shared.injected() {
        Some(error) => Err(error),
        None => file.sync_data(),
    };
    match synced {
        Ok(()) => {
            shared.note_fsync(started.elapsed());
            shared.synced_lsn.fetch_max(written_lsn, Ordering::AcqRel);
            let mut files = shared.files.lock();
            if files.current_first_lsn == first_lsn {
                files.current_synced_len = files.current_synced_len.max(len);
            }
            drop(files);
            shared.clear_failure(FailureKind::Sync);
        }
        Err(error) => {
            let failure =
                WriteFailure { operation: "fsync", file: path, error: Arc::new(error), since: SystemTime::now() };
            shared.set_failure(FailureKind::Sync, failure);
        }
    }
}
