//! A shard's timers: a hierarchical timing wheel (as in tokio's and Varghese & Lauck's) of
//! (deadline, key hash) entries.
//!
//! Why a wheel: a binary heap costs O(log n) cache misses to push and pop, breaks ties between
//! equal deadlines (common at millisecond resolution) by comparing keys, and each of its entries
//! holds a copy of its key. Here arming pushes onto the end of one slot's vector, firing pops from
//! one, and an entry moves down a level at most once per level (six bits of the deadline each),
//! so every operation is O(1) amortized. An entry names its key by hash alone: the shard finds
//! the key through its table and checks that the key's timer is armed at the entry's deadline
//! (entries whose key moved its timer or went are skipped, or purged, by the shard).
//!
//! Level `l` has 64 slots of 64^l ms each and holds the entries whose deadline differs from
//! `elapsed` first in bits `6l..6l+6`. Eleven levels cover every `u64` deadline, so none needs
//! clamping; levels are added only once a deadline needs them (three for the default 30 s lease).

use std::mem;

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;

/// Room for entries that a slot of level 0 keeps once emptied: those slots fill again every
/// 64 ms, and freeing and growing their vectors each time was the wheel's main cost. Room beyond
/// this (a burst) is given back.
const KEPT_ROOM: usize = 64;

/// How far a purge has got: a slot of a level, and a position in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PurgeCursor {
    level: usize,
    slot: usize,
    position: usize,
}

/// The key with this hash is due at `deadline` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timer {
    pub(crate) deadline: u64,
    pub(crate) hash: u64,
}

#[derive(Debug)]
struct Slot {
    entries: Vec<Timer>,
    /// The earliest deadline among `entries` (`u64::MAX` while empty), so that the next deadline
    /// is known without scanning a slot that may hold a million entries.
    earliest: u64,
}

impl Slot {
    const EMPTY: Slot = Slot { entries: Vec::new(), earliest: u64::MAX };
}

#[derive(Debug)]
struct Level {
    /// Bit `i` is set while slot `i` has entries.
    occupied: u64,
    slots: [Slot; SLOTS],
}

impl Level {
    fn new() -> Level {
        Level { occupied: 0, slots: [Slot::EMPTY; SLOTS] }
    }

    /// Empties slot `index`, handing back its entries (and their memory).
    fn take(&mut self, index: usize) -> Vec<Timer> {
        self.occupied &= !(1 << index);
        mem::replace(&mut self.slots[index], Slot::EMPTY).entries
    }
}

#[derive(Debug)]
pub(crate) struct Timers {
    /// A level is 2 KiB: only as many exist as the furthest deadline needs, and none while no
    /// timer is armed.
    levels: Vec<Level>,
    /// Every entry due before this moment has been handed out; entries are placed relative to it.
    elapsed: u64,
    len: usize,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers { levels: Vec::new(), elapsed: 0, len: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn arm(&mut self, deadline: u64, hash: u64) {
        self.place(Timer { deadline, hash });
        self.len += 1;
    }

    /// A deadline already past is placed at `elapsed`, so it is handed out by the next call.
    fn place(&mut self, entry: Timer) {
        let at = entry.deadline.max(self.elapsed);
        let level = level_for(self.elapsed, at);
        while self.levels.len() <= level {
            self.levels.push(Level::new());
        }
        let index = slot_index(at, level);
        let level = &mut self.levels[level];
        level.occupied |= 1 << index;
        let slot = &mut level.slots[index];
        slot.entries.push(entry);
        slot.earliest = slot.earliest.min(entry.deadline);
    }

    /// The earliest occupied slot as (level, slot index, the moment the slot starts). Slots of a
    /// lower level all end before the next occupied slot of a higher one begins.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        self.levels.iter().enumerate().find_map(|(level, slots)| {
            let index = slots.occupied.trailing_zeros() as usize;
            (index < SLOTS).then(|| (level, index, slot_start(self.elapsed, level, index)))
        })
    }

    /// Takes out one entry due at `now`, if any. Slots of higher levels that start by `now` are
    /// moved down on the way.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<Timer> {
        while let Some((level, index, start)) = self.next_slot()
            && start <= now
        {
            self.elapsed = self.elapsed.max(start);
            if level == 0 {
                let slots = &mut self.levels[0];
                let slot = &mut slots.slots[index];
                let entry = slot.entries.pop();
                if slot.entries.is_empty() {
                    slots.occupied &= !(1 << index);
                    slot.earliest = u64::MAX;
                    if slot.entries.capacity() > KEPT_ROOM {
                        slot.entries = Vec::new();
                    }
                }
                self.len -= 1;
                if self.len == 0 {
                    // A shard with no timer left keeps no level: with many shards (up to 65,536)
                    // and few keys each, a few KiB of levels a shard would outweigh the keys.
                    self.levels.clear();
                }
                return entry;
            }
            for entry in self.levels[level].take(index) {
                self.place(entry);
            }
        }
        // Every occupied slot starts after `now`, so entries armed from now on can be placed
        // relative to it, on lower levels.
        self.elapsed = self.elapsed.max(now);
        None
    }

    /// The earliest deadline of any entry, due or not.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.next_slot().map(|(level, index, _)| self.levels[level].slots[index].earliest)
    }

    /// Goes on with a purge: examines up to `budget` entries (and empty slots) from `cursor` on,
    /// dropping those `live` rejects and giving back their memory. Returns where to go on from,
    /// or None once the pass has visited every slot. Spread over many calls, a pass costs every
    /// caller a bounded slice instead of one caller a walk of every timer; arming and firing in
    /// between only touch slots' ends (or empty them), so a cursor stays meaningful, and an entry
    /// it skips for that is left to the next pass.
    pub(crate) fn purge_step(
        &mut self,
        cursor: PurgeCursor,
        mut budget: usize,
        mut live: impl FnMut(Timer) -> bool,
    ) -> Option<PurgeCursor> {
        let PurgeCursor { mut level, mut slot, mut position } = cursor;
        let Timers { levels, len, .. } = self;
        while level < levels.len() {
            if budget == 0 {
                return Some(PurgeCursor { level, slot, position });
            }
            let Level { occupied, slots } = &mut levels[level];
            let whole_slot = position == 0;
            let mut kept_earliest = u64::MAX;
            let entries = &mut slots[slot].entries;
            while position < entries.len() {
                if budget == 0 {
                    return Some(PurgeCursor { level, slot, position });
                }
                budget -= 1;
                if live(entries[position]) {
                    kept_earliest = kept_earliest.min(entries[position].deadline);
                    position += 1;
                } else {
                    entries.swap_remove(position);
                    *len -= 1;
                }
            }
            if entries.is_empty() {
                *occupied &= !(1 << slot);
                slots[slot] = Slot::EMPTY;
            } else {
                if entries.capacity() > 2 * entries.len() + KEPT_ROOM {
                    entries.shrink_to_fit();
                }
                // A slot seen in parts keeps its old `earliest`, which may now be early: the
                // wake-up it causes finds nothing due.
                if whole_slot {
                    slots[slot].earliest = kept_earliest;
                }
            }
            budget = budget.saturating_sub(1);
            position = 0;
            slot += 1;
            if slot == SLOTS {
                slot = 0;
                level += 1;
            }
        }
        while levels.last().is_some_and(|level| level.occupied == 0) {
            levels.pop();
        }
        None
    }

    /// Entries the slots have room for (tests check it shrinks).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.levels.iter().flat_map(|level| &level.slots).map(|slot| slot.entries.capacity()).sum()
    }
}

/// The level whose slots tell `at` apart from `elapsed` by the highest bit where they differ.
fn level_for(elapsed: u64, at: u64) -> usize {
    let differing = (elapsed ^ at) | (SLOTS as u64 - 1);
    ((u64::BITS - 1 - differing.leading_zeros()) / SLOT_BITS) as usize
}

fn slot_index(at: u64, level: usize) -> usize {
    ((at >> (level as u32 * SLOT_BITS)) as usize) & (SLOTS - 1)
}

/// Where slot `index` of `level` starts, in the span of that level that holds `elapsed`.
fn slot_start(elapsed: u64, level: usize, index: usize) -> u64 {
    let slot_bits = level as u32 * SLOT_BITS;
    let level_span_mask = u64::MAX.checked_shl(slot_bits + SLOT_BITS).unwrap_or(0);
    (elapsed & level_span_mask) + ((index as u64) << slot_bits)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn due(timers: &mut Timers, now: u64) -> Vec<u64> {
        let mut deadlines: Vec<u64> = std::iter::from_fn(|| timers.pop_due(now)).map(|timer| timer.deadline).collect();
        deadlines.sort_unstable();
        deadlines
    }

    #[test]
    fn entries_are_due_at_their_deadline_on_every_level() {
        let mut timers = Timers::new();
        let deadlines = [3, 63, 64, 500, 4_096, 300_000, 3_600_000, 1 << 40, u64::MAX];
        for (hash, deadline) in deadlines.into_iter().enumerate().rev() {
            timers.arm(deadline, hash as u64);
        }
        for deadline in deadlines {
            assert_eq!(timers.next_deadline(), Some(deadline));
            assert_eq!(due(&mut timers, deadline - 1), Vec::<u64>::new(), "nothing before {deadline}");
            assert_eq!(due(&mut timers, deadline), vec![deadline]);
        }
        assert_eq!((timers.len(), timers.next_deadline(), timers.levels.len()), (0, None, 0));
    }

    #[test]
    fn a_deadline_already_past_is_due_at_once() {
        let mut timers = Timers::new();
        timers.arm(5_000, 1);
        assert_eq!(due(&mut timers, 4_000), Vec::<u64>::new());
        timers.arm(10, 2);
        assert_eq!(timers.next_deadline(), Some(10));
        assert_eq!(due(&mut timers, 4_000), vec![10]);
        assert_eq!(due(&mut timers, 5_000), vec![5_000]);
    }

    fn purge(timers: &mut Timers, budget: usize, live: impl Fn(Timer) -> bool) -> usize {
        let mut steps = 0;
        let mut cursor = Some(PurgeCursor::default());
        while let Some(at) = cursor {
            cursor = timers.purge_step(at, budget, &live);
            steps += 1;
        }
        steps
    }

    #[test]
    fn a_purge_drops_the_rejected_and_their_memory() {
        for budget in [usize::MAX, 100] {
            let mut timers = Timers::new();
            for hash in 0..10_000 {
                timers.arm(1_000 + hash % 3_000, hash);
            }
            let steps = purge(&mut timers, budget, |timer| timer.hash == 7);
            assert!(budget == usize::MAX || steps > 10_000 / budget, "{steps} steps");
            assert_eq!(timers.len(), 1);
            assert!(timers.next_deadline().is_some_and(|next| next <= 1_007));
            assert!(timers.capacity() < 10, "{}", timers.capacity());
            assert_eq!(due(&mut timers, u64::MAX), vec![1_007]);
        }
    }

    #[test]
    fn entries_armed_and_fired_during_a_purge_are_kept_or_handed_out() {
        let mut timers = Timers::new();
        for hash in 0..2_000 {
            timers.arm(100 + hash, hash);
        }
        let mut cursor = Some(PurgeCursor::default());
        let mut fired = Vec::new();
        let mut next_hash = 2_000;
        let mut now = 0;
        while let Some(at) = cursor {
            // Odd hashes are live; between steps new entries are armed and due ones fire.
            cursor = timers.purge_step(at, 7, |timer| timer.hash % 2 == 1);
            timers.arm(now + 50, next_hash);
            next_hash += 1;
            now += 3;
            while let Some(timer) = timers.pop_due(now) {
                fired.push(timer.hash);
            }
        }
        while let Some(timer) = timers.pop_due(u64::MAX) {
            fired.push(timer.hash);
        }
        for hash in (1..next_hash).step_by(2) {
            assert!(fired.contains(&hash), "live entry {hash} lost");
        }
    }

    #[test]
    fn an_emptied_slot_gives_back_the_room_a_burst_took() {
        let mut timers = Timers::new();
        for hash in 0..10 * KEPT_ROOM as u64 {
            timers.arm(5, hash);
        }
        assert_eq!(due(&mut timers, 5).len(), 10 * KEPT_ROOM);
        assert_eq!(timers.capacity(), 0);
    }

    proptest! {
        /// Against a plain list: whatever is armed when, and whenever it is asked, exactly the
        /// entries due are handed out, and the next deadline is the earliest left.
        #[test]
        fn hands_out_exactly_what_is_due(
            steps in prop::collection::vec(
                (0u64..200, prop::collection::vec((0u32..40, any::<u64>(), 0u64..3), 0..8)),
                1..60,
            ),
        ) {
            let mut timers = Timers::new();
            let mut armed = Vec::new();
            let mut now = 0;
            for (hash, (advance, leases)) in steps.into_iter().enumerate() {
                // Leases of every order of magnitude up to 2^40 ms, and a few deadlines just past.
                for (bits, lease, back) in leases {
                    let deadline = (now + (lease & ((1 << bits) - 1))).saturating_sub(back);
                    timers.arm(deadline, hash as u64);
                    armed.push(deadline);
                }
                now += advance * advance * advance;
                let mut expected: Vec<u64> = armed.iter().copied().filter(|deadline| *deadline <= now).collect();
                expected.sort_unstable();
                armed.retain(|deadline| *deadline > now);
                prop_assert_eq!(due(&mut timers, now), expected);
                prop_assert_eq!(timers.next_deadline(), armed.iter().copied().min());
                prop_assert_eq!(timers.len(), armed.len());
            }
        }
    }
}
