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

use super::outcome::UnlockOutcome;

/// UNLOCK answers remembered by the whole server (a few megabytes when all are in use).
pub(crate) const REMEMBERED_UNLOCKS: usize = 32_768;
const MIN_SLOTS: usize = 16;

/// One remembered UNLOCK. The key and the owner are copied into one buffer that the slot keeps
/// for the next UNLOCK it remembers: remembering allocates nothing once the ring has been round
/// (sharing the key's and the owner's strings instead cost an allocation and two releases of
/// cold reference counts per UNLOCK, 4-5% of the server's CPU under pipelined TRY+UNLOCK).
#[derive(Debug, Default)]
struct Slot {
    /// 0 while empty (tokens start at 1).
    token: u64,
    key_len: usize,
    key_and_owner: Vec<u8>,
    outcome: Option<UnlockOutcome>,
}

impl Slot {
    fn key(&self) -> &[u8] {
        &self.key_and_owner[..self.key_len]
    }

    fn owner(&self) -> &[u8] {
        &self.key_and_owner[self.key_len..]
    }
}

/// A remembered UNLOCK, as a snapshot re-records it.
pub(crate) struct Unlocked<'a> {
    pub(crate) token: u64,
    pub(crate) key: &'a [u8],
    pub(crate) owner: &'a [u8],
    pub(crate) outcome: UnlockOutcome,
}

#[derive(Debug)]
pub(crate) struct UnlockMemo {
    /// Slot `token % slots` holds the UNLOCK of `token`, until a later token takes the slot.
    /// Allocated at the shard's first UNLOCK.
    ring: Vec<Slot>,
    slots: usize,
}

impl UnlockMemo {
    /// The memo of one of `shards` shards.
    pub(crate) fn for_one_of(shards: usize) -> UnlockMemo {
        UnlockMemo { ring: Vec::new(), slots: (REMEMBERED_UNLOCKS / shards.max(1)).max(MIN_SLOTS) }
    }

    pub(crate) fn remember(&mut self, token: u64, key: &[u8], owner: &[u8], outcome: UnlockOutcome) {
        if self.ring.is_empty() {
            self.ring.resize_with(self.slots, Slot::default);
        }
        let slot = self.slot_of(token);
        let slot = &mut self.ring[slot];
        // A token older than the slot's (a replay out of order) must not evict a newer one.
        if slot.token > token {
            return;
        }
        let bytes = key.len() + owner.len();
        // One long key must not pin its room in the slot for good.
        if slot.key_and_owner.capacity() > 2 * bytes + 64 {
            slot.key_and_owner = Vec::new();
        }
        slot.key_and_owner.clear();
        slot.key_and_owner.extend_from_slice(key);
        slot.key_and_owner.extend_from_slice(owner);
        slot.key_len = key.len();
        slot.token = token;
        slot.outcome = Some(outcome);
    }

    /// The answer the UNLOCK of `owner`'s holding `token` of `key` got, if it is remembered.
    pub(crate) fn answer(&self, key: &[u8], owner: &[u8], token: u64) -> Option<UnlockOutcome> {
        self.ring
            .get(self.slot_of(token))
            .filter(|slot| slot.token == token && slot.key() == key && slot.owner() == owner)
            .and_then(|slot| slot.outcome)
    }

    /// Oldest first, as a snapshot re-records them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Unlocked<'_>> {
        let mut remembered: Vec<Unlocked<'_>> = self
            .ring
            .iter()
            .filter_map(|slot| {
                let outcome = slot.outcome?;
                Some(Unlocked { token: slot.token, key: slot.key(), owner: slot.owner(), outcome })
            })
            .collect();
        remembered.sort_unstable_by_key(|unlocked| unlocked.token);
        remembered.into_iter()
    }

    fn slot_of(&self, token: u64) -> usize {
        // The remainder is below `slots`, a usize.
        (token % self.slots as u64) as usize
    }
}
