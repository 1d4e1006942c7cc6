//! The bytes of a batch of [`Change`]s: the one place that turns changes into bytes and back,
//! for the journal's records, snapshots and the cluster's log entries alike.
//!
//! A batch is `[count][runs]`, where each run is one key's consecutive changes: `[key][run
//! count][changes]`, the key written once. Numbers are LEB128. The live core encodes each change
//! as it makes it ([`ChangeEncoder`]), with no [`Change`] value and no copy of its strings; a
//! recovery decodes batches back into [`Change`]s to replay.
//!
//! Decoding never trusts its input beyond the CRC the log checked: every length is bounded by
//! the bytes left and every tag is checked, so damaged or hostile bytes give an error, never a
//! panic or a huge allocation.
//!
//! Completions and owed DONEs end at deadlines of the recording server's clock; they are written
//! as wall-clock milliseconds ([`WallClock`]) and read back onto the new server's clock, capped
//! by the longest lease, so a wall clock stepped back cannot stretch them without bound.

use std::ops::Range;
use std::sync::Arc;

use super::change::{Change, ChangeRef};
use super::events::ReleaseCause;
use super::outcome::{Completion, UnlockOutcome};

/// An encoder closes its batch at the first key boundary past this size and goes on in a new
/// one: a closed connection's locks or a slice of expiries become several payloads, each far
/// below what one record may hold, and none cuts a key's step.
pub const BATCH_PART_BYTES: usize = 1 << 20;

/// The offset between the server's clock and the wall clock, so deadlines can cross a restart.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// Wall-clock milliseconds (since the Unix epoch) when this server's clock read zero.
    pub wall_ms_at_zero: u64,
    /// Now, on this server's clock, in milliseconds.
    pub now_ms: u64,
    /// A deadline read back is at most this far ahead of now.
    pub max_ahead_ms: u64,
}

impl WallClock {
    fn deadline_of_wall(self, wall_ms: u64) -> u64 {
        wall_ms.saturating_sub(self.wall_ms_at_zero).min(self.now_ms.saturating_add(self.max_ahead_ms))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "undecodable journal record: {}", self.0)
    }
}

/// Encodes the changes of one operation as they are made, into one batch or, past
/// [`ChangeEncoder::part_bytes`], several (each is one payload: a record, an entry).
#[derive(Debug)]
pub struct ChangeEncoder {
    bytes: Vec<u8>,
    wall_ms_at_zero: u64,
    part_bytes: usize,
    /// Where each closed part ends; the open part runs from the last of them (or 0) to the end.
    closed_parts: Vec<usize>,
    part_start: usize,
    part_changes: u64,
    /// The open run: its key's bytes, and where its count goes (one byte kept for it).
    run_key: Range<usize>,
    run_count_at: usize,
    run_changes: u64,
    changes: u64,
    /// The largest token and the longest lease any `Hold` among the changes promised.
    max_hold: Option<(u64, u64)>,
}

impl ChangeEncoder {
    /// Deadlines are written as `wall_ms_at_zero` plus their time on the server's clock. A batch
    /// is closed at the first key boundary past `part_bytes` (`usize::MAX`: never).
    pub fn new(wall_ms_at_zero: u64, part_bytes: usize) -> ChangeEncoder {
        let mut encoder = ChangeEncoder {
            bytes: Vec::new(),
            wall_ms_at_zero,
            part_bytes,
            closed_parts: Vec::new(),
            part_start: 0,
            part_changes: 0,
            run_key: 0..0,
            run_count_at: 0,
            run_changes: 0,
            changes: 0,
            max_hold: None,
        };
        encoder.open_part();
        encoder
    }

    pub fn is_empty(&self) -> bool {
        self.changes == 0
    }

    /// The largest token and the longest lease a `Hold` among these changes promised.
    pub fn max_hold(&self) -> Option<(u64, u64)> {
        self.max_hold
    }

    /// Empties the encoder for the next operation, keeping its buffer unless it grew large.
    pub fn clear(&mut self) {
        if self.bytes.capacity() > self.part_bytes.min(BATCH_PART_BYTES) {
            self.bytes = Vec::new();
        }
        self.bytes.clear();
        self.closed_parts.clear();
        self.changes = 0;
        self.max_hold = None;
        self.open_part();
    }

    /// The encoded batches, in order: call once every change is pushed.
    pub fn parts(&mut self) -> impl Iterator<Item = &[u8]> {
        self.close_part();
        let bytes = &self.bytes;
        let mut start = 0;
        self.closed_parts.iter().map(move |&end| {
            let part = &bytes[start..end];
            start = end;
            part
        })
    }

    pub fn push(&mut self, change: ChangeRef<'_>) {
        let key = change.key();
        // Room for the key, the counts and the change's numbers and tags at once: the pushes
        // below then never grow the buffer one step at a time.
        self.bytes.reserve(key.len() + 64);
        if self.run_changes == 0 || self.bytes[self.run_key.clone()] != *key {
            self.close_run();
            if self.part_changes > 0 && self.bytes.len() - self.part_start >= self.part_bytes {
                self.close_part();
                self.open_part();
            }
            put_u64(&mut self.bytes, key.len() as u64);
            let key_start = self.bytes.len();
            self.bytes.extend_from_slice(key);
            self.run_key = key_start..self.bytes.len();
            self.run_count_at = self.bytes.len();
            self.bytes.push(0);
        }
        self.run_changes += 1;
        self.part_changes += 1;
        self.changes += 1;
        if let ChangeRef::Hold { token, lease_ms, .. } = change {
            let (max_token, max_lease_ms) = self.max_hold.unwrap_or_default();
            self.max_hold = Some((max_token.max(token), max_lease_ms.max(lease_ms)));
        }
        encode_change(change, self.wall_ms_at_zero, &mut self.bytes);
    }

    fn open_part(&mut self) {
        self.part_start = self.bytes.len();
        self.part_changes = 0;
        self.run_changes = 0;
        self.bytes.push(0);
    }

    /// Closes the open part, unless it is closed already: an open part always has its count's
    /// byte past the last closed end.
    fn close_part(&mut self) {
        if self.closed_parts.last() == Some(&self.bytes.len()) {
            return;
        }
        self.close_run();
        fill_count(&mut self.bytes, self.part_start, self.part_changes);
        self.closed_parts.push(self.bytes.len());
    }

    fn close_run(&mut self) {
        if self.run_changes > 0 {
            fill_count(&mut self.bytes, self.run_count_at, self.run_changes);
            self.run_changes = 0;
        }
    }
}

/// Writes `count` into the byte kept for it at `at`, moving what follows when it takes more.
#[inline]
fn fill_count(bytes: &mut Vec<u8>, at: usize, count: u64) {
    if count < 0x80 {
        bytes[at] = count as u8;
    } else {
        fill_long_count(bytes, at, count);
    }
}

#[cold]
fn fill_long_count(bytes: &mut Vec<u8>, at: usize, count: u64) {
    let mut encoded = Vec::with_capacity(10);
    put_u64(&mut encoded, count);
    bytes.splice(at..at + 1, encoded);
}

// Change tags.
const HOLD: u8 = 1;
const FREE: u8 = 2;
const JOIN: u8 = 3;
const LEAVE: u8 = 4;
const LEAVE_ALL: u8 = 5;
const FINISH: u8 = 6;
const KEEP: u8 = 7;
const UNKEEP: u8 = 8;
const OWE: u8 = 9;
const PAID: u8 = 10;
const UNLOCKED: u8 = 11;

fn encode_change(change: ChangeRef<'_>, wall_ms_at_zero: u64, out: &mut Vec<u8>) {
    let wall = |deadline_ms: u64| wall_ms_at_zero.saturating_add(deadline_ms);
    match change {
        ChangeRef::Hold { owner, token, lease_ms, .. } => {
            out.push(HOLD);
            put_bytes(out, owner);
            put_u64(out, token);
            put_u64(out, lease_ms);
        }
        ChangeRef::Free { cause, .. } => {
            out.push(FREE);
            encode_cause(cause, out);
        }
        ChangeRef::Join { owner, lease_ms, .. } => {
            out.push(JOIN);
            put_bytes(out, owner);
            put_u64(out, lease_ms);
        }
        ChangeRef::Leave { owner, .. } => {
            out.push(LEAVE);
            put_bytes(out, owner);
        }
        ChangeRef::LeaveAll { .. } => out.push(LEAVE_ALL),
        ChangeRef::Finish { completion, .. } => {
            out.push(FINISH);
            put_u64(out, completion.token);
            put_bytes(out, &completion.finisher);
            match completion.result.as_deref() {
                None => out.push(0),
                Some(result) => {
                    out.push(1);
                    put_bytes(out, result);
                }
            }
        }
        ChangeRef::Keep { token, until, .. } => {
            out.push(KEEP);
            put_u64(out, token);
            put_u64(out, wall(until));
        }
        ChangeRef::Unkeep { .. } => out.push(UNKEEP),
        ChangeRef::Owe { owner, token, until, .. } => {
            out.push(OWE);
            put_bytes(out, owner);
            put_u64(out, token);
            put_u64(out, wall(until));
        }
        ChangeRef::Paid { owner, .. } => {
            out.push(PAID);
            put_bytes(out, owner);
        }
        ChangeRef::Unlocked { owner, token, outcome, .. } => {
            out.push(UNLOCKED);
            put_bytes(out, owner);
            put_u64(out, token);
            encode_outcome(outcome, out);
        }
    }
}

/// Decodes one of the batches [`ChangeEncoder::parts`] gave.
pub fn decode_changes(bytes: &[u8], clock: WallClock) -> Result<Vec<Change>, DecodeError> {
    let mut input = Input { bytes };
    let changes = decode_batch(&mut input, clock)?;
    if !input.bytes.is_empty() {
        return Err(DecodeError("bytes after the changes"));
    }
    Ok(changes)
}

fn decode_batch(input: &mut Input<'_>, clock: WallClock) -> Result<Vec<Change>, DecodeError> {
    // Every change takes at least one byte.
    let count = input.len(1)?;
    let mut changes = Vec::with_capacity(count);
    while changes.len() < count {
        let key: Arc<[u8]> = Arc::from(input.bytes()?);
        let run = input.len(1)?;
        if run == 0 || changes.len() + run > count {
            return Err(DecodeError("runs do not add up to the count"));
        }
        for _ in 0..run {
            changes.push(decode_change(Arc::clone(&key), input, clock)?);
        }
    }
    Ok(changes)
}

fn decode_change(key: Arc<[u8]>, input: &mut Input<'_>, clock: WallClock) -> Result<Change, DecodeError> {
    Ok(match input.byte()? {
        HOLD => Change::Hold { key, owner: input.shared_bytes()?, token: input.u64()?, lease_ms: input.u64()? },
        FREE => Change::Free { key, cause: decode_cause(input)? },
        JOIN => Change::Join { key, owner: input.shared_bytes()?, lease_ms: input.u64()? },
        LEAVE => Change::Leave { key, owner: input.shared_bytes()? },
        LEAVE_ALL => Change::LeaveAll { key },
        FINISH => {
            let token = input.u64()?;
            let finisher = input.shared_bytes()?;
            let result = input.optional_bytes()?;
            Change::Finish { key, completion: Arc::new(Completion { token, finisher, result }) }
        }
        KEEP => Change::Keep { key, token: input.u64()?, until: clock.deadline_of_wall(input.u64()?) },
        UNKEEP => Change::Unkeep { key },
        OWE => Change::Owe {
            key,
            owner: input.shared_bytes()?,
            token: input.u64()?,
            until: clock.deadline_of_wall(input.u64()?),
        },
        PAID => Change::Paid { key, owner: input.shared_bytes()? },
        UNLOCKED => {
            Change::Unlocked { key, owner: input.shared_bytes()?, token: input.u64()?, outcome: decode_outcome(input)? }
        }
        _ => return Err(DecodeError("unknown change")),
    })
}

// Release causes: 0 = none (a SUCCESS).
const FAILURE: u8 = 1;
const FAILURE_WITH_REASON: u8 = 2;
const LEASE_EXPIRED: u8 = 3;
const HOLDER_DISCONNECTED: u8 = 4;
const GRANT_UNDELIVERED: u8 = 5;

fn encode_cause(cause: Option<&ReleaseCause>, out: &mut Vec<u8>) {
    match cause {
        None => out.push(0),
        Some(ReleaseCause::Failure(None)) => out.push(FAILURE),
        Some(ReleaseCause::Failure(Some(reason))) => {
            out.push(FAILURE_WITH_REASON);
            put_bytes(out, reason);
        }
        Some(ReleaseCause::LeaseExpired) => out.push(LEASE_EXPIRED),
        Some(ReleaseCause::HolderDisconnected) => out.push(HOLDER_DISCONNECTED),
        Some(ReleaseCause::GrantUndelivered) => out.push(GRANT_UNDELIVERED),
    }
}

fn decode_cause(input: &mut Input<'_>) -> Result<Option<ReleaseCause>, DecodeError> {
    Ok(Some(match input.byte()? {
        0 => return Ok(None),
        FAILURE => ReleaseCause::Failure(None),
        FAILURE_WITH_REASON => ReleaseCause::Failure(Some(input.shared_bytes()?)),
        LEASE_EXPIRED => ReleaseCause::LeaseExpired,
        HOLDER_DISCONNECTED => ReleaseCause::HolderDisconnected,
        GRANT_UNDELIVERED => ReleaseCause::GrantUndelivered,
        _ => return Err(DecodeError("unknown release cause")),
    }))
}

// UNLOCK answers.
const SUCCEEDED: u8 = 1;
const HANDED_OFF: u8 = 2;
const RELEASED: u8 = 3;
const NOT_LOCKED: u8 = 4;
const NOT_HOLDER: u8 = 5;

fn encode_outcome(outcome: UnlockOutcome, out: &mut Vec<u8>) {
    match outcome {
        UnlockOutcome::Succeeded { waiters_told } => {
            out.push(SUCCEEDED);
            put_u64(out, waiters_told as u64);
        }
        UnlockOutcome::HandedOff => out.push(HANDED_OFF),
        UnlockOutcome::Released => out.push(RELEASED),
        UnlockOutcome::NotLocked => out.push(NOT_LOCKED),
        UnlockOutcome::NotHolder => out.push(NOT_HOLDER),
    }
}

fn decode_outcome(input: &mut Input<'_>) -> Result<UnlockOutcome, DecodeError> {
    Ok(match input.byte()? {
        SUCCEEDED => UnlockOutcome::Succeeded {
            waiters_told: usize::try_from(input.u64()?).map_err(|_| DecodeError("count too large"))?,
        },
        HANDED_OFF => UnlockOutcome::HandedOff,
        RELEASED => UnlockOutcome::Released,
        NOT_LOCKED => UnlockOutcome::NotLocked,
        NOT_HOLDER => UnlockOutcome::NotHolder,
        _ => return Err(DecodeError("unknown UNLOCK answer")),
    })
}

/// LEB128: small numbers (lengths, leases) take a byte or two.
pub(crate) fn put_u64(out: &mut Vec<u8>, mut value: u64) {
    // Gathered first and appended at once: a push per byte checks the capacity and stores the
    // length each time, and this runs several times per change, under a shard lock.
    let mut encoded = [0u8; 10];
    let mut len = 0;
    while value >= 0x80 && len < 9 {
        encoded[len] = (value as u8) | 0x80;
        value >>= 7;
        len += 1;
    }
    encoded[len] = value as u8;
    out.extend_from_slice(&encoded[..=len]);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Bytes being decoded.
pub(crate) struct Input<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn byte(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self.bytes.split_first().ok_or(DecodeError("cut short"))?;
        self.bytes = rest;
        Ok(first)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError("number too large"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError("number too long"))
    }

    /// A count of items each at least `min_item_bytes` long: never more than the bytes left allow.
    pub(crate) fn len(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let count = usize::try_from(self.u64()?).map_err(|_| DecodeError("count too large"))?;
        if count.saturating_mul(min_item_bytes) > self.bytes.len() {
            return Err(DecodeError("count beyond the record"));
        }
        Ok(count)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.len(1)?;
        let (bytes, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(bytes)
    }

    fn shared_bytes(&mut self) -> Result<Arc<[u8]>, DecodeError> {
        self.bytes().map(Arc::from)
    }

    fn optional_bytes(&mut self) -> Result<Option<Arc<[u8]>>, DecodeError> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.shared_bytes().map(Some),
            _ => Err(DecodeError("bad optional marker")),
        }
    }
}
