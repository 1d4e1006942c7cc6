//! Decoding a batch of lock-state changes: the payload of a journal record, of a snapshot's
//! chunk and of a Raft entry. Those are CRC-checked before they get here, so garbage is rare, but
//! a record written by another version or damaged in a way the CRC misses must be refused with an
//! error, never a panic or an allocation the input does not pay for. Whatever decodes must encode
//! back to a batch that decodes to the same changes (recovery replays exactly what was written).
//!
//! Input: 24 bytes of clock (the wall clock when the server's read zero, now, the furthest a
//! deadline may lie ahead), then the batch.
#![no_main]

use baton::core::{BATCH_PART_BYTES, ChangeEncoder, WallClock, decode_changes};
use libfuzzer_sys::fuzz_target;

fn u64_at(input: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(input[at..at + 8].try_into().unwrap())
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 24 {
        return;
    }
    // Clocks a server can have: the wall clock within the next eight thousand years, its own
    // clock and the longest lease within thirty.
    let clock = WallClock {
        wall_ms_at_zero: u64_at(input, 0) >> 16,
        now_ms: u64_at(input, 8) >> 24,
        max_ahead_ms: u64_at(input, 16) >> 24,
    };
    let Ok(changes) = decode_changes(&input[24..], clock) else { return };
    let mut encoder = ChangeEncoder::new(clock.wall_ms_at_zero, BATCH_PART_BYTES);
    for change in &changes {
        encoder.push(change.as_ref());
    }
    let mut again = Vec::new();
    for part in encoder.parts() {
        again.extend(decode_changes(part, clock).expect("an encoded batch decodes"));
    }
    assert_eq!(again, changes, "decoded changes encode back to themselves");
});
