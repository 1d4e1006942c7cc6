//! Owners that were queued when the holder succeeded: each must learn DONE on its next TRY or WAIT
//! (instead of being granted the lock afresh) until its place would have run out. That includes
//! owners answered DONE at once in a blocked WAIT, whose answer may never have reached them.
//!
//! A SUCCESS over a line of millions leaves millions of these, and every change of the key looks
//! here, so both the lookup by owner and the expiry are indexed rather than scanned. A SUCCESS
//! owes every owner in line at once, nearly all until the same moment, and a blocked owner's
//! debt is paid moments later when its answer is written: so the deadline index is kept in
//! buckets by deadline and is only appended to. A payment or a later debt leaves the owner's old
//! entry there, skipped when its deadline comes (the owner's own entry says until when it is
//! owed); each lasts at most a lease.

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::HashMap;
use hashbrown::hash_map::EntryRef;

use super::footprint::{arc_bytes, extrapolate};
use super::outcome::Completion;

/// A DONE paid by an answer, kept by whoever writes the answer to be owed again if the write
/// fails ([`super::LockCore::done_unwritten`]).
#[derive(Debug)]
pub struct OwedDone {
    pub(crate) owner: Arc<[u8]>,
    pub(crate) until: u64,
    pub(crate) completion: Arc<Completion>,
}

#[derive(Debug, Default)]
pub(crate) struct ToldDone {
    by_owner: HashMap<Arc<[u8]>, (u64, Arc<Completion>)>,
    by_deadline: BTreeMap<u64, Vec<Arc<[u8]>>>,
    /// Entries in `by_deadline`, those left behind included.
    deadline_entries: usize,
}

impl ToldDone {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_owner.is_empty()
    }

    /// `owner` is owed `completion` until `until`.
    pub(crate) fn insert(&mut self, owner: Arc<[u8]>, until: u64, completion: Arc<Completion>) {
        self.by_deadline.entry(until).or_default().push(Arc::clone(&owner));
        self.deadline_entries += 1;
        self.by_owner.insert(owner, (until, completion));
    }

    /// The DONE owed to `owner`, which is thereby paid.
    pub(crate) fn take(&mut self, owner: &[u8]) -> Option<OwedDone> {
        let (owner, (until, completion)) = self.by_owner.remove_entry(owner)?;
        Some(OwedDone { owner, until, completion })
    }

    /// The DONE of the completion `token` owed to `owner`, which is thereby paid. One of another
    /// completion (a later round's) stays owed.
    pub(crate) fn take_of(&mut self, owner: &[u8], token: u64) -> Option<OwedDone> {
        match self.by_owner.entry_ref(owner) {
            EntryRef::Occupied(owed) if owed.get().1.token == token => {
                let (owner, (until, completion)) = owed.remove_entry();
                Some(OwedDone { owner, until, completion })
            }
            _ => None,
        }
    }

    pub(crate) fn owes(&self, owner: &[u8]) -> bool {
        self.by_owner.contains_key(owner)
    }

    /// Forgets what is owed until `now` at most, telling `paid` of each owner.
    pub(crate) fn drop_expired(&mut self, now: u64, mut paid: impl FnMut(Arc<[u8]>)) {
        while let Some(entry) = self.by_deadline.first_entry()
            && *entry.key() <= now
        {
            let (until, owners) = entry.remove_entry();
            self.deadline_entries -= owners.len();
            for owner in owners {
                if self.by_owner.get(&owner).is_some_and(|(owed_until, _)| *owed_until == until) {
                    self.by_owner.remove(&owner);
                    paid(owner);
                }
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
        let entry = size_of::<(Arc<[u8]>, (u64, Arc<Completion>))>() + 1;
        let owed =
            extrapolate(self.by_owner.len(), self.by_owner.keys().map(|owner| entry + arc_bytes(owner)), samples);
        owed + self.deadline_entries * size_of::<Arc<[u8]>>()
    }

    /// One of the completions owed (usually all owed are the same one).
    pub(crate) fn any_completion(&self) -> Option<&Arc<Completion>> {
        self.by_owner.values().next().map(|(_, completion)| completion)
    }

    /// The earliest deadline of the index, which may be a left entry's: an early wake-up.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.by_deadline.first_key_value().map(|(until, _)| *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(token: u64) -> Arc<Completion> {
        Arc::new(Completion { token, finisher: Arc::from(&b"f"[..]), result: None })
    }

    fn expire(told: &mut ToldDone, now: u64) -> Vec<Arc<[u8]>> {
        let mut paid = Vec::new();
        told.drop_expired(now, |owner| paid.push(owner));
        paid
    }

    #[test]
    fn an_entry_left_by_a_payment_or_a_new_debt_never_expires_the_owners_debt() {
        let mut told = ToldDone::default();
        let owner = |name: &str| Arc::<[u8]>::from(name.as_bytes());
        told.insert(owner("a"), 10, completion(1));
        told.insert(owner("b"), 10, completion(1));
        told.insert(owner("c"), 10, completion(1));
        // a is paid, then owed a later round's DONE until later; b is owed a later one sooner.
        assert_eq!(told.take_of(b"a", 1).map(|paid| paid.until), Some(10));
        told.insert(owner("a"), 30, completion(2));
        told.insert(owner("b"), 5, completion(2));
        assert!(told.take_of(b"c", 2).is_none(), "c is owed round 1's, not round 2's");
        assert_eq!(told.next_deadline(), Some(5));
        assert_eq!(expire(&mut told, 5), [owner("b")]);
        assert_eq!(expire(&mut told, 10), [owner("c")], "a's entry at 10 was left by its payment");
        assert_eq!(told.take(b"a").map(|paid| paid.completion.token), Some(2));
        assert!(told.is_empty());
        assert_eq!(told.next_deadline(), Some(30), "a left entry only wakes the key early");
        assert_eq!(expire(&mut told, 30), Vec::<Arc<[u8]>>::new());
        assert_eq!((told.next_deadline(), told.deadline_entries), (None, 0));
    }
}
