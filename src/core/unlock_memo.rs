//! The answers of a shard's most recent UNLOCKs, so that an UNLOCK retried after its reply was
//! lost (a dropped connection, a server restart; client libraries retry on both) gets the answer
//! the first one got instead of NOLOCK, and its client does not conclude the work was lost.
//!
//! Bounded by count, oldest forgotten first: a retry comes within seconds of the original, and a
//! hostile client must not be able to grow it.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;

use super::outcome::UnlockOutcome;

/// UNLOCKs remembered per shard.
pub(crate) const REMEMBERED_UNLOCKS: usize = 4096;

#[derive(Debug)]
pub(crate) struct Unlocked {
    pub(crate) key: Arc<[u8]>,
    pub(crate) owner: Arc<[u8]>,
    pub(crate) outcome: UnlockOutcome,
}

#[derive(Debug, Default)]
pub(crate) struct UnlockMemo {
    /// By token: tokens are unique within a shard, so a token finds at most one holding.
    by_token: HashMap<u64, Unlocked>,
    oldest_first: VecDeque<u64>,
}

impl UnlockMemo {
    pub(crate) fn remember(&mut self, token: u64, unlocked: Unlocked) {
        if self.by_token.insert(token, unlocked).is_none() {
            self.oldest_first.push_back(token);
        }
        while self.oldest_first.len() > REMEMBERED_UNLOCKS {
            if let Some(oldest) = self.oldest_first.pop_front() {
                self.by_token.remove(&oldest);
            }
        }
    }

    /// The answer the UNLOCK of `owner`'s holding `token` of `key` got, if it is remembered.
    pub(crate) fn answer(&self, key: &[u8], owner: &[u8], token: u64) -> Option<UnlockOutcome> {
        self.by_token
            .get(&token)
            .filter(|unlocked| *unlocked.key == *key && *unlocked.owner == *owner)
            .map(|unlocked| unlocked.outcome)
    }

    /// Oldest first, as a snapshot re-records them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Unlocked)> {
        self.oldest_first.iter().filter_map(|token| self.by_token.get(token).map(|unlocked| (*token, unlocked)))
    }
}
