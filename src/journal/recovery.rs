//! Reading the journal back at open: validate everything first (so that a refusal comes before the
//! caller has applied anything), cut a torn tail, then hand the caller a streaming reader over what
//! was validated.
//!
//! Torn tail or damage? The last segment is the only one a crash can leave half-written (each open
//! starts a new segment and a segment is fsynced before the next one is created), so a bad record
//! there with nothing valid after it is a torn tail. A bad record followed by valid records, or in
//! an earlier segment, is damage to records that were acknowledged: refuse, unless repairing.
//! One exception: after an OS crash (boot id changed, no clean shutdown) the page cache may have
//! reached the disk out of order, so valid-looking records after a hole in the last segment are
//! unsynced leftovers, not acknowledged data lost to damage; that is a torn tail too.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::Lsn;
use super::dir::{JournalDir, SegmentFile};
use super::error::{Corruption, LogError};
use super::frame::{self, NextRecord, RecordReader, SNAPSHOT_FOOTER_BYTES, SNAPSHOT_HEADER_BYTES, SegmentHeader};

const READ_BUFFER_BYTES: usize = 256 << 10;

/// A torn tail that recovery cut off the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TruncatedTail {
    pub(crate) file: PathBuf,
    pub(crate) offset: u64,
    pub(crate) bytes_dropped: u64,
}

/// One recovered item, in replay order: every snapshot payload, then the log records from the
/// snapshot's `replay_from` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecoveredRecord<'a> {
    Snapshot(&'a [u8]),
    Logged { lsn: Lsn, payload: &'a [u8] },
}

/// What `Log::open` found. The contents are read (again, from the files opened during validation)
/// by [`Recovery::for_each`], one record in memory at a time.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// The previous process ended with `Log::close`.
    pub(crate) clean_shutdown: bool,
    /// The boot id recorded by the previous process differs from this one: the OS restarted, so
    /// writes that were not fsynced may be lost.
    pub(crate) boot_id_changed: bool,
    pub(crate) truncated_tail: Option<TruncatedTail>,
    /// With `repair`, where mid-journal damage was cut and what was lost.
    pub(crate) repaired: Option<Corruption>,
    pub(crate) snapshot_records: u64,
    /// Log records from this LSN on are replayed after the snapshot (1 without a snapshot).
    pub(crate) replay_from: Lsn,
    /// The last LSN recovered (0 for an empty journal).
    pub(crate) last_lsn: Lsn,
    sources: Vec<Source>,
}

#[derive(Debug)]
struct Source {
    kind: SourceKind,
    path: PathBuf,
    file: File,
    start: u64,
    end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Snapshot,
    /// Of this format version.
    Segment(u16),
}

impl Recovery {
    /// Calls `f` for every recovered payload in order. Stops at the first error `f` returns.
    pub(crate) fn for_each<E: From<LogError>>(
        self,
        mut f: impl FnMut(RecoveredRecord<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let replay_from = self.replay_from;
        for source in self.sources {
            let read_error = |e| LogError::io(format!("reading {}", source.path.display()), e);
            let mut file = source.file;
            file.seek(SeekFrom::Start(source.start)).map_err(read_error)?;
            let input = BufReader::with_capacity(READ_BUFFER_BYTES, file);
            let mut reader = RecordReader::new(input, source.start, source.end);
            loop {
                let offset = reader.offset();
                // Validated at open and held open since: only outside interference makes it bad.
                let changed = |bad| io::Error::other(format!("{bad} at byte {offset}, changed since it was checked"));
                match (reader.next_record().map_err(read_error)?, source.kind) {
                    (NextRecord::Record { payload, .. }, SourceKind::Snapshot) => {
                        f(RecoveredRecord::Snapshot(payload))?;
                    }
                    (NextRecord::Record { lsn: first_lsn, payload }, SourceKind::Segment(version)) => {
                        for (lsn, entry) in (first_lsn..).zip(frame::entries(version, payload)) {
                            let entry = entry.map_err(|bad| read_error(changed(bad)))?;
                            if lsn >= replay_from {
                                f(RecoveredRecord::Logged { lsn, payload: entry })?;
                            }
                        }
                    }
                    (NextRecord::End, _) => break,
                    (NextRecord::Bad(bad), _) => return Err(read_error(changed(bad)).into()),
                }
            }
        }
        Ok(())
    }
}

/// The outcome of validation, for `Log::open`.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) recovery: Recovery,
    pub(crate) next_lsn: Lsn,
    /// The last segment, if it holds no record: the new process rewrites it rather than creating a
    /// second file with the same first LSN.
    pub(crate) empty_last_segment: Option<PathBuf>,
    /// (first LSN, bytes) of each segment kept.
    pub(crate) segment_sizes: Vec<(Lsn, u64)>,
    pub(crate) snapshot_bytes: u64,
}

pub(crate) fn recover(dir: &JournalDir, boot_id: &str, repair: bool) -> Result<Recovered, LogError> {
    let mut dir_changed = remove_leftovers(dir)?;
    let clean_mark = read_clean_mark(dir)?;

    let snapshot = read_snapshot(dir)?;
    let replay_from = snapshot.as_ref().map_or(1, |s| s.replay_from);
    let mut segments = dir.segments()?;
    // Segments whose records all precede replay_from are already in the snapshot: a crash after
    // the snapshot's rename left them behind.
    let first_needed = segments.windows(2).take_while(|pair| pair[1].first_lsn <= replay_from).count();
    let obsolete: Vec<SegmentFile> = segments.drain(..first_needed).collect();

    let mut scan = SegmentScan {
        boot_id,
        repair,
        clean_mark,
        previous_boot_id: None,
        expected_first: if snapshot.is_some() { None } else { Some(1) },
        replay_from,
        last_lsn: replay_from.saturating_sub(1),
        truncated_tail: None,
        repaired: None,
        sources: Vec::new(),
        segment_sizes: Vec::new(),
        empty_last_segment: None,
        doomed: Vec::new(),
    };
    let sizes = segments.iter().map(|s| file_len(&s.path)).collect::<Result<Vec<u64>, _>>()?;
    let total = segments.len();
    for (index, segment) in segments.iter().enumerate() {
        let later_bytes = sizes[index + 1..].iter().sum();
        let is_last = index + 1 == total;
        if scan.segment(segment, is_last, later_bytes)? == Scanned::CutHere {
            scan.doomed.extend(segments[index + 1..].iter().map(|s| s.path.clone()));
            break;
        }
    }

    for segment in obsolete.iter().map(|s| &s.path).chain(&scan.doomed) {
        dir.remove_if_present(segment).map_err(|e| LogError::io(format!("removing {}", segment.display()), e))?;
        dir_changed = true;
    }
    if clean_mark.is_some() {
        // Consumed: from now on a crash must not look like a clean shutdown.
        let path = dir.clean_mark_path();
        dir.remove_if_present(&path).map_err(|e| LogError::io(format!("removing {}", path.display()), e))?;
        dir_changed = true;
    }
    if dir_changed || scan.truncated_tail.is_some() || scan.repaired.is_some() {
        dir.sync().map_err(|e| LogError::io(format!("syncing {}", dir.path().display()), e))?;
    }

    // The snapshot covers everything before replay_from even if the log lost some of it (a crash
    // between a snapshot and the log's fsync): LSNs below it must never be handed out again.
    let last_lsn = scan.last_lsn.max(replay_from - 1);
    let clean_shutdown = clean_mark == Some(last_lsn) && scan.truncated_tail.is_none() && scan.repaired.is_none();
    let boot_id_changed = scan.previous_boot_id.as_deref().is_some_and(|previous| !frame::same_boot(previous, boot_id));
    let (snapshot_records, snapshot_bytes) = snapshot.as_ref().map_or((0, 0), |s| (s.records, s.bytes));
    let mut sources = Vec::with_capacity(scan.sources.len() + 1);
    sources.extend(snapshot.map(|s| s.source));
    sources.append(&mut scan.sources);
    Ok(Recovered {
        recovery: Recovery {
            clean_shutdown,
            boot_id_changed,
            truncated_tail: scan.truncated_tail,
            repaired: scan.repaired,
            snapshot_records,
            replay_from,
            last_lsn,
            sources,
        },
        next_lsn: last_lsn + 1,
        empty_last_segment: scan.empty_last_segment,
        segment_sizes: scan.segment_sizes,
        snapshot_bytes,
    })
}

fn remove_leftovers(dir: &JournalDir) -> Result<bool, LogError> {
    let mut removed = false;
    for path in [dir.snapshot_temp_path(), dir.clean_mark_path().with_extension("tmp")] {
        removed |= dir.remove_if_present(&path).map_err(|e| LogError::io(format!("removing {}", path.display()), e))?;
    }
    Ok(removed)
}

fn read_clean_mark(dir: &JournalDir) -> Result<Option<Lsn>, LogError> {
    let path = dir.clean_mark_path();
    match fs::read(&path) {
        Ok(bytes) => Ok(frame::decode_clean_mark(&bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(format!("reading {}", path.display()), e)),
    }
}

fn file_len(path: &std::path::Path) -> Result<u64, LogError> {
    fs::metadata(path).map(|m| m.len()).map_err(|e| LogError::io(format!("reading {}", path.display()), e))
}

struct SnapshotFound {
    source: Source,
    records: u64,
    replay_from: Lsn,
    bytes: u64,
}

fn read_snapshot(dir: &JournalDir) -> Result<Option<SnapshotFound>, LogError> {
    let path = dir.snapshot_path();
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(format!("opening {}", path.display()), e)),
    };
    let read_error = |e| LogError::io(format!("reading {}", path.display()), e);
    let corrupt = |offset: u64, reason: String| LogError::CorruptSnapshot { file: path.clone(), offset, reason };
    let len = file.metadata().map_err(read_error)?.len();
    if len < SNAPSHOT_HEADER_BYTES + SNAPSHOT_FOOTER_BYTES {
        return Err(corrupt(0, format!("only {len} bytes")));
    }
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES as usize];
    file.read_exact(&mut header).map_err(read_error)?;
    frame::check_snapshot_header(&header).map_err(|bad| corrupt(0, bad.to_string()))?;
    let footer_at = len - SNAPSHOT_FOOTER_BYTES;
    let mut footer = [0u8; SNAPSHOT_FOOTER_BYTES as usize];
    file.seek(SeekFrom::Start(footer_at)).map_err(read_error)?;
    file.read_exact(&mut footer).map_err(read_error)?;
    let footer = frame::decode_snapshot_footer(&footer)
        .ok_or_else(|| corrupt(footer_at, "bad footer (the snapshot is incomplete or damaged)".into()))?;
    if footer.replay_from == 0 {
        return Err(corrupt(footer_at, "replay_from is 0".into()));
    }

    file.seek(SeekFrom::Start(SNAPSHOT_HEADER_BYTES)).map_err(read_error)?;
    let mut reader =
        RecordReader::new(BufReader::with_capacity(READ_BUFFER_BYTES, &file), SNAPSHOT_HEADER_BYTES, footer_at);
    let mut records = 0;
    loop {
        let offset = reader.offset();
        match reader.next_record().map_err(read_error)? {
            NextRecord::Record { lsn, .. } if lsn == records + 1 => records += 1,
            NextRecord::Record { lsn, .. } => {
                return Err(corrupt(offset, format!("record number {lsn} where {} was expected", records + 1)));
            }
            NextRecord::End => break,
            NextRecord::Bad(bad) => return Err(corrupt(offset, bad.to_string())),
        }
    }
    if records != footer.records {
        return Err(corrupt(footer_at, format!("{records} records, the footer says {}", footer.records)));
    }
    let source = Source { kind: SourceKind::Snapshot, path, file, start: SNAPSHOT_HEADER_BYTES, end: footer_at };
    Ok(Some(SnapshotFound { source, records, replay_from: footer.replay_from, bytes: len }))
}

#[derive(Debug, PartialEq, Eq)]
enum Scanned {
    Whole,
    /// Repair cut the journal in this segment: later segments go.
    CutHere,
}

struct SegmentScan<'a> {
    boot_id: &'a str,
    repair: bool,
    clean_mark: Option<Lsn>,
    previous_boot_id: Option<String>,
    /// The first LSN the next segment must start with; None for the first segment after a
    /// snapshot, which may start anywhere up to replay_from.
    expected_first: Option<Lsn>,
    replay_from: Lsn,
    last_lsn: Lsn,
    truncated_tail: Option<TruncatedTail>,
    repaired: Option<Corruption>,
    sources: Vec<Source>,
    segment_sizes: Vec<(Lsn, u64)>,
    empty_last_segment: Option<PathBuf>,
    doomed: Vec<PathBuf>,
}

impl SegmentScan<'_> {
    fn segment(&mut self, segment: &SegmentFile, is_last: bool, later_bytes: u64) -> Result<Scanned, LogError> {
        let path = &segment.path;
        let read_error = |e| LogError::io(format!("reading {}", path.display()), e);
        let file = File::open(path).map_err(read_error)?;
        let len = file.metadata().map_err(read_error)?.len();
        let mut input = BufReader::with_capacity(READ_BUFFER_BYTES, &file);

        let header = match frame::read_segment_header(&mut input).map_err(read_error)? {
            Ok((header, header_len)) if header.first_lsn == segment.first_lsn => Ok((header, header_len)),
            Ok((header, _)) => Err(format!("its header says it starts at LSN {}", header.first_lsn)),
            Err(bad) => Err(bad.to_string()),
        };
        if header.is_err() && is_last && !holds_valid_record_from(&file, 0, self.last_lsn + 1).map_err(read_error)? {
            // Created by a process that died before its header reached the disk: it never held a
            // record (open fsyncs the header before any append).
            self.cut_tail(path, 0, len)?;
            self.doomed.push(path.clone());
            return Ok(Scanned::Whole);
        }
        let (SegmentHeader { first_lsn, boot_id, version }, header_len) = match header {
            Ok(header) => header,
            Err(reason) => {
                let first_lost_lsn = self.last_lsn + 1;
                self.damaged(path, 0, reason, first_lost_lsn, len + later_bytes)?;
                return Ok(Scanned::CutHere);
            }
        };
        let continues = match self.expected_first {
            Some(expected) => first_lsn == expected,
            None => first_lsn <= self.replay_from,
        };
        if !continues {
            let reason = format!("LSNs {} to {} are missing before it", self.last_lsn + 1, first_lsn.saturating_sub(1));
            self.damaged(path, 0, reason, self.last_lsn + 1, len + later_bytes)?;
            return Ok(Scanned::CutHere);
        }
        let unsynced_tail_possible = self.clean_mark.is_none() && !frame::same_boot(&boot_id, self.boot_id);
        self.previous_boot_id = Some(boot_id);

        let mut reader = RecordReader::new(input, header_len, len);
        let mut next_lsn = first_lsn;
        let end = loop {
            let offset = reader.offset();
            let bad = match reader.next_record().map_err(read_error)? {
                NextRecord::Record { lsn, payload } if lsn == next_lsn => {
                    match frame::count_entries(version, payload) {
                        Ok(entries) => {
                            next_lsn += entries;
                            continue;
                        }
                        Err(bad) => bad,
                    }
                }
                NextRecord::Record { lsn, .. } => frame::BadRecord::UnexpectedLsn { expected: next_lsn, found: lsn },
                NextRecord::End => break len,
                NextRecord::Bad(bad) => bad,
            };
            let followed_by_records = is_last && !unsynced_tail_possible && {
                holds_valid_record_from(&file, offset + 1, next_lsn).map_err(read_error)?
            };
            if is_last && !followed_by_records {
                self.cut_tail(path, offset, len)?;
                break offset;
            }
            self.damaged(path, offset, bad.to_string(), next_lsn, len - offset + later_bytes)?;
            break offset;
        };
        self.last_lsn = next_lsn - 1;
        self.expected_first = Some(next_lsn);
        self.segment_sizes.push((first_lsn, end));
        if next_lsn == first_lsn && (is_last || self.repaired.is_some()) {
            self.empty_last_segment = Some(path.clone());
        }
        self.sources.push(Source {
            kind: SourceKind::Segment(version),
            path: path.clone(),
            file,
            start: header_len,
            end,
        });
        Ok(if self.repaired.is_some() { Scanned::CutHere } else { Scanned::Whole })
    }

    /// Refuses to open, or with `repair`, cuts the file at `offset` (the caller then drops later
    /// segments).
    fn damaged(
        &mut self,
        path: &std::path::Path,
        offset: u64,
        reason: String,
        first_lost_lsn: Lsn,
        bytes_lost: u64,
    ) -> Result<(), LogError> {
        let corruption = Corruption { file: path.to_path_buf(), offset, reason, first_lost_lsn, bytes_lost };
        if !self.repair {
            return Err(LogError::Corrupt(corruption));
        }
        tracing::warn!(
            file = %path.display(), offset, first_lost_lsn, bytes_lost,
            "journal repair: truncating at mid-journal damage ({}), losing every later record", corruption.reason
        );
        truncate(path, offset)?;
        if offset == 0 {
            self.doomed.push(path.to_path_buf());
        }
        self.repaired = Some(corruption);
        Ok(())
    }

    fn cut_tail(&mut self, path: &std::path::Path, offset: u64, len: u64) -> Result<(), LogError> {
        tracing::warn!(
            file = %path.display(), offset, bytes_dropped = len - offset,
            "journal: truncating a torn tail (a write the previous process did not finish)"
        );
        truncate(path, offset)?;
        self.truncated_tail = Some(TruncatedTail { file: path.to_path_buf(), offset, bytes_dropped: len - offset });
        Ok(())
    }
}

/// Whether a valid record with an LSN of at least `min_lsn` starts anywhere from `offset` on.
/// Only runs on damage, so reading the rest of one segment into memory is fine.
fn holds_valid_record_from(mut file: &File, offset: u64, min_lsn: Lsn) -> io::Result<bool> {
    let mut rest = Vec::new();
    file.seek(SeekFrom::Start(offset))?;
    file.read_to_end(&mut rest)?;
    Ok(frame::find_valid_record(&rest, min_lsn).is_some())
}

fn truncate(path: &std::path::Path, offset: u64) -> Result<(), LogError> {
    let error = |e| LogError::io(format!("truncating {} at byte {offset}", path.display()), e);
    let file = fs::OpenOptions::new().write(true).open(path).map_err(error)?;
    file.set_len(offset).map_err(error)?;
    file.sync_all().map_err(error)
}
