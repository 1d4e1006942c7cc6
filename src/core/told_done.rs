//! Owners that were queued when the holder succeeded: each must learn DONE on its next TRY or WAIT
//! (instead of being granted the lock afresh) until its place would have run out. That includes
//! owners answered DONE at once in a blocked WAIT, whose answer may never have reached them.
//!
//! A SUCCESS over a line of millions leaves millions of these, and every change of the key looks
//! here, so both the lookup by owner and the expiry are indexed rather than scanned.

use std::collections::BTreeSet;
use std::sync::Arc;

use hashbrown::HashMap;

use super::footprint::{arc_bytes, extrapolate};
use super::outcome::Completion;

#[derive(Debug, Default)]
pub(crate) struct ToldDone {
    by_owner: HashMap<Arc<[u8]>, (u64, Arc<Completion>)>,
    by_deadline: BTreeSet<(u64, Arc<[u8]>)>,
}

impl ToldDone {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_owner.is_empty()
    }

    /// `owner` is owed `completion` until `until`.
    pub(crate) fn insert(&mut self, owner: Arc<[u8]>, until: u64, completion: Arc<Completion>) {
        if let Some((previous, _)) = self.by_owner.insert(Arc::clone(&owner), (until, completion)) {
            self.by_deadline.remove(&(previous, Arc::clone(&owner)));
        }
        self.by_deadline.insert((until, owner));
    }

    /// The DONE owed to `owner`, which is thereby paid.
    pub(crate) fn take(&mut self, owner: &[u8]) -> Option<(Arc<[u8]>, Arc<Completion>)> {
        let (owner, (until, completion)) = self.by_owner.remove_entry(owner)?;
        self.by_deadline.remove(&(until, Arc::clone(&owner)));
        Some((owner, completion))
    }

    /// The DONE of the completion `token` owed to `owner`, which is thereby paid. One of another
    /// completion (a later round's) stays owed.
    pub(crate) fn take_of(&mut self, owner: &[u8], token: u64) -> Option<Arc<[u8]>> {
        if self.by_owner.get(owner).is_none_or(|(_, completion)| completion.token != token) {
            return None;
        }
        self.take(owner).map(|(owner, _)| owner)
    }

    /// Forgets what is owed until `now` at most, telling `paid` of each owner.
    pub(crate) fn drop_expired(&mut self, now: u64, mut paid: impl FnMut(Arc<[u8]>)) {
        while let Some((until, _)) = self.by_deadline.first()
            && *until <= now
        {
            if let Some((_, owner)) = self.by_deadline.pop_first() {
                self.by_owner.remove(&owner);
                paid(owner);
            }
        }
    }

    /// Every owner owed a DONE, with what and until when.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<[u8]>, u64, &Arc<Completion>)> {
        self.by_owner.iter().map(|(owner, (until, completion))| (owner, *until, completion))
    }

    /// The bytes the owed DONEs take, estimated from `samples` of them (see `footprint`): each
    /// owner's entry in both indexes and its name; the completions are the key's to count.
    pub(crate) fn footprint(&self, samples: usize) -> usize {
        let entry = size_of::<(Arc<[u8]>, (u64, Arc<Completion>))>() + 1 + size_of::<(u64, Arc<[u8]>)>();
        extrapolate(self.by_owner.len(), self.by_owner.keys().map(|owner| entry + arc_bytes(owner)), samples)
    }

    /// One of the completions owed (usually all owed are the same one).
    pub(crate) fn any_completion(&self) -> Option<&Arc<Completion>> {
        self.by_owner.values().next().map(|(_, completion)| completion)
    }

    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.by_deadline.first().map(|(until, _)| *until)
    }
}
