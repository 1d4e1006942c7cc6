//! The answers of a shard's most recent UNLOCKs, so that an UNLOCK retried after its reply was
//! lost (a dropped connection, a server restart; client libraries retry on both) gets the answer
//! the first one got instead of NOLOCK, and its client does not conclude the work was lost.
//!
//! Bounded by count: a retry comes within seconds of the original, and a hostile client must not
//! be able to grow it. A shard's tokens are consecutive (one per grant), so the memo is a ring
//! indexed by token: remembering costs one slot write on the UNLOCK path (no hashing, no
//! allocation once the ring exists), and an UNLOCK is remembered until as many later grants of
//! its shard have passed as the ring has slots: [`REMEMBERED_UNLOCKS`] shared among the shards,
//! so that memory does not grow with `--shards` (at least [`MIN_SLOTS`] each).

use std::sync::Arc;

use super::outcome::UnlockOutcome;

/// UNLOCK answers remembered by the whole server (a few megabytes when all are in use).
pub(crate) const REMEMBERED_UNLOCKS: usize = 32_768;
const MIN_SLOTS: usize = 16;

#[derive(Debug)]
pub(crate) struct Unlocked {
    pub(crate) key: Arc<[u8]>,
    pub(crate) owner: Arc<[u8]>,
    pub(crate) outcome: UnlockOutcome,
}

#[derive(Debug)]
pub(crate) struct UnlockMemo {
    /// Slot `token % slots` holds the UNLOCK of `token`, until a later token takes the slot.
    /// Allocated at the shard's first UNLOCK.
    ring: Vec<Option<(u64, Unlocked)>>,
    slots: usize,
}

impl UnlockMemo {
    /// The memo of one of `shards` shards.
    pub(crate) fn for_one_of(shards: usize) -> UnlockMemo {
        UnlockMemo { ring: Vec::new(), slots: (REMEMBERED_UNLOCKS / shards.max(1)).max(MIN_SLOTS) }
    }

    pub(crate) fn remember(&mut self, token: u64, unlocked: Unlocked) {
        if self.ring.is_empty() {
            self.ring.resize_with(self.slots, || None);
        }
        let slot = self.slot_of(token);
        let slot = &mut self.ring[slot];
        // A token older than the slot's (a replay out of order) must not evict a newer one.
        if slot.as_ref().is_none_or(|(held, _)| *held <= token) {
            *slot = Some((token, unlocked));
        }
    }

    /// The answer the UNLOCK of `owner`'s holding `token` of `key` got, if it is remembered.
    pub(crate) fn answer(&self, key: &[u8], owner: &[u8], token: u64) -> Option<UnlockOutcome> {
        self.ring
            .get(self.slot_of(token))?
            .as_ref()
            .filter(|(held, unlocked)| *held == token && *unlocked.key == *key && *unlocked.owner == *owner)
            .map(|(_, unlocked)| unlocked.outcome)
    }

    /// Oldest first, as a snapshot re-records them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Unlocked)> {
        let mut remembered: Vec<(u64, &Unlocked)> =
            self.ring.iter().flatten().map(|(token, unlocked)| (*token, unlocked)).collect();
        remembered.sort_unstable_by_key(|(token, _)| *token);
        remembered.into_iter()
    }

    fn slot_of(&self, token: u64) -> usize {
        // The remainder is below `slots`, a usize.
        (token % self.slots as u64) as usize
    }
}
