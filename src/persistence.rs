//! The journal in the running server: opened from the flags, replayed while clients are told
//! `-LOADING`, fed every change of the core, waited on before replies go out, rewritten as a
//! snapshot when it has grown, closed cleanly at shutdown, and reported in INFO.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::context::Shared;
use crate::core::{ChangeSink, Clock};
use crate::journal::{FSYNC_BUCKETS_US, Gather, Journal, JournalOptions, LogStatus, Lsn, Recovery, Restored};
use crate::metrics::JournalFigures;

pub(crate) struct Persistence {
    journal: Arc<Journal>,
    loading: AtomicBool,
    restored: Mutex<Option<Restored>>,
    rewrite: Mutex<RewriteState>,
    /// BGREWRITEAOF asks the rewriting task for a rewrite now.
    rewrite_requested: Notify,
}

#[derive(Debug, Default)]
struct RewriteState {
    in_progress: bool,
    /// Asked for by BGREWRITEAOF and not started yet.
    requested: bool,
    last_ok: Option<bool>,
    last_took: Option<Duration>,
    /// Rewrites completed: counted here, with `in_progress` cleared under the same lock, so that
    /// INFO never shows a new snapshot while the rewrite still shows as running.
    completed: u64,
}

impl Persistence {
    /// Opens the journal of `--dir` (None with `--appendonly no`); the server then replays it with
    /// [`load`] while it already answers clients.
    pub(crate) fn open(config: &Config, clock: &Clock) -> io::Result<Option<(Persistence, Recovery)>> {
        if !config.appendonly.enabled() {
            return Ok(None);
        }
        let options = JournalOptions {
            dir: config.dir.clone(),
            fsync: config.appendfsync,
            repair: config.journal_repair,
            boot_id: config.boot_id.clone().unwrap_or_else(boot_id),
            segment_bytes: config.journal_segment_size.max(1),
            rewrite_min_bytes: config.auto_aof_rewrite_min_size,
            rewrite_percentage: config.auto_aof_rewrite_percentage,
            max_lease_ms: config.max_lease_ms,
            wall_offset_ms: config.wall_clock_offset_ms,
        };
        let (journal, recovery) = Journal::open(options, clock)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
        if let Some(tail) = &recovery.truncated_tail {
            warn!(
                file = %tail.file.display(),
                offset = tail.offset,
                bytes_dropped = tail.bytes_dropped,
                "journal: cut a torn tail (a write the crash interrupted)"
            );
        }
        if let Some(cut) = &recovery.repaired {
            warn!(
                file = %cut.file.display(),
                offset = cut.offset,
                first_lost_lsn = cut.first_lost_lsn,
                bytes_lost = cut.bytes_lost,
                reason = %cut.reason,
                "journal: --journal-repair cut damaged records and everything after them"
            );
        }
        let persistence = Persistence {
            journal: Arc::new(journal),
            loading: AtomicBool::new(true),
            restored: Mutex::new(None),
            rewrite: Mutex::new(RewriteState::default()),
            rewrite_requested: Notify::new(),
        };
        Ok(Some((persistence, recovery)))
    }

    /// True until the journal has been replayed: clients get `-LOADING` meanwhile.
    pub(crate) fn loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }

    /// Why state changes are refused now (`-MISCONF`): the journal cannot be written.
    #[inline]
    pub(crate) fn write_failure(&self) -> Option<String> {
        self.journal
            .log()
            .write_failing()
            .map(|failure| format!("{} {}: {}", failure.operation, failure.file.display(), failure.error))
    }

    /// The journal position a reply sent now depends on: every change made so far.
    pub(crate) fn position(&self) -> Lsn {
        self.journal.log().last_lsn()
    }

    pub(crate) fn is_released(&self, position: Lsn) -> bool {
        self.journal.log().is_released(position)
    }

    /// What each event loop runs for the journal, if anything (see `Log::release_relay`).
    pub(crate) fn release_relay(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.journal.log().release_relay()
    }

    /// Waits until the changes up to `position` are written (or synced, with `always`). While
    /// the disk refuses them this keeps waiting: the change was made and its reply must not go
    /// out before it is durable; the journal keeps retrying.
    pub(crate) async fn released(&self, position: Lsn, gather: Gather) {
        while self.journal.log().released(position, gather).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// BGREWRITEAOF: starts a rewrite unless one is under way (false then).
    pub(crate) fn request_rewrite(&self) -> bool {
        let mut rewrite = self.rewrite.lock();
        if rewrite.in_progress || rewrite.requested {
            return false;
        }
        rewrite.requested = true;
        self.rewrite_requested.notify_one();
        true
    }

    /// Writes everything and marks the shutdown clean, once no connection can change anything.
    pub(crate) fn close(&self) {
        match self.journal.close() {
            Ok(()) => info!("journal closed cleanly"),
            Err(error) => error!(%error, "journal not closed cleanly: the next start recovers as after a crash"),
        }
    }

    /// For the Prometheus page.
    pub(crate) fn figures(&self) -> JournalFigures {
        let status = self.journal.log().status();
        let mut fsyncs_so_far = 0;
        let fsync_buckets = FSYNC_BUCKETS_US
            .iter()
            .zip(status.fsync_buckets)
            .map(|(bound_us, count)| {
                fsyncs_so_far += count;
                (*bound_us as f64 / 1e6, fsyncs_so_far)
            })
            .collect();
        JournalFigures {
            records_written: status.records_written,
            bytes_written: status.bytes_written,
            rewrites: self.rewrite.lock().completed,
            fsyncs: status.fsyncs,
            fsync_seconds: status.fsync_total.as_secs_f64(),
            fsync_buckets,
        }
    }

    /// `grants_paused_ms`: how long grants stay paused after an OS crash (the core knows).
    pub(crate) fn info_fields(&self, grants_paused_ms: u64) -> Vec<(&'static str, String)> {
        let status: LogStatus = self.journal.log().status();
        let rewrite = self.rewrite.lock();
        let restored = self.restored.lock().clone().unwrap_or_default();
        let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
        let ok = |ok: Option<bool>| match ok {
            Some(false) => "err",
            _ => "ok",
        };
        vec![
            ("loading", flag(self.loading())),
            ("aof_enabled", "1".to_owned()),
            ("aof_fsync", status.policy.as_str().to_owned()),
            ("aof_rewrite_in_progress", flag(rewrite.in_progress)),
            ("aof_rewrite_scheduled", flag(rewrite.requested)),
            ("aof_last_rewrite_time_sec", rewrite.last_took.map_or("-1".to_owned(), |took| took.as_secs().to_string())),
            ("aof_last_bgrewrite_status", ok(rewrite.last_ok).to_owned()),
            ("aof_last_write_status", ok(Some(status.write_failure.is_none())).to_owned()),
            ("aof_current_size", status.disk_bytes.to_string()),
            ("aof_base_size", status.snapshot_bytes.to_string()),
            ("aof_buffer_length", status.unwritten_bytes.to_string()),
            ("journal_dir", self.journal.options().dir.display().to_string()),
            ("journal_segments", status.segments.to_string()),
            ("journal_last_lsn", status.last_lsn.to_string()),
            ("journal_written_lsn", status.written_lsn.to_string()),
            ("journal_synced_lsn", status.synced_lsn.to_string()),
            ("journal_released_lsn", status.released_lsn.to_string()),
            ("journal_current_segment", status.current_segment.display().to_string()),
            ("journal_current_segment_synced_bytes", status.current_segment_synced_bytes.to_string()),
            ("journal_records_written", status.records_written.to_string()),
            ("journal_bytes_written", status.bytes_written.to_string()),
            ("journal_fsyncs", status.fsyncs.to_string()),
            ("journal_fsync_avg_usec", (status.fsync_total.as_micros() / u128::from(status.fsyncs.max(1))).to_string()),
            ("journal_fsync_max_usec", status.fsync_max.as_micros().to_string()),
            ("journal_last_fsync_unix", status.last_fsync_unix_secs.unwrap_or(0).to_string()),
            ("journal_snapshots_written", rewrite.completed.to_string()),
            ("journal_write_error", status.write_failure.map(|f| f.error.to_string()).unwrap_or_default()),
            ("loading_loaded_records", restored.records.to_string()),
            ("loading_loaded_keys", restored.keys.to_string()),
            ("loading_took_usec", restored.took.as_micros().to_string()),
            ("loading_clean_shutdown", flag(restored.clean_shutdown)),
            ("loading_unclean_reboot", flag(restored.unclean_reboot)),
            ("grants_paused_ms", grants_paused_ms.to_string()),
        ]
    }
}

/// Replays the journal into the core (on a blocking thread: a million locks take a while), then
/// starts journaling its changes and lets clients in. An unreadable journal stops the server.
pub(crate) async fn load(shared: Arc<Shared>, recovery: Recovery) -> io::Result<()> {
    let Some(persistence) = &shared.persistence else {
        return Ok(());
    };
    let (snapshot_records, last_lsn) = (recovery.snapshot_records, recovery.last_lsn);
    let replaying = Arc::clone(&shared);
    let restored = tokio::task::spawn_blocking(move || {
        let Some(persistence) = &replaying.persistence else {
            return Ok(Restored::default());
        };
        persistence.journal.restore(recovery, &replaying.core, &replaying.clock)
    })
    .await
    .map_err(io::Error::other)?
    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))?;
    shared.core.attach_sink(Arc::clone(&persistence.journal) as Arc<dyn ChangeSink>);
    info!(
        records = restored.records,
        snapshot_records,
        last_lsn,
        changes = restored.changes,
        keys = restored.keys,
        took_ms = restored.took.as_millis() as u64,
        grants_paused_ms = restored.grants_paused_ms,
        clean_shutdown = restored.clean_shutdown,
        unclean_reboot = restored.unclean_reboot,
        dir = %persistence.journal.options().dir.display(),
        "journal loaded"
    );
    if restored.grants_paused_ms > 0 {
        warn!(
            grants_paused_ms = restored.grants_paused_ms,
            "the machine restarted without the journal being closed: writes not yet synced may be lost, so no lock is granted until every lease they may have promised has run out (holders can still renew, extend and unlock)"
        );
    }
    *persistence.restored.lock() = Some(restored);
    persistence.loading.store(false, Ordering::Release);
    Ok(())
}

/// Rewrites the journal as a snapshot whenever it has grown past the `auto-aof-rewrite-*`
/// thresholds or BGREWRITEAOF asks, on a blocking thread, until shutdown.
pub(crate) async fn rewrite_when_grown(shared: Arc<Shared>) {
    let Some(persistence) = &shared.persistence else {
        return;
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = persistence.rewrite_requested.notified() => {}
            () = shared.shutdown.cancelled() => return,
        }
        let requested = persistence.rewrite.lock().requested;
        if persistence.loading()
            || !(requested || persistence.journal.wants_rewrite(&persistence.journal.log().status()))
        {
            continue;
        }
        {
            let mut rewrite = persistence.rewrite.lock();
            rewrite.in_progress = true;
            rewrite.requested = false;
        }
        let started = Instant::now();
        let rewriting = Arc::clone(&shared);
        let result = tokio::task::spawn_blocking(move || match &rewriting.persistence {
            Some(persistence) => {
                persistence.journal.rewrite(&rewriting.core, &rewriting.clock).map_err(|e| e.to_string())
            }
            None => Ok(0),
        })
        .await
        .unwrap_or_else(|error| Err(error.to_string()));
        let took = started.elapsed();
        match &result {
            Ok(bytes) => info!(bytes, took_ms = took.as_millis() as u64, "journal rewritten as a snapshot"),
            Err(error) => warn!(%error, "journal rewrite failed; the journal keeps growing until one succeeds"),
        }
        let mut rewrite = persistence.rewrite.lock();
        rewrite.in_progress = false;
        rewrite.completed += u64::from(result.is_ok());
        rewrite.last_ok = Some(result.is_ok());
        rewrite.last_took = Some(took);
    }
}

/// This boot of the machine, to tell a process crash (nothing lost) from an OS crash.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|id| id.trim().to_owned()).unwrap_or_default()
}
