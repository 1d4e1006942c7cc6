//! The bytes on disk: records, segment headers, the snapshot footer and the clean-shutdown mark.
//! Every integer is little-endian and every structure carries a CRC-32C, so a reader can tell a
//! torn or flipped byte from data and never trusts a length it has not bounded.
//!
//! A record is `[len u32][crc u32][lsn u64][payload]`. The CRC covers `len`, `lsn` and the
//! payload: a flipped length must not make the reader skip or swallow a neighbour unnoticed.
//!
//! In a segment (format 2) a record's payload is a run of *entries*, `[len LEB128][bytes]`, one
//! per LSN: the record's LSN is its first entry's and each next entry takes the next LSN. A
//! record is what one write of the journal's buffer carried (up to [`RECORD_TARGET_BYTES`]), so
//! the header and the CRC are paid once per write, not once per change: the CRC of a record of
//! one small entry cost as much as encoding the entry. Format 1 held one entry per record,
//! without its length; it is still read. Snapshots and the cluster's files keep one payload per
//! record.

use std::io::{self, Read};

use super::Lsn;
use crate::core::{Input, put_u64};

pub(crate) const RECORD_HEADER_BYTES: usize = 16;

/// The largest payload a reader accepts. Lock records are bounded below this by the server's
/// key and result limits and the weight of one key's queue (`record::MAX_QUEUE_BYTES`), snapshot
/// payloads by their cutting; the bound keeps a corrupt length from making recovery allocate
/// gigabytes.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 64 << 20;

/// The segment format written (see the module's documentation) and the oldest still read.
pub(crate) const SEGMENT_VERSION: u16 = 2;
const OLDEST_SEGMENT_VERSION: u16 = 1;
const SNAPSHOT_VERSION: u16 = 1;

/// A segment record gets no more entries once it holds this many bytes, unless it holds none
/// yet: recovery reads a record whole, and a burst (a mass release while a write is slow) must
/// not make one of many megabytes.
pub(crate) const RECORD_TARGET_BYTES: usize = 1 << 20;
const SEGMENT_MAGIC: [u8; 8] = *b"BATONJNL";
const SNAPSHOT_MAGIC: [u8; 8] = *b"BATONSNP";
const SNAPSHOT_FOOTER_MAGIC: [u8; 8] = *b"SNAPDONE";
const CLEAN_MARK_MAGIC: [u8; 8] = *b"BATONCLN";

/// Boot ids are 36-character UUIDs; anything longer is cut so the header length fits a byte.
const MAX_BOOT_ID_BYTES: usize = 255;

fn record_crc(len: [u8; 4], lsn: [u8; 8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len);
    let crc = crc32c::crc32c_append(crc, &lsn);
    crc32c::crc32c_append(crc, payload)
}

/// Appends one framed record to `out`. Payloads longer than [`MAX_PAYLOAD_BYTES`] are a caller
/// bug: they would be written but refused as corrupt by the next recovery.
pub(crate) fn encode_record(out: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    encode_record_of_parts(out, lsn, &[payload]);
}

/// [`encode_record`] of a payload given in pieces (a record type, then a batch encoded apart).
pub(crate) fn encode_record_of_parts(out: &mut Vec<u8>, lsn: Lsn, payload: &[&[u8]]) {
    let payload_len: usize = payload.iter().map(|part| part.len()).sum();
    debug_assert!(payload_len <= MAX_PAYLOAD_BYTES, "journal payload of {payload_len} bytes");
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes();
    out.reserve(RECORD_HEADER_BYTES + payload_len);
    let start = out.len();
    out.extend_from_slice(&len);
    // The CRC's place holds the length once more while the sum is taken: `len`, `lsn` and the
    // payload then lie in one piece, summed in one call to the same value as `record_crc`
    // (each call costs tens of cycles before its first byte, as much as a small record's bytes).
    out.extend_from_slice(&len);
    out.extend_from_slice(&lsn.to_le_bytes());
    for part in payload {
        out.extend_from_slice(part);
    }
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Starts a segment record at the end of `out` whose first entry gets `first_lsn`; the entries
/// follow ([`push_entry`]) and [`seal_entries`] fills in the length and the CRC.
pub(crate) fn begin_entries(out: &mut Vec<u8>, first_lsn: Lsn) {
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&first_lsn.to_le_bytes());
}

/// Appends an entry, its bytes given in pieces, to the record begun last in `out`.
pub(crate) fn push_entry(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    put_u64(out, len as u64);
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// Fills in the length and the CRC of `record`, the bytes from [`begin_entries`] on.
pub(crate) fn seal_entries(record: &mut [u8]) {
    let payload_len = record.len() - RECORD_HEADER_BYTES;
    debug_assert!(payload_len <= MAX_PAYLOAD_BYTES, "journal record of {payload_len} bytes");
    let len = u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes();
    // As in `encode_record_of_parts`: the CRC's place holds the length while the sum is taken.
    record[..4].copy_from_slice(&len);
    record[4..8].copy_from_slice(&len);
    let crc = crc32c::crc32c(&record[4..]);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The entries of a segment record's payload, in LSN order, for a segment of `version`.
pub(crate) fn entries(version: u16, payload: &[u8]) -> Entries<'_> {
    Entries { input: Input { bytes: payload }, whole: version == OLDEST_SEGMENT_VERSION }
}

/// How many entries a segment record holds; an error if its payload is not a run of whole
/// entries (a CRC-valid record can only be so if a bug wrote it).
pub(crate) fn count_entries(version: u16, payload: &[u8]) -> Result<u64, BadRecord> {
    let mut count = 0;
    for entry in entries(version, payload) {
        entry?;
        count += 1;
    }
    if count == 0 {
        return Err(BadRecord::BadEntries);
    }
    Ok(count)
}

pub(crate) struct Entries<'a> {
    input: Input<'a>,
    /// Format 1: the payload is one entry, without a length.
    whole: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<&'a [u8], BadRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.whole {
            self.whole = false;
            return Some(Ok(std::mem::take(&mut self.input.bytes)));
        }
        if self.input.bytes.is_empty() {
            return None;
        }
        let entry = self.input.u64().ok().and_then(|len| {
            let len = usize::try_from(len).ok().filter(|&len| len <= self.input.bytes.len())?;
            let (entry, rest) = self.input.bytes.split_at(len);
            self.input.bytes = rest;
            Some(entry)
        });
        if entry.is_none() {
            self.input.bytes = &[];
        }
        Some(entry.ok_or(BadRecord::BadEntries))
    }
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadRecord {
    /// The file ends inside the record header or payload.
    Truncated,
    /// The length field exceeds [`MAX_PAYLOAD_BYTES`].
    ImpossibleLength(u32),
    ChecksumMismatch,
    /// A segment record whose CRC holds but whose payload is not a run of whole entries.
    BadEntries,
    /// A valid record, but not the LSN that must come next.
    UnexpectedLsn {
        expected: Lsn,
        found: Lsn,
    },
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRecord::Truncated => write!(f, "the record is cut short"),
            BadRecord::ImpossibleLength(len) => write!(f, "impossible record length {len}"),
            BadRecord::ChecksumMismatch => write!(f, "checksum mismatch"),
            BadRecord::BadEntries => write!(f, "the record's entries do not fill it"),
            BadRecord::UnexpectedLsn { expected, found } => {
                write!(f, "expected LSN {expected}, found LSN {found}")
            }
        }
    }
}

pub(crate) enum NextRecord<'a> {
    Record { lsn: Lsn, payload: &'a [u8] },
    End,
    Bad(BadRecord),
}

/// Reads records one at a time from a stream that ends at a known offset, reusing one payload
/// buffer so that recovery holds a single record in memory, whatever the file size.
pub(crate) struct RecordReader<R> {
    input: R,
    offset: u64,
    end: u64,
    payload: Vec<u8>,
}

impl<R: Read> RecordReader<R> {
    /// `input` is positioned at `offset`; records end at `end` (the file length, or where the
    /// snapshot footer starts).
    pub(crate) fn new(input: R, offset: u64, end: u64) -> RecordReader<R> {
        RecordReader { input, offset, end, payload: Vec::new() }
    }

    /// Where the next record starts (after a `Bad`, where the bad record starts).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn next_record(&mut self) -> io::Result<NextRecord<'_>> {
        let remaining = self.end.saturating_sub(self.offset);
        if remaining == 0 {
            return Ok(NextRecord::End);
        }
        if remaining < RECORD_HEADER_BYTES as u64 {
            return Ok(NextRecord::Bad(BadRecord::Truncated));
        }
        let mut header = [0u8; RECORD_HEADER_BYTES];
        self.input.read_exact(&mut header)?;
        let (len, crc, lsn) = split_record_header(&header);
        if len as usize > MAX_PAYLOAD_BYTES {
            return Ok(NextRecord::Bad(BadRecord::ImpossibleLength(len)));
        }
        if u64::from(len) > remaining - RECORD_HEADER_BYTES as u64 {
            return Ok(NextRecord::Bad(BadRecord::Truncated));
        }
        self.payload.resize(len as usize, 0);
        self.input.read_exact(&mut self.payload)?;
        if record_crc(len.to_le_bytes(), lsn.to_le_bytes(), &self.payload) != crc {
            return Ok(NextRecord::Bad(BadRecord::ChecksumMismatch));
        }
        self.offset += (RECORD_HEADER_BYTES + len as usize) as u64;
        Ok(NextRecord::Record { lsn, payload: &self.payload })
    }
}

fn split_record_header(header: &[u8; RECORD_HEADER_BYTES]) -> (u32, u32, Lsn) {
    let [l0, l1, l2, l3, c0, c1, c2, c3, n0, n1, n2, n3, n4, n5, n6, n7] = *header;
    (
        u32::from_le_bytes([l0, l1, l2, l3]),
        u32::from_le_bytes([c0, c1, c2, c3]),
        u64::from_le_bytes([n0, n1, n2, n3, n4, n5, n6, n7]),
    )
}

/// Looks for any valid record in `bytes` with an LSN of at least `min_lsn`, at any byte offset.
/// Recovery uses it after a bad record to tell a torn tail (nothing valid follows) from damage in
/// the middle (acknowledged records follow and would be lost by truncating). The LSN window keeps
/// CRC checks rare: a record can only carry an LSN that the bytes left could have reached (an
/// entry takes at least one byte).
pub(crate) fn find_valid_record(bytes: &[u8], min_lsn: Lsn) -> Option<(usize, Lsn)> {
    let max_lsn = min_lsn.saturating_add(bytes.len() as u64);
    for start in 0..bytes.len().saturating_sub(RECORD_HEADER_BYTES - 1) {
        let Some(header) = bytes.get(start..start + RECORD_HEADER_BYTES) else { break };
        let Ok(header) = <&[u8; RECORD_HEADER_BYTES]>::try_from(header) else { break };
        let (len, crc, lsn) = split_record_header(header);
        if lsn < min_lsn || lsn > max_lsn || len as usize > MAX_PAYLOAD_BYTES {
            continue;
        }
        let payload_start = start + RECORD_HEADER_BYTES;
        let Some(payload) = bytes.get(payload_start..payload_start + len as usize) else { continue };
        if record_crc(len.to_le_bytes(), lsn.to_le_bytes(), payload) == crc {
            return Some((start, lsn));
        }
    }
    None
}

/// What a segment header says: the LSN of its first record and the boot of the process that
/// created it (the process that wrote every record in it, since each process starts a segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) first_lsn: Lsn,
    pub(crate) boot_id: String,
    /// The format of its records (see the module's documentation).
    pub(crate) version: u16,
}

/// `[magic 8][version u16][boot id length u16][first lsn u64][boot id][crc u32]`
pub(crate) fn encode_segment_header(header: &SegmentHeader) -> Vec<u8> {
    let boot_id = truncated_boot_id(&header.boot_id);
    let mut out = Vec::with_capacity(24 + boot_id.len());
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&header.version.to_le_bytes());
    out.extend_from_slice(&(boot_id.len() as u16).to_le_bytes());
    out.extend_from_slice(&header.first_lsn.to_le_bytes());
    out.extend_from_slice(boot_id);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn truncated_boot_id(boot_id: &str) -> &[u8] {
    let bytes = boot_id.as_bytes();
    &bytes[..bytes.len().min(MAX_BOOT_ID_BYTES)]
}

/// Compares boot ids as headers store them (cut to [`MAX_BOOT_ID_BYTES`]).
pub(crate) fn same_boot(recorded: &str, current: &str) -> bool {
    recorded.as_bytes() == truncated_boot_id(current)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadHeader {
    Truncated,
    NotAJournal,
    UnsupportedVersion { found: u16, read: &'static str },
    ChecksumMismatch,
}

impl std::fmt::Display for BadHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadHeader::Truncated => write!(f, "the header is cut short"),
            BadHeader::NotAJournal => write!(f, "not a baton journal file (bad magic)"),
            BadHeader::UnsupportedVersion { found, read } => {
                write!(f, "format version {found}, this build reads {read}")
            }
            BadHeader::ChecksumMismatch => write!(f, "header checksum mismatch"),
        }
    }
}

/// Reads a segment header from the start of `input`; returns it and its length in bytes.
pub(crate) fn read_segment_header(input: &mut impl Read) -> io::Result<Result<(SegmentHeader, u64), BadHeader>> {
    let mut fixed = [0u8; 20];
    if !read_fully(input, &mut fixed)? {
        return Ok(Err(BadHeader::Truncated));
    }
    if fixed[..8] != SEGMENT_MAGIC {
        return Ok(Err(BadHeader::NotAJournal));
    }
    let version = u16::from_le_bytes([fixed[8], fixed[9]]);
    if !(OLDEST_SEGMENT_VERSION..=SEGMENT_VERSION).contains(&version) {
        return Ok(Err(BadHeader::UnsupportedVersion { found: version, read: "versions 1 and 2" }));
    }
    let boot_len = usize::from(u16::from_le_bytes([fixed[10], fixed[11]]));
    if boot_len > MAX_BOOT_ID_BYTES {
        return Ok(Err(BadHeader::ChecksumMismatch));
    }
    let mut rest = vec![0u8; boot_len + 4];
    if !read_fully(input, &mut rest)? {
        return Ok(Err(BadHeader::Truncated));
    }
    let (boot_id, crc) = rest.split_at(boot_len);
    let expected = crc32c::crc32c_append(crc32c::crc32c(&fixed), boot_id);
    if crc != expected.to_le_bytes() {
        return Ok(Err(BadHeader::ChecksumMismatch));
    }
    let mut first_lsn = [0u8; 8];
    first_lsn.copy_from_slice(&fixed[12..20]);
    let header = SegmentHeader {
        first_lsn: u64::from_le_bytes(first_lsn),
        boot_id: String::from_utf8_lossy(boot_id).into_owned(),
        version,
    };
    Ok(Ok((header, (20 + boot_len + 4) as u64)))
}

/// Like `read_exact`, but a short stream is `false` rather than an error.
fn read_fully(input: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match input.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

/// `[magic 8][version u16][6 zero bytes]`: the snapshot's payloads follow as records numbered
/// 1, 2, ... in the LSN field, then the footer.
pub(crate) const SNAPSHOT_HEADER_BYTES: u64 = 16;

pub(crate) fn snapshot_header() -> [u8; SNAPSHOT_HEADER_BYTES as usize] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES as usize];
    header[..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..10].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header
}

pub(crate) fn check_snapshot_header(header: &[u8; SNAPSHOT_HEADER_BYTES as usize]) -> Result<(), BadHeader> {
    if header[..8] != SNAPSHOT_MAGIC {
        return Err(BadHeader::NotAJournal);
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != SNAPSHOT_VERSION {
        return Err(BadHeader::UnsupportedVersion { found: version, read: "version 1" });
    }
    Ok(())
}

/// `[magic 8][records u64][replay_from u64][crc u32]`. A snapshot is only renamed into place once
/// complete, so a missing or bad footer means damage, not a crash.
pub(crate) const SNAPSHOT_FOOTER_BYTES: u64 = 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotFooter {
    pub(crate) records: u64,
    pub(crate) replay_from: Lsn,
}

pub(crate) fn encode_snapshot_footer(footer: SnapshotFooter) -> [u8; SNAPSHOT_FOOTER_BYTES as usize] {
    let mut out = [0u8; SNAPSHOT_FOOTER_BYTES as usize];
    out[..8].copy_from_slice(&SNAPSHOT_FOOTER_MAGIC);
    out[8..16].copy_from_slice(&footer.records.to_le_bytes());
    out[16..24].copy_from_slice(&footer.replay_from.to_le_bytes());
    let crc = crc32c::crc32c(&out[..24]);
    out[24..].copy_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_snapshot_footer(bytes: &[u8; SNAPSHOT_FOOTER_BYTES as usize]) -> Option<SnapshotFooter> {
    let mut records = [0u8; 8];
    let mut replay_from = [0u8; 8];
    let mut crc = [0u8; 4];
    records.copy_from_slice(&bytes[8..16]);
    replay_from.copy_from_slice(&bytes[16..24]);
    crc.copy_from_slice(&bytes[24..]);
    let valid = bytes[..8] == SNAPSHOT_FOOTER_MAGIC && crc32c::crc32c(&bytes[..24]) == u32::from_le_bytes(crc);
    valid.then(|| SnapshotFooter { records: u64::from_le_bytes(records), replay_from: u64::from_le_bytes(replay_from) })
}

/// The clean-shutdown mark: `[magic 8][last lsn u64][crc u32]`. Carrying the last LSN lets the
/// next open check that the mark belongs to the journal it finds.
pub(crate) fn encode_clean_mark(last_lsn: Lsn) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..8].copy_from_slice(&CLEAN_MARK_MAGIC);
    out[8..16].copy_from_slice(&last_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_clean_mark(bytes: &[u8]) -> Option<Lsn> {
    let bytes = <&[u8; 20]>::try_from(bytes).ok()?;
    let mut lsn = [0u8; 8];
    let mut crc = [0u8; 4];
    lsn.copy_from_slice(&bytes[8..16]);
    crc.copy_from_slice(&bytes[16..]);
    let valid = bytes[..8] == CLEAN_MARK_MAGIC && crc32c::crc32c(&bytes[..16]) == u32::from_le_bytes(crc);
    valid.then(|| u64::from_le_bytes(lsn))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records read, and where and why reading stopped early.
    type ReadAll = (Vec<(Lsn, Vec<u8>)>, Option<(u64, BadRecord)>);

    fn read_all(bytes: &[u8]) -> ReadAll {
        let mut reader = RecordReader::new(bytes, 0, bytes.len() as u64);
        let mut records = Vec::new();
        loop {
            let offset = reader.offset();
            match reader.next_record().unwrap() {
                NextRecord::Record { lsn, payload } => records.push((lsn, payload.to_vec())),
                NextRecord::End => return (records, None),
                NextRecord::Bad(bad) => return (records, Some((offset, bad))),
            }
        }
    }

    #[test]
    fn records_round_trip_and_every_truncation_is_detected() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 7, b"hello");
        encode_record(&mut bytes, 8, b"");
        encode_record(&mut bytes, 9, &[0xAB; 300]);
        let (records, bad) = read_all(&bytes);
        assert_eq!(bad, None);
        assert_eq!(records, vec![(7, b"hello".to_vec()), (8, vec![]), (9, vec![0xAB; 300])]);
        let last_start = bytes.len() - (RECORD_HEADER_BYTES + 300);
        for cut in last_start + 1..bytes.len() {
            let (records, bad) = read_all(&bytes[..cut]);
            assert_eq!(records.len(), 2);
            assert_eq!(bad, Some((last_start as u64, BadRecord::Truncated)));
        }
    }

    #[test]
    fn a_flipped_length_is_a_checksum_mismatch() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 1, b"abcdef");
        encode_record(&mut bytes, 2, b"ghijkl");
        bytes[0] ^= 0x02;
        let (records, bad) = read_all(&bytes);
        assert!(records.is_empty());
        assert!(matches!(bad, Some((0, BadRecord::ChecksumMismatch | BadRecord::Truncated))));
        assert_eq!(find_valid_record(&bytes[1..], 1).map(|(offset, lsn)| (offset + 1, lsn)), Some((22, 2)));
    }

    #[test]
    fn entries_round_trip_and_records_not_made_of_whole_entries_are_refused() {
        let mut bytes = Vec::new();
        begin_entries(&mut bytes, 7);
        push_entry(&mut bytes, &[b"ab", b"c"]);
        push_entry(&mut bytes, &[]);
        push_entry(&mut bytes, &[&[0xCD; 200]]);
        seal_entries(&mut bytes);
        let (records, bad) = read_all(&bytes);
        assert_eq!(bad, None);
        let [(lsn, payload)] = &records[..] else { panic!("{records:?}") };
        assert_eq!(*lsn, 7);
        let read: Vec<&[u8]> = entries(SEGMENT_VERSION, payload).collect::<Result<_, _>>().unwrap();
        assert_eq!(read, [&b"abc"[..], &[], &[0xCD; 200]]);
        assert_eq!(count_entries(SEGMENT_VERSION, payload), Ok(3));
        // Sealed as any other record is framed.
        let mut framed = Vec::new();
        encode_record(&mut framed, 7, payload);
        assert_eq!(framed, bytes);
        // Format 1: the payload is one entry, whatever it holds.
        assert_eq!(count_entries(OLDEST_SEGMENT_VERSION, payload), Ok(1));
        assert_eq!(entries(OLDEST_SEGMENT_VERSION, payload).next(), Some(Ok(&payload[..])));

        let cut_entry = &payload[..payload.len() - 1];
        for bad in [cut_entry, &[0x05, 1, 2], &[0x80], &[0xFF; 11], &[]] {
            assert_eq!(count_entries(SEGMENT_VERSION, bad), Err(BadRecord::BadEntries), "{bad:?}");
        }
    }

    #[test]
    fn segment_headers_of_both_formats_are_read_and_others_refused() {
        for version in [OLDEST_SEGMENT_VERSION, SEGMENT_VERSION] {
            let header = SegmentHeader { first_lsn: 3, boot_id: "b".into(), version };
            let bytes = encode_segment_header(&header);
            assert_eq!(read_segment_header(&mut bytes.as_slice()).unwrap().unwrap().0, header);
        }
        let unknown = SegmentHeader { first_lsn: 3, boot_id: "b".into(), version: SEGMENT_VERSION + 1 };
        let refused = read_segment_header(&mut encode_segment_header(&unknown).as_slice()).unwrap();
        assert!(matches!(refused, Err(BadHeader::UnsupportedVersion { found: 3, .. })), "{refused:?}");
    }

    #[test]
    fn headers_footers_and_marks_round_trip_and_reject_damage() {
        let header = SegmentHeader { first_lsn: 42, boot_id: "b1".into(), version: SEGMENT_VERSION };
        let mut bytes = encode_segment_header(&header);
        let (read, len) = read_segment_header(&mut bytes.as_slice()).unwrap().unwrap();
        assert_eq!((read, len), (header, bytes.len() as u64));
        bytes[13] ^= 1;
        assert_eq!(read_segment_header(&mut bytes.as_slice()).unwrap(), Err(BadHeader::ChecksumMismatch));
        assert_eq!(read_segment_header(&mut &bytes[..5]).unwrap(), Err(BadHeader::Truncated));

        let footer = SnapshotFooter { records: 3, replay_from: 9 };
        let mut bytes = encode_snapshot_footer(footer);
        assert_eq!(decode_snapshot_footer(&bytes), Some(footer));
        bytes[9] ^= 1;
        assert_eq!(decode_snapshot_footer(&bytes), None);

        assert_eq!(decode_clean_mark(&encode_clean_mark(77)), Some(77));
        assert_eq!(decode_clean_mark(&encode_clean_mark(77)[..19]), None);
    }
}
