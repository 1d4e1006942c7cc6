//! Writing a snapshot: the caller streams the live state as payloads into a temp file; finishing
//! makes it durable, renames it into place and deletes the segments it makes redundant. A crash
//! at any point leaves either the old snapshot and segments or the new ones, never a mix that
//! loses records: segments go only after the rename is durable.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Lsn;
use super::dir::JournalDir;
use super::error::LogError;
use super::frame;
use super::state::Shared;

const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// A snapshot being written; dropping it unfinished removes the temp file.
#[derive(Debug)]
pub(crate) struct SnapshotWriter {
    shared: Arc<Shared>,
    dir: Arc<JournalDir>,
    temp_path: PathBuf,
    output: Option<BufWriter<File>>,
    records: u64,
    frame: Vec<u8>,
}

impl SnapshotWriter {
    /// Called by `Log::snapshot`, which has claimed `shared.snapshot_running`.
    pub(crate) fn start(shared: Arc<Shared>, dir: Arc<JournalDir>) -> Result<SnapshotWriter, LogError> {
        let temp_path = dir.snapshot_temp_path();
        let mut writer = SnapshotWriter { shared, dir, temp_path, output: None, records: 0, frame: Vec::new() };
        let file = File::create(&writer.temp_path).map_err(|e| writer.error("creating", e))?;
        let mut output = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        output.write_all(&frame::snapshot_header()).map_err(|e| writer.error("writing", e))?;
        writer.output = Some(output);
        Ok(writer)
    }

    pub(crate) fn push(&mut self, payload: &[u8]) -> Result<(), LogError> {
        self.frame.clear();
        frame::encode_record(&mut self.frame, self.records + 1, payload);
        let written = match self.output.as_mut() {
            Some(output) => output.write_all(&self.frame),
            None => Err(std::io::Error::other("a previous write failed")),
        };
        written.map_err(|e| self.error("writing", e))?;
        self.records += 1;
        Ok(())
    }

    /// Completes the snapshot: recovery will yield its payloads, then every log record with
    /// `lsn >= replay_from`. The log is fsynced up to `replay_from - 1` first, so the snapshot
    /// never gets ahead of the log it replaces.
    pub(crate) fn finish(mut self, replay_from: Lsn) -> Result<(), LogError> {
        let next_lsn = self.shared.pending.lock().next_lsn;
        if replay_from == 0 || replay_from > next_lsn {
            return Err(LogError::ReplayFromAhead { replay_from, next_lsn });
        }
        let footer = frame::encode_snapshot_footer(frame::SnapshotFooter { records: self.records, replay_from });
        let output = self
            .output
            .take()
            .ok_or_else(|| self.error("writing", std::io::Error::other("a previous write failed")))?;
        let file = finish_file(output, &footer).map_err(|e| self.error("writing", e))?;
        let snapshot_bytes = file.metadata().map_err(|e| self.error("reading", e))?.len();
        drop(file);

        self.shared.wait_synced(replay_from - 1)?;
        let path = self.dir.snapshot_path();
        std::fs::rename(&self.temp_path, &path).map_err(|e| self.error("renaming", e))?;
        self.dir.sync().map_err(|e| LogError::io(format!("syncing {}", self.dir.path().display()), e))?;
        self.shared.files.lock().snapshot_bytes = snapshot_bytes;
        self.remove_replaced_segments(replay_from)
    }

    /// Deletes segments whose records all precede `replay_from`: those followed by a segment
    /// starting at or before it. The current segment is never one of them (it has no follower).
    fn remove_replaced_segments(&self, replay_from: Lsn) -> Result<(), LogError> {
        let segments = self.dir.segments()?;
        let replaced = segments.windows(2).take_while(|pair| pair[1].first_lsn <= replay_from).count();
        if replaced == 0 {
            return Ok(());
        }
        for segment in &segments[..replaced] {
            self.dir
                .remove_if_present(&segment.path)
                .map_err(|e| LogError::io(format!("removing {}", segment.path.display()), e))?;
        }
        let keep_from = segments[replaced].first_lsn;
        self.shared.files.lock().older_segments.retain(|(first_lsn, _)| *first_lsn >= keep_from);
        self.dir.sync().map_err(|e| LogError::io(format!("syncing {}", self.dir.path().display()), e))
    }

    fn error(&self, action: &str, error: std::io::Error) -> LogError {
        LogError::io(format!("{action} snapshot {}", self.temp_path.display()), error)
    }
}

fn finish_file(mut output: BufWriter<File>, footer: &[u8]) -> std::io::Result<File> {
    output.write_all(footer)?;
    let file = output.into_inner().map_err(std::io::IntoInnerError::into_error)?;
    file.sync_all()?;
    Ok(file)
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // After a successful finish the temp path no longer exists; otherwise it is garbage.
        drop(self.output.take());
        if let Err(error) = self.dir.remove_if_present(&self.temp_path) {
            tracing::warn!("journal: removing {}: {error}", self.temp_path.display());
        }
        self.shared.snapshot_running.store(false, Ordering::Release);
    }
}
