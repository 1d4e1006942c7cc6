//! The FIFO line of one key: owners waiting for the lock, blocked in LOCK.WAIT or holding a leased
//! place.
//!
//! A hostile client can put millions of owners in one line, so no operation here walks it: each
//! waiter is found through an index (by owner, by the moment its place runs out, by connection)
//! and the line itself is a [`RankedMap`] keyed by join order, which also gives an owner's
//! position. Joining, leaving from anywhere, blocking, unblocking, the hand-off at the head and
//! each place that runs out cost O(log n) in the line's length.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;

use super::ConnId;
use super::footprint::extrapolate;
use super::mailbox::{Letter, Mailbox, WakeNow};
use super::outcome::{Answer, DoneToWrite, HandedTo};
use super::ranked::RankedMap;

/// Why a blocked WAIT stops waiting without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitEnds {
    /// Its timeout (or CLIENT UNBLOCK): the owner keeps its place for its queue lease.
    TimedOut,
    /// Its connection went: the owner leaves the line.
    Abandoned,
}

/// Where an owner stands in one key's line: the order in which it joined. Never reused while the
/// line exists, so a stale one finds nobody or is told apart by its WAIT's number.
pub(crate) type Place = u64;

/// One blocked LOCK.WAIT call: its connection's mailbox and the number the WAIT opened it under.
/// Dropped unanswered (its owner cancelled, the node's locks forgotten), it tells the WAIT so.
#[derive(Debug)]
pub(crate) struct Blocker {
    mailbox: Arc<Mailbox>,
    /// 0 once the WAIT has been answered or has stopped waiting.
    number: u64,
}

impl Blocker {
    pub(crate) fn open(mailbox: &Arc<Mailbox>) -> Blocker {
        Blocker { mailbox: Arc::clone(mailbox), number: mailbox.open() }
    }

    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    pub(crate) fn conn(&self) -> ConnId {
        self.mailbox.conn()
    }

    fn is(&self, mailbox: &Mailbox, number: u64) -> bool {
        std::ptr::eq(&*self.mailbox, mailbox) && self.number == number
    }

    /// Answers the WAIT. False when it was no longer listening (its connection went without
    /// handing its ticket back): nobody will read the answer.
    pub(crate) fn answer(mut self, answer: Answer) -> bool {
        let number = std::mem::take(&mut self.number);
        self.mailbox.post(number, Letter::Answer(answer))
    }

    /// Answers the WAIT with a grant that the connection whose request made it writes to the
    /// client itself where it can, then wakes the WAIT (see `Mailbox::post_for_direct_write`);
    /// `handed_to` learns where. False as for [`Self::answer`].
    pub(crate) fn hand_over(mut self, answer: Answer, handed_to: &mut HandedTo) -> bool {
        let number = std::mem::take(&mut self.number);
        let posted = self.mailbox.post_for_direct_write(number, Letter::Answer(answer)).is_some();
        if posted {
            handed_to.push((Arc::clone(&self.mailbox), number));
        }
        posted
    }

    /// Answers the WAIT with a DONE of `owner`'s that the connection whose SUCCESS made it writes
    /// to the client itself, where it can and its thread serves the WAIT's connection; `dones`
    /// learns which (see `LockCore::write_dones_directly`). False as for [`Self::answer`].
    pub(crate) fn tell_done(mut self, answer: Answer, owner: &Arc<[u8]>, dones: &mut Vec<DoneToWrite>) -> bool {
        let number = std::mem::take(&mut self.number);
        match self.mailbox.post_for_direct_write(number, Letter::Answer(answer)) {
            Some(WakeNow::Later) => dones.push((Arc::clone(&self.mailbox), number, Arc::clone(owner))),
            Some(WakeNow::Yes) => {}
            None => return false,
        }
        true
    }

    /// The WAIT gave up and was taken out of the line: nothing is to be posted to it.
    fn dismiss(mut self) {
        self.number = 0;
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        if self.number != 0 {
            self.mailbox.post(self.number, Letter::Withdrawn);
        }
    }
}

/// An owner's blocked WAITs, oldest first: nearly always one, kept inline so that it takes no
/// allocation of its own (the vector's own 24 bytes hold it).
pub(crate) type Blockers = SmallVec<[Blocker; 1]>;

#[derive(Debug)]
pub(crate) struct Waiter {
    /// Its own copy, unshared: a short owner takes an 8-byte allocation, where a shared one took
    /// 32 with its counts. What needs it shared (the holder it becomes, a record) copies it then.
    pub(crate) owner: Box<[u8]>,
    /// The lease the owner asked for, used when it is granted.
    pub(crate) lease_ms: u64,
    /// When an owner with no blocked WAIT loses its place. Ignored while it is blocked.
    pub(crate) expires_at: u64,
    /// Blocked LOCK.WAIT calls of this owner (normally zero or one), oldest first.
    pub(crate) blockers: Blockers,
    /// The connection of the owner's last TRY or WAIT: the one a grant binds to when the owner is
    /// not blocked at hand-off time.
    pub(crate) conn: ConnId,
}

impl Waiter {
    pub(crate) fn is_blocked(&self) -> bool {
        !self.blockers.is_empty()
    }

    /// What this waiter takes in its line: its node, its owner, its entries in the indexes, and
    /// its blocked WAITs.
    fn footprint(&self) -> usize {
        let indexes = size_of::<Place>()
            + 1
            + size_of::<(ConnId, Place)>()
            + if self.is_blocked() { 0 } else { size_of::<(u64, Place)>() };
        let blockers = if self.blockers.spilled() { self.blockers.capacity() * size_of::<Blocker>() } else { 0 };
        RankedMap::<Waiter>::ENTRY_BYTES + self.owner.len() + indexes + blockers
    }
}

/// The indexes over the parts of a waiter that change while it is in line. Kept apart from the
/// line so a waiter can be borrowed from one while the other is updated.
#[derive(Debug, Default)]
struct Indexes {
    /// (expires_at, place) of every waiter that is not blocked.
    expiries: BTreeSet<(u64, Place)>,
    /// (conn, place) for each connection a waiter is bound to: the one its grant would bind to,
    /// and those of its blocked WAITs. Nearly always the same one, so one entry a waiter (a
    /// separate count of blocked WAITs per connection took a hash table entry more).
    by_conn: BTreeSet<(ConnId, Place)>,
    blocked: usize,
}

impl Indexes {
    fn add(&mut self, place: Place, waiter: &Waiter) {
        self.by_conn.insert((waiter.conn, place));
        if waiter.is_blocked() {
            self.blocked += 1;
        } else {
            self.expiries.insert((waiter.expires_at, place));
        }
        for blocker in &waiter.blockers {
            self.by_conn.insert((blocker.conn(), place));
        }
    }

    fn remove(&mut self, place: Place, waiter: &Waiter) {
        self.by_conn.remove(&(waiter.conn, place));
        if waiter.is_blocked() {
            self.blocked -= 1;
        } else {
            self.expiries.remove(&(waiter.expires_at, place));
        }
        for blocker in &waiter.blockers {
            self.by_conn.remove(&(blocker.conn(), place));
        }
    }
}

/// What a place weighs besides its owner's bytes: about what a change naming it takes in a
/// journal record (an owed DONE: a tag, the owner's length, a token and a deadline).
pub(crate) const PLACE_BYTES: usize = 24;

#[derive(Debug, Default)]
pub(crate) struct Queue {
    line: RankedMap<Waiter>,
    next_place: Place,
    /// Each waiter's place, hashed by its owner, whose bytes stay in the line: 8 bytes an entry
    /// where keying a map by the owner took 24. Never left to rehash itself (see `index_owner`).
    owners: HashTable<Place>,
    hasher: DefaultHashBuilder,
    /// The bytes of every owner in line.
    owner_bytes: usize,
    indexes: Indexes,
}

impl Queue {
    pub(crate) fn is_empty(&self) -> bool {
        self.line.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.line.len()
    }

    /// How many waiters are blocked in LOCK.WAIT.
    pub(crate) fn blocked_count(&self) -> usize {
        self.indexes.blocked
    }

    /// The bytes the waiters take, estimated from the first `samples` (see `footprint`).
    pub(crate) fn footprint(&self, samples: usize) -> usize {
        extrapolate(self.len(), self.iter().map(Waiter::footprint), samples)
    }

    /// The waiters, head first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.line.values()
    }

    pub(crate) fn place_of(&self, owner: &[u8]) -> Option<Place> {
        let is_owner = |place: &Place| self.line.get(*place).is_some_and(|waiter| *waiter.owner == *owner);
        self.owners.find(self.hasher.hash_one(owner), is_owner).copied()
    }

    /// The owners' bytes and [`PLACE_BYTES`] per place: what one change per place takes, about.
    pub(crate) fn weight(&self) -> usize {
        self.owner_bytes + self.len() * PLACE_BYTES
    }

    /// How many waiters are ahead of `place` (0: it is the head).
    pub(crate) fn position(&self, place: Place) -> usize {
        self.line.rank(place)
    }

    pub(crate) fn join(&mut self, waiter: Waiter) -> Place {
        let place = self.next_place;
        self.next_place += 1;
        let hash = self.hasher.hash_one(&*waiter.owner);
        self.owner_bytes += waiter.owner.len();
        self.indexes.add(place, &waiter);
        self.line.insert(place, waiter);
        self.index_owner(hash, place);
        place
    }

    /// Adds the owner at `place`, whose owner hashes to `hash`, to the owner index. Its entries
    /// hold no owner, so the table rehashing itself (when it grows, or to clear the tombstones of
    /// a churning line) would look each owner up in the line's tree: n lookups of log n steps
    /// under the shard lock. It is rebuilt instead, when full, from one walk of the line: O(n),
    /// as a table keyed by owners took, once every so many joins, at the size hashbrown would
    /// grow to.
    fn index_owner(&mut self, hash: u64, place: Place) {
        let Queue { line, owners, hasher, .. } = self;
        // Called only if there were no room: correct, just slow.
        let rehash = |place: &Place| line.get(*place).map_or(0, |waiter| hasher.hash_one(&*waiter.owner));
        if owners.len() == owners.capacity() {
            // Full means 7/8 of a power of two buckets in use: twice that is the next power of two.
            let mut rebuilt = HashTable::with_capacity((2 * owners.len()).max(4));
            for (place, waiter) in line.iter() {
                rebuilt.insert_unique(hasher.hash_one(&*waiter.owner), place, rehash);
            }
            *owners = rebuilt;
        } else {
            owners.insert_unique(hash, place, rehash);
        }
    }

    /// The one way a waiter in line changes, so that the indexes follow it.
    fn update<R>(&mut self, place: Place, op: impl FnOnce(&mut Waiter) -> R) -> Option<R> {
        let waiter = self.line.get_mut(place)?;
        self.indexes.remove(place, waiter);
        let result = op(waiter);
        self.indexes.add(place, waiter);
        Some(result)
    }

    /// The owner's TRY or WAIT renews its place: the call's lease, restarted from now, and its
    /// connection as the one a grant binds to.
    pub(crate) fn renew(&mut self, place: Place, lease_ms: u64, conn: ConnId, now: u64) {
        self.update(place, |waiter| {
            waiter.lease_ms = lease_ms;
            waiter.conn = conn;
            waiter.expires_at = now.saturating_add(lease_ms);
        });
    }

    pub(crate) fn block(&mut self, place: Place, blocker: Blocker) {
        self.update(place, |waiter| waiter.blockers.push(blocker));
    }

    /// Removes the blocked WAIT that opened `mailbox` as `number`, of the owner at `place`.
    /// Returns false when it is not blocked there (any more). An owner left with no blocked WAIT
    /// leaves the line if `leave_queue` (then `left` is told), or else holds its place for its
    /// lease from now.
    pub(crate) fn unblock(
        &mut self,
        place: Place,
        (mailbox, number): (&Mailbox, u64),
        why: WaitEnds,
        now: u64,
        left: impl FnOnce(Box<[u8]>),
    ) -> bool {
        let Some(at) = self
            .line
            .get(place)
            .and_then(|waiter| waiter.blockers.iter().position(|blocker| blocker.is(mailbox, number)))
        else {
            return false;
        };
        let leaves = self.update(place, |waiter| {
            // Keep the order: the newest blocker is the one a grant binds to.
            let blocker = waiter.blockers.remove(at);
            let blocked_on = blocker.conn();
            blocker.dismiss();
            if waiter.is_blocked() {
                return false;
            }
            waiter.expires_at = now.saturating_add(waiter.lease_ms);
            // A WAIT whose connection went leaves the line, unless the owner has renewed its
            // place since on another connection (a later TRY or WAIT there): that connection
            // now answers for the place, and its own close would take it.
            why == WaitEnds::Abandoned && waiter.conn == blocked_on
        });
        if leaves == Some(true)
            && let Some(waiter) = self.remove(place)
        {
            left(waiter.owner);
        }
        true
    }

    pub(crate) fn pop_front(&mut self) -> Option<Waiter> {
        let (place, waiter) = self.line.pop_first()?;
        self.forget(place, &waiter);
        Some(waiter)
    }

    pub(crate) fn remove(&mut self, place: Place) -> Option<Waiter> {
        let waiter = self.line.remove(place)?;
        self.forget(place, &waiter);
        Some(waiter)
    }

    /// Drops the indexes' entries of `waiter`, already taken out of the line.
    fn forget(&mut self, place: Place, waiter: &Waiter) {
        if let Ok(entry) = self.owners.find_entry(self.hasher.hash_one(&*waiter.owner), |other| *other == place) {
            entry.remove();
        }
        self.owner_bytes -= waiter.owner.len();
        self.indexes.remove(place, waiter);
    }

    /// Empties the line, head first.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = Waiter> {
        self.owners.clear();
        self.owner_bytes = 0;
        self.indexes = Indexes::default();
        self.line.drain()
    }

    /// The next moment a place runs out.
    pub(crate) fn places_expire_at(&self) -> Option<u64> {
        self.indexes.expiries.first().map(|(expires_at, _)| *expires_at)
    }

    /// Drops the waiters whose place has run out (not blocked, and leased until `now` at most),
    /// telling `left` of each.
    pub(crate) fn drop_expired(&mut self, now: u64, mut left: impl FnMut(Box<[u8]>)) {
        while let Some(&(expires_at, place)) = self.indexes.expiries.first()
            && expires_at <= now
        {
            if let Some(waiter) = self.remove(place) {
                left(waiter.owner);
            }
        }
    }

    /// `conn` closed: the places it last refreshed go, so that an owner who has left is never
    /// granted the lock. An owner still blocked on another connection stays, and a grant made
    /// once it is no longer blocked binds to the connection of its newest WAIT. `left` is told of
    /// each owner that leaves.
    pub(crate) fn drop_places_of(&mut self, conn: ConnId, mut left: impl FnMut(Box<[u8]>)) {
        let places: Vec<Place> = self.places_bound_to(conn).collect();
        for place in places {
            let Some(waiter) = self.line.get(place) else { continue };
            // Only blocked here: its WAIT ends on its own (and unblocks it then).
            if waiter.conn != conn {
                continue;
            }
            if waiter.is_blocked() {
                self.update(place, |waiter| {
                    if let Some(newest) = waiter.blockers.iter().rev().find(|blocker| blocker.conn() != conn) {
                        waiter.conn = newest.conn();
                    }
                });
            } else if let Some(waiter) = self.remove(place) {
                left(waiter.owner);
            }
        }
    }

    /// The places `conn` refreshed last or has a WAIT blocked on.
    fn places_bound_to(&self, conn: ConnId) -> impl Iterator<Item = Place> + '_ {
        self.indexes.by_conn.range((conn, Place::MIN)..=(conn, Place::MAX)).map(|(_, place)| *place)
    }

    /// Whether a grant may bind to `conn`: a place it refreshed last or a WAIT blocked on it.
    pub(crate) fn bound_to_conn(&self, conn: ConnId) -> bool {
        self.places_bound_to(conn).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::conn;

    fn waiter(owner: &str) -> Waiter {
        Waiter {
            owner: Box::from(owner.as_bytes()),
            lease_ms: 1000,
            expires_at: 0,
            blockers: Blockers::new(),
            conn: conn(1),
        }
    }

    /// The owner index is rebuilt from the line whenever it fills, by growth or by the tombstones
    /// of owners leaving: every owner in line must still be found at its place, and none that left.
    #[test]
    fn owners_are_found_through_growth_and_churn() {
        let mut queue = Queue::default();
        let mut places: Vec<(String, Place)> = Vec::new();
        let mut rebuilds = 0;
        let mut join = |queue: &mut Queue, places: &mut Vec<(String, Place)>, owner: String| {
            let full = queue.owners.len() == queue.owners.capacity();
            let place = queue.join(waiter(&owner));
            places.push((owner, place));
            if full {
                rebuilds += 1;
                for (owner, place) in places.iter() {
                    assert_eq!(queue.place_of(owner.as_bytes()), Some(*place), "{owner} after rebuild {rebuilds}");
                }
            }
        };
        for i in 0..5_000 {
            join(&mut queue, &mut places, format!("o{i}"));
        }
        // Leave from the head and the middle while others join at the tail: the line stays long
        // while its index fills with tombstones.
        for round in 0..20_000 {
            let (owner, place) = places.remove(if round % 2 == 0 { 0 } else { places.len() / 2 });
            assert_eq!(queue.remove(place).map(|left| left.owner), Some(Box::from(owner.as_bytes())));
            assert_eq!(queue.place_of(owner.as_bytes()), None, "{owner} left");
            join(&mut queue, &mut places, format!("n{round}"));
        }
        assert!(rebuilds >= 8, "growth and churn filled the index {rebuilds} times");
        assert_eq!(queue.len(), places.len());
        for (owner, place) in &places {
            assert_eq!(queue.place_of(owner.as_bytes()), Some(*place), "{owner}");
        }
        assert!(queue.owners.capacity() <= 4 * places.len(), "the index is sized to the line, not to its history");
    }
}
