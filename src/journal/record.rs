//! What the journal's payloads mean: batches of the core's [`Change`]s (encoded by the core,
//! see [`crate::core::ChangeEncoder`]), token reservations and the marks that close a snapshot.
//! The log under it only stores bytes.

pub(crate) use crate::core::DecodeError;
use crate::core::{BATCH_PART_BYTES, Change, ChangeEncoder, Input, ReleaseCause, WallClock, decode_changes, put_u64};

use super::Lsn;

const BATCH: u8 = 1;
const RESERVE: u8 = 2;
const SNAPSHOT_MARKS: u8 = 3;
const LEASE_CEILING: u8 = 4;

/// One payload of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// The changes one core operation made: one of the parts a [`crate::core::ChangeSink`] takes.
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

impl Record {
    pub(crate) fn encode(&self, clock: WallClock, out: &mut Vec<u8>) {
        match self {
            Record::Batch(changes) => {
                out.push(BATCH);
                encode_batch(changes, clock, out);
            }
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
            BATCH => return decode_changes(input.bytes, clock).map(Record::Batch),
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

// A live part is what precedes a key boundary past BATCH_PART_BYTES, plus that key's whole step.
const _: () = assert!(BATCH_PART_BYTES + MAX_QUEUE_BYTES + (4 << 20) <= super::frame::MAX_PAYLOAD_BYTES);

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
        payload.push(BATCH);
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

/// Encodes a batch of changes (a snapshot's, a test's) as the live core encodes its own.
fn encode_batch(changes: &[Change], clock: WallClock, out: &mut Vec<u8>) {
    let mut encoder = ChangeEncoder::new(clock.wall_ms_at_zero, usize::MAX);
    for change in changes {
        encoder.push(change.as_ref());
    }
    for part in encoder.parts() {
        out.extend_from_slice(part);
    }
}

/// The payload of a batch the core encoded: one of [`ChangeEncoder::parts`] after its type.
pub(crate) fn batch_payload(part: &[u8]) -> [&[u8]; 2] {
    [&[BATCH], part]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::core::{Completion, UnlockOutcome};

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

        /// However small the parts, the live encoder's batches decode back to the changes, in
        /// order, and never cut a run of one key's changes.
        #[test]
        fn live_batches_come_back_whole_wherever_they_are_cut(changes in batch(), part_bytes in 1usize..64) {
            let mut encoder = ChangeEncoder::new(CLOCK.wall_ms_at_zero, part_bytes);
            changes.iter().for_each(|change| encoder.push(change.as_ref()));
            let mut parts: Vec<Vec<Change>> = Vec::new();
            for part in encoder.parts() {
                match Record::decode(&[&[BATCH], part].concat(), CLOCK) {
                    Ok(Record::Batch(batch)) => parts.push(batch),
                    other => panic!("{other:?}"),
                }
            }
            for pair in parts.windows(2) {
                prop_assert!(!pair[0].is_empty() && !pair[1].is_empty());
                prop_assert_ne!(pair[0].last().unwrap().key(), pair[1][0].key());
            }
            prop_assert_eq!(parts.concat(), changes);
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
    /// key's step whole in one of them; an ordinary one as one record, the same bytes as a
    /// snapshot's batch of the same changes.
    #[test]
    fn a_live_batch_too_large_for_one_record_is_cut_between_keys() {
        let key = |k: usize| -> Arc<[u8]> { Arc::from(format!("key{k}").as_bytes()) };
        let owner = |n: usize| -> Arc<[u8]> { Arc::from(format!("{n:01024}").as_bytes()) };
        let mut changes = Vec::new();
        for k in 0..300 {
            changes.push(Change::Free { key: key(k), cause: None });
            // Runs and batches of 128 changes and more take counts of several bytes.
            changes.extend((0..150).map(|n| Change::Leave { key: key(k), owner: owner(n) }));
        }
        let encode_live = |changes: &[Change]| {
            let mut encoder = ChangeEncoder::new(CLOCK.wall_ms_at_zero, BATCH_PART_BYTES);
            changes.iter().for_each(|change| encoder.push(change.as_ref()));
            encoder.parts().map(|part| [&[BATCH], part].concat()).collect::<Vec<_>>()
        };
        let mut parts: Vec<Vec<Change>> = Vec::new();
        for part in encode_live(&changes) {
            assert!(part.len() <= BATCH_PART_BYTES + (200 << 10), "a part of {} bytes", part.len());
            match Record::decode(&part, CLOCK) {
                Ok(Record::Batch(batch)) => parts.push(batch),
                other => panic!("{other:?}"),
            }
        }
        assert!(parts.len() > 10, "{} parts", parts.len());
        for pair in parts.windows(2) {
            assert_ne!(pair[0].last().unwrap().key(), pair[1][0].key(), "a key's step is never cut");
        }
        assert_eq!(parts.concat(), changes);

        let small = changes[..302].to_vec();
        let mut whole = Vec::new();
        Record::Batch(small.clone()).encode(CLOCK, &mut whole);
        assert_eq!(encode_live(&small), vec![whole]);
    }

    /// One key with a line of the greatest weight and as many owners owed DONE: cut into several
    /// payloads, each within the framing's bound, and replayed it is the key it was.
    #[test]
    fn a_key_too_heavy_for_one_payload_is_cut_and_comes_back_whole() {
        use crate::core::{Completion, CoreSettings, IfHeld, LockCore, LockRequest, Timestamp, TryOutcome};

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
            assert!(
                matches!(core.try_lock(request, IfHeld::Queue, now), TryOutcome::Done(_)),
                "owner {n} is owed DONE"
            );
        }
    }
}
