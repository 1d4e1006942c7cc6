//! What the journal's payloads mean: batches of the core's [`Change`]s, token reservations and
//! the marks that close a snapshot. The log under it only stores bytes; this is the one place
//! that turns changes into bytes and back.
//!
//! Decoding never trusts its input beyond the CRC the log checked: every length is bounded by
//! the bytes left and every tag is checked, so damaged or hostile bytes give an error, never a
//! panic or a huge allocation.
//!
//! Completions and owed DONEs end at deadlines of the recording server's clock; they are written
//! as wall-clock milliseconds ([`WallClock`]) and read back onto the new server's clock, capped
//! by the longest lease, so a wall clock stepped back cannot stretch them without bound.

use std::sync::Arc;

use crate::core::{Change, Completion, ReleaseCause, UnlockOutcome};

use super::Lsn;

const BATCH: u8 = 1;
const RESERVE: u8 = 2;
const SNAPSHOT_MARKS: u8 = 3;
const LEASE_CEILING: u8 = 4;

/// One payload of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// The changes one core operation made (one [`crate::core::ChangeSink::record`] call).
    Batch(Vec<Change>),
    /// No token below this will ever be issued again without a later reservation: the next
    /// server starts its tokens here at least. Synced before any token at or above the previous
    /// reservation is sent to a client.
    Reserve { tokens_below: u64 },
    /// Closes a snapshot: shard `i` of `marks.len()` holds exactly the changes of its keys up to
    /// `marks[i]`; later records of its keys are replayed after it.
    SnapshotMarks { marks: Vec<Lsn>, tokens_below: u64 },
    /// No holder was ever promised a longer lease: how long grants pause after an OS crash.
    /// Synced before a reply promises more.
    LeaseCeiling { ms: u64 },
}

/// The offset between the server's clock and the wall clock, so deadlines can cross a restart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WallClock {
    /// Wall-clock milliseconds (since the Unix epoch) when this server's clock read zero.
    pub(crate) wall_ms_at_zero: u64,
    /// Now, on this server's clock, in milliseconds.
    pub(crate) now_ms: u64,
    /// A deadline read back is at most this far ahead of now.
    pub(crate) max_ahead_ms: u64,
}

impl WallClock {
    fn to_wall(self, deadline_ms: u64) -> u64 {
        self.wall_ms_at_zero.saturating_add(deadline_ms)
    }

    fn deadline_of_wall(self, wall_ms: u64) -> u64 {
        wall_ms.saturating_sub(self.wall_ms_at_zero).min(self.now_ms.saturating_add(self.max_ahead_ms))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "undecodable journal record: {}", self.0)
    }
}

impl Record {
    pub(crate) fn encode(&self, clock: WallClock, out: &mut Vec<u8>) {
        match self {
            Record::Batch(changes) => encode_batch(changes, clock, out),
            Record::Reserve { tokens_below } => {
                out.push(RESERVE);
                put_u64(out, *tokens_below);
            }
            Record::LeaseCeiling { ms } => {
                out.push(LEASE_CEILING);
                put_u64(out, *ms);
            }
            Record::SnapshotMarks { marks, tokens_below } => {
                out.push(SNAPSHOT_MARKS);
                put_u64(out, *tokens_below);
                put_u64(out, marks.len() as u64);
                for mark in marks {
                    put_u64(out, *mark);
                }
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8], clock: WallClock) -> Result<Record, DecodeError> {
        let mut input = Input { bytes };
        let record = match input.byte()? {
            BATCH => Record::Batch(decode_batch(&mut input, clock)?),
            RESERVE => Record::Reserve { tokens_below: input.u64()? },
            LEASE_CEILING => Record::LeaseCeiling { ms: input.u64()? },
            SNAPSHOT_MARKS => {
                let tokens_below = input.u64()?;
                let count = input.len(1)?;
                let marks = (0..count).map(|_| input.u64()).collect::<Result<_, _>>()?;
                Record::SnapshotMarks { marks, tokens_below }
            }
            _ => return Err(DecodeError("unknown record type")),
        };
        if !input.bytes.is_empty() {
            return Err(DecodeError("bytes after the record"));
        }
        Ok(record)
    }
}

/// What one key's queue may weigh (the server's `CoreSettings::max_queue_bytes`): the steps that
/// record a change per place in line (telling a whole queue DONE, skipping lapsed places) then
/// stay within one record, with room for the rest of the step (a RESULT, a REASON, a key).
pub(crate) const MAX_QUEUE_BYTES: usize = 48 << 20;
const _: () = assert!(MAX_QUEUE_BYTES + (4 << 20) <= super::frame::MAX_PAYLOAD_BYTES);

/// A snapshot payload is closed at the first key boundary past this size: a shard's snapshot
/// is many records, each far below the framing's bound on one record.
pub(crate) const SNAPSHOT_PAYLOAD_BYTES: usize = 1 << 20;
const _: () = assert!(SNAPSHOT_PAYLOAD_BYTES * 16 <= super::frame::MAX_PAYLOAD_BYTES);

/// A key whose snapshot passes this is cut too: its line can weigh [`MAX_QUEUE_BYTES`], and
/// as much again of owners owed DONE, more than one record holds.
const SNAPSHOT_KEY_PAYLOAD_BYTES: usize = 16 * SNAPSHOT_PAYLOAD_BYTES;

/// Encodes a shard's snapshot (`changes`, as [`crate::core::LockCore::snapshot_shard`] gives
/// them) as batches near [`SNAPSHOT_PAYLOAD_BYTES`], and hands each batch's payload to `push`.
/// A key stays in one batch, one replayed step, unless it alone passes
/// [`SNAPSHOT_KEY_PAYLOAD_BYTES`]. Replayed in several steps it comes back the same: its state
/// after the first step, which has its holder and a good part of its line or of its owners owed
/// DONE, is never empty (so the key is not forgotten in between), and the completion those
/// owners are owed is carried from one step to the next by the shard's replay context.
pub(crate) fn encode_snapshot_batches<E>(
    changes: &[Change],
    clock: WallClock,
    push: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    encode_batches(changes, clock, SNAPSHOT_KEY_PAYLOAD_BYTES, &mut Vec::new(), push)
}

/// A live batch this large is written as several records: see [`encode_live_batch`].
const LIVE_PAYLOAD_BYTES: usize = 16 << 20;
// A part is what precedes a key boundary past SNAPSHOT_PAYLOAD_BYTES, plus that key's whole step.
const _: () = assert!(SNAPSHOT_PAYLOAD_BYTES + MAX_QUEUE_BYTES + (4 << 20) <= super::frame::MAX_PAYLOAD_BYTES);
const _: () = assert!(LIVE_PAYLOAD_BYTES <= super::frame::MAX_PAYLOAD_BYTES);

/// Encodes the changes of one core operation into `payload` and hands it to `push`: one payload
/// as a rule. One operation can change many keys (a closed connection's locks, a slice of
/// expiries), each of whose steps is bounded by the weight of its line, but not all of them
/// together: past [`LIVE_PAYLOAD_BYTES`] the batch is handed over as several payloads near
/// [`SNAPSHOT_PAYLOAD_BYTES`], never cutting a key's step. Each is a record of its own; a reply
/// waits for the last, and a torn tail between them keeps whole steps of some keys, as if the
/// operation had reached only those before the crash.
pub(crate) fn encode_live_batch(
    changes: &[Change],
    clock: WallClock,
    payload: &mut Vec<u8>,
    mut push: impl FnMut(&[u8]),
) {
    payload.clear();
    encode_batch(changes, clock, payload);
    if payload.len() <= LIVE_PAYLOAD_BYTES {
        push(payload);
        return;
    }
    let whole_keys = usize::MAX;
    let _ = encode_batches(changes, clock, whole_keys, payload, |part| {
        push(part);
        Ok::<(), ()>(())
    });
}

/// Cuts `changes` into payloads near [`SNAPSHOT_PAYLOAD_BYTES`] at key boundaries, a key's own
/// changes only once they pass `key_cut`, and hands each to `push`.
fn encode_batches<E>(
    changes: &[Change],
    clock: WallClock,
    key_cut: usize,
    payload: &mut Vec<u8>,
    mut push: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut rest = changes;
    while !rest.is_empty() {
        let mut end = 0;
        let mut size = 0;
        while end < rest.len()
            && (size < SNAPSHOT_PAYLOAD_BYTES || (rest[end].key() == rest[end - 1].key() && size < key_cut))
        {
            size += change_size_hint(&rest[end]);
            end += 1;
        }
        payload.clear();
        encode_batch(&rest[..end], clock, payload);
        push(payload)?;
        rest = &rest[end..];
    }
    Ok(())
}

/// At least what a change takes in a payload (its byte strings, and a bound on its numbers,
/// tags and lengths), so that payloads are cut near [`SNAPSHOT_PAYLOAD_BYTES`] whatever the
/// sizes of keys, owners and results: a hint that left them out let a shard of long keys make
/// one payload larger than the framing accepts, and a snapshot that could not be read back.
fn change_size_hint(change: &Change) -> usize {
    const FIXED: usize = 48;
    let bytes = match change {
        Change::Hold { key, owner, .. }
        | Change::Join { key, owner, .. }
        | Change::Leave { key, owner }
        | Change::Owe { key, owner, .. }
        | Change::Paid { key, owner }
        | Change::Unlocked { key, owner, .. } => key.len() + owner.len(),
        Change::Free { key, cause } => {
            key.len()
                + match cause {
                    Some(ReleaseCause::Failure(Some(reason))) => reason.len(),
                    _ => 0,
                }
        }
        Change::Finish { key, completion } => {
            key.len() + completion.finisher.len() + completion.result.as_ref().map_or(0, |result| result.len())
        }
        Change::LeaveAll { key } | Change::Keep { key, .. } | Change::Unkeep { key } => key.len(),
    };
    FIXED + bytes
}

/// Encodes a batch straight from the changes (the sink's path, which must not clone them).
pub(crate) fn encode_batch(changes: &[Change], clock: WallClock, out: &mut Vec<u8>) {
    out.push(BATCH);
    put_u64(out, changes.len() as u64);
    // Changes come in runs of one key (one step each): the key is written once per run.
    let mut rest = changes;
    while let Some(first) = rest.first() {
        let run = rest.iter().take_while(|change| change.key() == first.key()).count();
        put_bytes(out, first.key());
        put_u64(out, run as u64);
        for change in &rest[..run] {
            encode_change(change, clock, out);
        }
        rest = &rest[run..];
    }
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

fn encode_change(change: &Change, clock: WallClock, out: &mut Vec<u8>) {
    match change {
        Change::Hold { owner, token, lease_ms, .. } => {
            out.push(HOLD);
            put_bytes(out, owner);
            put_u64(out, *token);
            put_u64(out, *lease_ms);
        }
        Change::Free { cause, .. } => {
            out.push(FREE);
            encode_cause(cause.as_ref(), out);
        }
        Change::Join { owner, lease_ms, .. } => {
            out.push(JOIN);
            put_bytes(out, owner);
            put_u64(out, *lease_ms);
        }
        Change::Leave { owner, .. } => {
            out.push(LEAVE);
            put_bytes(out, owner);
        }
        Change::LeaveAll { .. } => out.push(LEAVE_ALL),
        Change::Finish { completion, .. } => {
            out.push(FINISH);
            put_u64(out, completion.token);
            put_bytes(out, &completion.finisher);
            put_optional_bytes(out, completion.result.as_deref());
        }
        Change::Keep { token, until, .. } => {
            out.push(KEEP);
            put_u64(out, *token);
            put_u64(out, clock.to_wall(*until));
        }
        Change::Unkeep { .. } => out.push(UNKEEP),
        Change::Owe { owner, token, until, .. } => {
            out.push(OWE);
            put_bytes(out, owner);
            put_u64(out, *token);
            put_u64(out, clock.to_wall(*until));
        }
        Change::Paid { owner, .. } => {
            out.push(PAID);
            put_bytes(out, owner);
        }
        Change::Unlocked { owner, token, outcome, .. } => {
            out.push(UNLOCKED);
            put_bytes(out, owner);
            put_u64(out, *token);
            encode_outcome(*outcome, out);
        }
    }
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
fn put_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_optional_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
    }
}

struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self.bytes.split_first().ok_or(DecodeError("cut short"))?;
        self.bytes = rest;
        Ok(first)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
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
    fn len(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CLOCK: WallClock = WallClock { wall_ms_at_zero: 1_700_000_000_000, now_ms: 5_000, max_ahead_ms: 1 << 40 };

    fn bytes() -> impl Strategy<Value = Arc<[u8]>> {
        prop::collection::vec(any::<u8>(), 0..12).prop_map(Arc::from)
    }

    fn cause() -> impl Strategy<Value = Option<ReleaseCause>> {
        prop_oneof![
            Just(None),
            Just(Some(ReleaseCause::Failure(None))),
            bytes().prop_map(|reason| Some(ReleaseCause::Failure(Some(reason)))),
            Just(Some(ReleaseCause::LeaseExpired)),
            Just(Some(ReleaseCause::HolderDisconnected)),
            Just(Some(ReleaseCause::GrantUndelivered)),
        ]
    }

    fn outcome() -> impl Strategy<Value = UnlockOutcome> {
        prop_oneof![
            (0usize..1 << 20).prop_map(|waiters_told| UnlockOutcome::Succeeded { waiters_told }),
            Just(UnlockOutcome::HandedOff),
            Just(UnlockOutcome::Released),
            Just(UnlockOutcome::NotLocked),
            Just(UnlockOutcome::NotHolder),
        ]
    }

    fn change(key: Arc<[u8]>) -> impl Strategy<Value = Change> {
        let k = move || Arc::clone(&key);
        prop_oneof![
            (bytes(), any::<u64>(), any::<u64>()).prop_map({
                let k = k.clone();
                move |(owner, token, lease_ms)| Change::Hold { key: k(), owner, token, lease_ms }
            }),
            cause().prop_map({
                let k = k.clone();
                move |cause| Change::Free { key: k(), cause }
            }),
            (bytes(), any::<u64>()).prop_map({
                let k = k.clone();
                move |(owner, lease_ms)| Change::Join { key: k(), owner, lease_ms }
            }),
            bytes().prop_map({
                let k = k.clone();
                move |owner| Change::Leave { key: k(), owner }
            }),
            Just(()).prop_map({
                let k = k.clone();
                move |()| Change::LeaveAll { key: k() }
            }),
            (any::<u64>(), bytes(), prop::option::of(bytes())).prop_map({
                let k = k.clone();
                move |(token, finisher, result)| Change::Finish {
                    key: k(),
                    completion: Arc::new(Completion { token, finisher, result }),
                }
            }),
            (any::<u64>(), 0u64..1 << 40).prop_map({
                let k = k.clone();
                move |(token, until)| Change::Keep { key: k(), token, until }
            }),
            Just(()).prop_map({
                let k = k.clone();
                move |()| Change::Unkeep { key: k() }
            }),
            (bytes(), any::<u64>(), 0u64..1 << 40).prop_map({
                let k = k.clone();
                move |(owner, token, until)| Change::Owe { key: k(), owner, token, until }
            }),
            bytes().prop_map({
                let k = k.clone();
                move |owner| Change::Paid { key: k(), owner }
            }),
            (bytes(), any::<u64>(), outcome()).prop_map(move |(owner, token, outcome)| Change::Unlocked {
                key: k(),
                owner,
                token,
                outcome
            }),
        ]
    }

    fn batch() -> impl Strategy<Value = Vec<Change>> {
        prop::collection::vec((0u8..3).prop_flat_map(|key| change(Arc::from(vec![b'k', key]))), 0..20)
    }

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            batch().prop_map(Record::Batch),
            any::<u64>().prop_map(|tokens_below| Record::Reserve { tokens_below }),
            any::<u64>().prop_map(|ms| Record::LeaseCeiling { ms }),
            (prop::collection::vec(any::<u64>(), 0..8), any::<u64>())
                .prop_map(|(marks, tokens_below)| Record::SnapshotMarks { marks, tokens_below }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(record in record()) {
            let mut bytes = Vec::new();
            record.encode(CLOCK, &mut bytes);
            prop_assert_eq!(Record::decode(&bytes, CLOCK), Ok(record));
        }

        /// Damaged bytes (the log's CRC should have caught them) give an error or some record,
        /// never a panic; a record cut short is always an error.
        #[test]
        fn damaged_records_never_panic(record in record(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
            let mut bytes = Vec::new();
            record.encode(CLOCK, &mut bytes);
            let cut = cut.index(bytes.len());
            prop_assert!(Record::decode(&bytes[..cut], CLOCK).is_err());
            let at = flip.0.index(bytes.len());
            bytes[at] ^= flip.1 | 1;
            let _ = Record::decode(&bytes, CLOCK);
        }
    }

    #[test]
    fn deadlines_cross_a_restart_on_the_wall_clock_and_never_far_ahead() {
        let before = WallClock { wall_ms_at_zero: 10_000_000, now_ms: 0, max_ahead_ms: 60_000 };
        let key: Arc<[u8]> = Arc::from(&b"k"[..]);
        let mut bytes = Vec::new();
        Record::Batch(vec![Change::Keep { key: Arc::clone(&key), token: 7, until: 50_000 }]).encode(before, &mut bytes);
        // Restarted 20 s of wall time later: 30 s are left, on a clock that now reads 1 s.
        let after = WallClock { wall_ms_at_zero: 10_019_000, now_ms: 1_000, max_ahead_ms: 60_000 };
        let keep = |clock| match Record::decode(&bytes, clock) {
            Ok(Record::Batch(changes)) => changes,
            other => panic!("{other:?}"),
        };
        assert_eq!(keep(after), vec![Change::Keep { key: Arc::clone(&key), token: 7, until: 31_000 }]);
        // The wall clock stepped back an hour: the keep is capped at the longest lease from now.
        let stepped_back = WallClock { wall_ms_at_zero: 10_000_000 - 3_600_000, now_ms: 1_000, max_ahead_ms: 60_000 };
        assert_eq!(keep(stepped_back), vec![Change::Keep { key, token: 7, until: 61_000 }]);
    }

    /// The longest keys and owners the server accepts (1 KiB each by default) must not make one
    /// snapshot payload larger than the framing reads back: payloads are cut by their real size.
    #[test]
    fn snapshot_batches_stay_near_their_size_whatever_the_key_lengths() {
        let long = |n: u32| -> Arc<[u8]> { Arc::from(format!("{n:01024}").as_bytes()) };
        let holds: Vec<Change> = (0..50_000)
            .map(|n| Change::Hold { key: long(n), owner: long(n), token: u64::from(n) + 1, lease_ms: 60_000 })
            .collect();
        let mut sizes = Vec::new();
        let mut decoded = 0;
        encode_snapshot_batches(&holds, CLOCK, |payload| {
            sizes.push(payload.len());
            match Record::decode(payload, CLOCK) {
                Ok(Record::Batch(changes)) => decoded += changes.len(),
                other => panic!("{other:?}"),
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(decoded, holds.len());
        assert!(sizes.len() > 50, "{} payloads", sizes.len());
        assert!(sizes.iter().all(|&size| size <= SNAPSHOT_PAYLOAD_BYTES + 4096), "{sizes:?}");
    }

    /// An operation that changed many keys with long lines is written as several records, each
    /// key's step whole in one of them; an ordinary one as one record.
    #[test]
    fn a_live_batch_too_large_for_one_record_is_cut_between_keys() {
        let key = |k: usize| -> Arc<[u8]> { Arc::from(format!("key{k}").as_bytes()) };
        let owner = |n: usize| -> Arc<[u8]> { Arc::from(format!("{n:01024}").as_bytes()) };
        let mut changes = Vec::new();
        for k in 0..300 {
            changes.push(Change::Free { key: key(k), cause: None });
            changes.extend((0..100).map(|n| Change::Leave { key: key(k), owner: owner(n) }));
        }
        let mut payload = Vec::new();
        let mut parts: Vec<Vec<Change>> = Vec::new();
        encode_live_batch(&changes, CLOCK, &mut payload, |part| {
            assert!(part.len() <= SNAPSHOT_PAYLOAD_BYTES + (200 << 10), "a part of {} bytes", part.len());
            match Record::decode(part, CLOCK) {
                Ok(Record::Batch(batch)) => parts.push(batch),
                other => panic!("{other:?}"),
            }
        });
        assert!(parts.len() > 10, "{} parts", parts.len());
        for pair in parts.windows(2) {
            assert_ne!(pair[0].last().unwrap().key(), pair[1][0].key(), "a key's step is never cut");
        }
        assert_eq!(parts.concat(), changes);

        let small = &changes[..101];
        let mut whole = Vec::new();
        encode_batch(small, CLOCK, &mut whole);
        let mut pushed = Vec::new();
        encode_live_batch(small, CLOCK, &mut payload, |part| pushed.push(part.to_vec()));
        assert_eq!(pushed, vec![whole]);
    }

    /// One key with a line of the greatest weight and as many owners owed DONE: cut into several
    /// payloads, each within the framing's bound, and replayed it is the key it was.
    #[test]
    fn a_key_too_heavy_for_one_payload_is_cut_and_comes_back_whole() {
        use crate::core::{Completion, CoreSettings, LockCore, LockRequest, Timestamp, TryOutcome};

        let key: Arc<[u8]> = Arc::from(&b"pull:huge"[..]);
        let owner = |prefix: &str, n: usize| -> Arc<[u8]> { Arc::from(format!("{prefix}{n:01020}").as_bytes()) };
        let places = MAX_QUEUE_BYTES / (1024 + crate::core::PLACE_BYTES);
        let completion = Arc::new(Completion {
            token: 7,
            finisher: Arc::from(&b"finisher"[..]),
            result: Some(Arc::from(&b"ok"[..])),
        });
        let mut changes = vec![Change::Finish { key: Arc::clone(&key), completion: Arc::clone(&completion) }];
        changes.extend((0..places).map(|n| Change::Owe {
            key: Arc::clone(&key),
            owner: owner("d", n),
            token: 7,
            until: 50_000,
        }));
        changes.push(Change::Hold {
            key: Arc::clone(&key),
            owner: Arc::from(&b"holder"[..]),
            token: 8,
            lease_ms: 60_000,
        });
        changes.extend((0..places).map(|n| Change::Join {
            key: Arc::clone(&key),
            owner: owner("q", n),
            lease_ms: 60_000,
        }));

        let settings = CoreSettings {
            default_lease_ms: 1_000,
            max_lease_ms: 60_000,
            release_on_disconnect: true,
            shards: 1,
            max_queue_bytes: MAX_QUEUE_BYTES,
        };
        let core = LockCore::new(settings, 1);
        let now = Timestamp::from_ms(1_000);
        let mut sizes = Vec::new();
        encode_snapshot_batches(&changes, CLOCK, |payload| {
            sizes.push(payload.len());
            match Record::decode(payload, CLOCK) {
                Ok(Record::Batch(batch)) => core.replay(batch, now),
                other => panic!("{other:?}"),
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(sizes.len() >= 4, "{sizes:?}");
        assert!(sizes.iter().all(|&size| size <= SNAPSHOT_KEY_PAYLOAD_BYTES + 4096), "{sizes:?}");
        core.finish_replay(9);
        let info = core.info(&key, now, 1).unwrap();
        assert_eq!(info.holder.map(|holder| (holder.owner, holder.token)), Some((Arc::from(&b"holder"[..]), 8)));
        assert_eq!(info.waiters, places);
        assert_eq!(info.queue, vec![owner("q", 0)], "in order");
        for n in [0, places - 1] {
            let owed = owner("d", n);
            let request = LockRequest { key: &key, owner: &owed, lease_ms: None, conn: std::num::NonZeroU64::MIN };
            assert!(matches!(core.try_lock(request, false, now), TryOutcome::Done(_)), "owner {n} is owed DONE");
        }
    }
}
