//! One shard of the lock table: its keys, their timers, and the bookkeeping the key states share.
//! Everything here runs under the shard's mutex.

use std::cell::OnceCell;
use std::hash::BuildHasher;
use std::ops::Deref;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;

use super::ConnId;
use super::change::{Change, ChangeSink, Recorder};
use super::clock::Timestamp;
use super::events::LockEvent;
use super::key_state::KeyState;
use super::key_table::{Entry, KeyTable, ScanBudget};
use super::outcome::{Completion, CoreStats, Gauges, HandedTo, RecordedAt};
use super::timers::{PurgeCursor, Timer, Timers};
use super::unlock_memo::UnlockMemo;

/// Per-shard bookkeeping that the key states update.
#[derive(Debug)]
pub(crate) struct ShardCtx {
    pub(crate) next_token: u64,
    pub(crate) stats: CoreStats,
    pub(crate) events: Vec<LockEvent>,
    /// Grants, successes and cancels are the hot path; their events are only collected while
    /// they will be logged or observed (releases are rarer and always logged).
    pub(crate) collect_all_events: bool,
    /// The earliest timer this operation armed, so the core can wake the expiry driver if it now
    /// sleeps too long.
    pub(crate) earliest_new_deadline: Option<u64>,
    recent_owner: Option<Arc<[u8]>>,
    /// The changes to journal, while a journal is attached.
    pub(crate) record: Recorder,
    pub(crate) unlock_memo: UnlockMemo,
    /// While a journal is replayed: the completion its latest `Finish` named, which the `Keep` and
    /// `Owe` changes right after it refer to.
    pub(crate) replayed_completion: Option<Arc<Completion>>,
    /// No lock is granted before this moment (see [`crate::core::LockCore::pause_grants_until`]).
    pub(crate) grants_resume_at: Option<u64>,
    /// The latest moment an operation on this shard ran at (see [`Shard::change`]).
    latest: Timestamp,
    /// Shared by the answers the operation under way sent, set when its changes are recorded.
    answers_recorded_at: Option<RecordedAt>,
    /// Set by an UNLOCK that is to write the grants it hands over itself: which WAITs got them.
    pub(crate) handed_to: Option<HandedTo>,
}

impl ShardCtx {
    /// Where the changes of the operation under way will be recorded, for an answer it sends.
    pub(crate) fn answers_recorded_at(&mut self) -> RecordedAt {
        if !self.record.is_enabled() {
            return RecordedAt::default();
        }
        self.answers_recorded_at.get_or_insert_with(RecordedAt::pending).clone()
    }

    fn new(token_seed: u64, shards: usize) -> ShardCtx {
        ShardCtx {
            next_token: token_seed.max(1),
            stats: CoreStats::default(),
            events: Vec::new(),
            collect_all_events: false,
            earliest_new_deadline: None,
            recent_owner: None,
            record: Recorder::default(),
            unlock_memo: UnlockMemo::for_one_of(shards),
            replayed_completion: None,
            grants_resume_at: None,
            latest: Timestamp::from_ms(0),
            answers_recorded_at: None,
            handed_to: None,
        }
    }

    /// Whether grants are paused at `now`.
    pub(crate) fn grants_paused(&self, now: Timestamp) -> bool {
        self.grants_resume_at.is_some_and(|resume_at| now.ms() < resume_at)
    }

    pub(crate) fn replayed_completion(&self, token: u64) -> Option<Arc<Completion>> {
        self.replayed_completion.as_ref().filter(|completion| completion.token == token).cloned()
    }

    /// The owner as a shared string. One node usually takes many keys in a row, so the last owner
    /// seen is reused rather than copied for every lock it holds.
    pub(crate) fn owner_arc(&mut self, owner: &[u8]) -> Arc<[u8]> {
        match &self.recent_owner {
            Some(recent) if **recent == *owner => Arc::clone(recent),
            _ => {
                let owner: Arc<[u8]> = Arc::from(owner);
                self.recent_owner = Some(Arc::clone(&owner));
                owner
            }
        }
    }

    pub(crate) fn take_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }
}

/// Why a step runs (see [`Shard::step`]).
#[derive(Debug, Clone, Copy)]
enum Cause {
    /// A request or a connection's close, at this moment.
    Request(Timestamp),
    /// The key's timer entry fired at this moment, and is gone.
    Fired(Timestamp),
    /// A journal or log replays a step: nothing falls due meanwhile.
    Replay,
}

/// What [`Shard::change`] does with a key that has no state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent {
    Create,
    Skip,
}

/// Timer wheels this small are not worth purging.
const SPARSE_SLACK: usize = 1024;

/// Timer entries a purge examines per operation (see [`Shard::purge_stale_timers`]).
const PURGE_SLICE: usize = 16;

/// A key and its state, boxed together: the table holds one pointer a slot, which matters more
/// than one allocation per key because the table is sized in powers of two and is often half
/// empty; the key's (fat) pointer sits in that allocation beside the state. The key is not
/// shared (no reference counts in its allocation): what keeps a key beyond a step takes a copy
/// (see [`StepKey`]).
#[derive(Debug)]
struct Held {
    key: Box<[u8]>,
    state: KeyState,
}

/// The key one step changes. The records, events and tickets the step makes share one copy,
/// made when the first of them asks: most steps of a held lock make none without a journal, one
/// with it.
pub(crate) struct StepKey<'a> {
    bytes: &'a [u8],
    shared: OnceCell<Arc<[u8]>>,
}

impl<'a> StepKey<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> StepKey<'a> {
        StepKey { bytes, shared: OnceCell::new() }
    }

    /// The key, to keep.
    pub(crate) fn shared(&self) -> Arc<[u8]> {
        Arc::clone(self.shared.get_or_init(|| Arc::from(self.bytes)))
    }
}

impl Deref for StepKey<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

/// A key as a connection remembers it, so that its close can release it: the key's hash in its
/// shard's table, which also names the shard. Eight bytes, where a copy of the key would take an
/// allocation for each lock a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyHash(u64);

/// Where the shard's index sits in its keys' hashes: above the bits hashbrown takes a slot from
/// (a part of the key table holds a few hundred keys, far fewer than 2^17), below the key's
/// position (see `key_table`).
const SHARD_SHIFT: u32 = 17;
/// Enough for the most shards a server may have.
pub(crate) const SHARD_BITS: u32 = 16;
const SHARD_MASK: u64 = ((1 << SHARD_BITS) - 1) << SHARD_SHIFT;

impl KeyHash {
    /// The index of the key's shard.
    pub(crate) fn shard(self) -> usize {
        ((self.0 & SHARD_MASK) >> SHARD_SHIFT) as usize
    }
}

/// Hashes a shard's keys, with the shard's index in the bits [`KeyHash::shard`] reads.
#[derive(Clone)]
struct KeyHasher<S> {
    build: S,
    shard_bits: u64,
}

impl<S: BuildHasher> KeyHasher<S> {
    fn hash(&self, key: &[u8]) -> u64 {
        (self.build.hash_one(key) & !SHARD_MASK) | self.shard_bits
    }
}

/// Generic over the hasher only so that a test can make every key's hash collide.
pub(crate) struct Shard<S = DefaultHashBuilder> {
    /// A table rather than a map so that a timer can find its key by hash, in parts by hash
    /// value so that SCAN can go through it a little at a time.
    keys: KeyTable<Box<Held>>,
    hasher: KeyHasher<S>,
    /// Every key whose `armed_at` is set has an entry there at that deadline, with the key's
    /// hash; entries of keys that re-armed earlier or went are skipped when they fire and purged
    /// when they pile up.
    timers: Timers,
    /// Where the purge of stale timer entries is, while one is under way.
    timer_purge: Option<PurgeCursor>,
    /// The sum of every key's [`KeyState::gauges`], adjusted by [`Shard::change`], the one place
    /// keys change, so INFO never walks the keys.
    gauges: Gauges,
    pub(crate) ctx: ShardCtx,
    sink: Option<Arc<dyn ChangeSink>>,
}

impl<S: BuildHasher + Default + Clone> Shard<S> {
    /// Shard `index` of a table of `shards` (at most 2^[`SHARD_BITS`]).
    pub(crate) fn new(token_seed: u64, shards: usize, index: usize) -> Shard<S> {
        Shard {
            keys: KeyTable::new(),
            hasher: KeyHasher { build: S::default(), shard_bits: (index as u64) << SHARD_SHIFT & SHARD_MASK },
            timers: Timers::new(),
            timer_purge: None,
            gauges: Gauges::default(),
            ctx: ShardCtx::new(token_seed, shards),
            sink: None,
        }
    }

    /// From now on every change is handed to `sink` (None: to nobody, and none is collected).
    pub(crate) fn set_sink(&mut self, sink: Option<Arc<dyn ChangeSink>>) {
        self.ctx.record.enable(sink.as_ref().map(|sink| sink.wall_ms_at_zero()));
        self.sink = sink;
    }

    pub(crate) fn take_sink(&mut self) -> Option<Arc<dyn ChangeSink>> {
        self.ctx.record.enable(None);
        self.sink.take()
    }

    /// Hands the changes of the operation that just ran to the sink, still under the shard lock
    /// so that changes of a key reach it in the order they were made.
    pub(crate) fn flush_changes(&mut self) {
        let answers_recorded_at = self.ctx.answers_recorded_at.take();
        if let Some(sink) = &self.sink
            && let Some(changes) = self.ctx.record.changes()
        {
            let position = sink.record(changes);
            changes.clear();
            if let (Some(answers), Some(position)) = (answers_recorded_at, position) {
                answers.set(position);
            }
        }
    }

    /// The changes that rebuild this shard's state (see [`Change`]), oldest remembered UNLOCK first.
    pub(crate) fn snapshot(&self, now: Timestamp) -> Vec<Change> {
        let mut out = Vec::new();
        for unlocked in self.ctx.unlock_memo.iter() {
            out.push(Change::Unlocked {
                key: Arc::from(unlocked.key),
                owner: Arc::from(unlocked.owner),
                token: unlocked.token,
                outcome: unlocked.outcome,
            });
        }
        for held in self.keys.iter() {
            held.state.snapshot(&StepKey::new(&held.key), now, &mut out);
        }
        out
    }

    /// Every change of a key's state passes through here, as one step at one moment: what fell
    /// due is settled, `op` runs, and the key's timer is re-armed or the key forgotten. Given the
    /// same calls with the same timestamps, a shard ends in the same state, so this is where a
    /// journal records each change (and where a replay feeds them back).
    ///
    /// The moment `op` is handed is `now`, or the latest one this shard has run at if that is
    /// later: a caller reads the clock before it takes the shard lock and may be descheduled in
    /// between, and a step run at a moment older than one already seen could start a lease before
    /// the request it grants arrived (a hand-off inside a late UNLOCK to a WAIT that came after
    /// its clock reading), which would end the lease earlier than its holder may count on.
    pub(crate) fn change<R>(
        &mut self,
        key: &[u8],
        absent: Absent,
        now: Timestamp,
        op: impl FnOnce(&mut KeyState, &StepKey<'_>, &mut ShardCtx, Timestamp) -> R,
    ) -> Option<R> {
        self.change_hashed(self.key_hash(key), key, absent, now, op)
    }

    /// [`Shard::change`] of `key`, whose hash is `hash`.
    pub(crate) fn change_hashed<R>(
        &mut self,
        hash: KeyHash,
        key: &[u8],
        absent: Absent,
        now: Timestamp,
        op: impl FnOnce(&mut KeyState, &StepKey<'_>, &mut ShardCtx, Timestamp) -> R,
    ) -> Option<R> {
        let create = (absent == Absent::Create).then_some(key);
        self.change_found(hash.0, |held| *held.key == *key, create, now, Cause::Request, op)
    }

    pub(crate) fn key_hash(&self, key: &[u8]) -> KeyHash {
        KeyHash(self.hasher.hash(key))
    }

    /// The keys with `hash` bound to `conn` (see [`KeyState::bound_to_conn`]): one but for a
    /// collision of the whole hash.
    fn bound_with_hash(&self, hash: KeyHash, conn: ConnId) -> impl Iterator<Item = &Held> {
        self.keys
            .iter_hash(hash.0)
            .filter(move |held| held.state.bound_to_conn(conn) && self.hasher.hash(&held.key) == hash.0)
            .map(|held| &**held)
    }

    /// Whether a key with `hash` is bound to `conn`.
    #[cfg(test)]
    pub(crate) fn bound_to_conn(&self, hash: KeyHash, conn: ConnId) -> bool {
        self.bound_with_hash(hash, conn).next().is_some()
    }

    /// Whether a key with `hash` is bound to `conn`, or a key the table tags as it is (the same
    /// seven bits of hash in the same probe sequence) is. A connection's prune of its bound keys
    /// asks this: confirming the whole hash would read each key's bytes (a cache miss a key,
    /// and a third of the prune's time), and a hash kept by mistake costs only its 8 bytes until
    /// the next prune or the close, which looks at the whole hash.
    pub(crate) fn may_be_bound_to_conn(&self, hash: KeyHash, conn: ConnId) -> bool {
        self.keys.iter_hash(hash.0).any(|held| held.state.bound_to_conn(conn))
    }

    /// `conn` closed: every key with `hash` bound to it is told.
    pub(crate) fn connection_closed(&mut self, hash: KeyHash, conn: ConnId, now: Timestamp) {
        let bound: Vec<Box<[u8]>> = self.bound_with_hash(hash, conn).map(|held| held.key.clone()).collect();
        for key in bound {
            self.change_hashed(hash, &key, Absent::Skip, now, |state, key, ctx, now| {
                state.connection_closed(key, conn, ctx, now)
            });
        }
    }

    /// [`Shard::change`] of the key with `hash` that `is_key` accepts (created from `create` if
    /// there is none).
    fn change_found<R>(
        &mut self,
        hash: u64,
        is_key: impl Fn(&Box<Held>) -> bool,
        create: Option<&[u8]>,
        now: Timestamp,
        cause: fn(Timestamp) -> Cause,
        op: impl FnOnce(&mut KeyState, &StepKey<'_>, &mut ShardCtx, Timestamp) -> R,
    ) -> Option<R> {
        let now = self.ctx.latest.max(now);
        self.ctx.latest = now;
        self.step(hash, is_key, create, cause(now), |state, key, ctx| op(state, key, ctx, now))
    }

    /// Replays one recorded step of a key. Nothing falls due meanwhile: what fell due while the
    /// journal was written was journaled as it happened, and what falls due by now is settled by
    /// the expiry driver once the replay is over.
    pub(crate) fn replay(&mut self, key: &[u8], op: impl FnOnce(&mut KeyState, &mut ShardCtx)) {
        let hash = self.hasher.hash(key);
        self.step(hash, |held| *held.key == *key, Some(key), Cause::Replay, |state, _, ctx| op(state, ctx));
    }

    /// [`Shard::change`], settling first what fell due by the moment of `cause`.
    ///
    /// Afterwards the key's timer entry is where [`KeyState::armed_at`] says, or earlier. A state
    /// that keeps its own `armed_at` re-arms only for an earlier deadline: an entry left at an
    /// earlier one fires, finds nothing due, and re-arms then (most extensions cost nothing). A
    /// plain held lock keeps none: its entry must be at its holder's deadline, so it re-arms
    /// whenever that moves, and the entries it leaves behind are stale.
    fn step<R>(
        &mut self,
        hash: u64,
        is_key: impl Fn(&Box<Held>) -> bool,
        create: Option<&[u8]>,
        cause: Cause,
        op: impl FnOnce(&mut KeyState, &StepKey<'_>, &mut ShardCtx) -> R,
    ) -> Option<R> {
        let Shard { keys, hasher, timers, gauges, ctx, .. } = self;
        let (mut entry, before) = match (keys.entry(hash, is_key, hash_with(hasher)), create) {
            (Entry::Occupied(entry), _) => {
                let before = entry.get().state.gauges();
                (entry, before)
            }
            (Entry::Vacant(entry), Some(key)) => {
                (entry.insert(Box::new(Held { key: Box::from(key), state: KeyState::default() })), Gauges::default())
            }
            (Entry::Vacant(_), None) => return None,
        };
        let Held { key, state } = &mut **entry.get_mut();
        let key = StepKey::new(key);
        let armed = match cause {
            Cause::Fired(_) => None,
            Cause::Request(_) | Cause::Replay => state.armed_at(),
        };
        if let Cause::Request(now) | Cause::Fired(now) = cause {
            state.settle(&key, ctx, now);
        }
        let result = op(state, &key, ctx);
        if state.is_forgettable() {
            entry.remove(hash_with(hasher));
            gauges.replace(before, Gauges::default());
            self.keys.shrink_if_sparse(hash_with(&self.hasher));
            self.purge_stale_timers();
            return Some(result);
        }
        gauges.replace(before, state.gauges());
        let due = state.next_deadline(ctx.grants_resume_at);
        let arm = match state.kept_armed_at() {
            Some(armed_at) => {
                let arm = due.filter(|due| armed.is_none_or(|armed| *due < armed));
                *armed_at = arm.or(armed);
                arm
            }
            None => due.filter(|due| armed != Some(*due)),
        };
        if let Some(deadline) = arm {
            timers.arm(deadline, hash);
            ctx.earliest_new_deadline =
                Some(ctx.earliest_new_deadline.map_or(deadline, |earliest| earliest.min(deadline)));
            self.purge_stale_timers();
        }
        Some(result)
    }

    /// SCAN's step in this shard (see [`KeyTable::scan`]): the keys from position `from` on go
    /// to `out`.
    pub(crate) fn scan(&self, from: u32, budget: &mut ScanBudget, out: &mut Vec<Arc<[u8]>>) -> Option<u32> {
        self.keys.scan(from, hash_with(&self.hasher), budget, |held| out.push(Arc::from(&*held.key)))
    }

    /// The state of `key` as it is, without settling it (for questions that change nothing).
    pub(crate) fn peek(&self, key: &[u8]) -> Option<(&[u8], &KeyState)> {
        self.keys.find(self.hasher.hash(key), |held| *held.key == *key).map(|held| (&*held.key, &held.state))
    }

    /// Keeps the timer wheel proportional to the live keys: the entries of a million locks
    /// released long before their leases end would otherwise stay until then. A purge starts once
    /// the entries outnumber the live keys twice over (plus slack) and goes on by a slice of
    /// [`PURGE_SLICE`] entries in each operation that arms a timer or forgets a key (each makes
    /// at most one stale entry, and at least half the entries are stale when a pass starts), so
    /// it is O(1) per operation, never a walk of the whole shard.
    fn purge_stale_timers(&mut self) {
        let cursor = match self.timer_purge {
            Some(cursor) => cursor,
            None if self.timers.len() > 2 * self.keys.len() + SPARSE_SLACK => PurgeCursor::default(),
            None => return,
        };
        let Shard { keys, hasher, timers, timer_purge, .. } = self;
        *timer_purge =
            timers.purge_step(cursor, PURGE_SLICE, |timer| keys.find(timer.hash, armed_for(timer, hasher)).is_some());
    }

    /// Processes the timers due at `now`, taking one from `budget` for each key it expires;
    /// returns the next deadline still pending (at or before `now` when the budget ran out first).
    pub(crate) fn expire(&mut self, now: Timestamp, budget: &mut usize) -> Option<u64> {
        // A copy (a seed) so that the key is found and changed in one lookup while `self` is
        // borrowed for the change.
        let hasher = self.hasher.clone();
        while *budget > 0
            && let Some(timer) = self.timers.pop_due(now.ms())
        {
            // Keys whose hashes collide and that are due together have an entry each: one key
            // per entry. The step settles what fell due; its timer is re-armed if more is due.
            let fired =
                self.change_found(timer.hash, armed_for(timer, &hasher), None, now, Cause::Fired, |_, _, _, _| ());
            if fired.is_some() {
                *budget -= 1;
            }
        }
        self.timers.next_deadline()
    }

    pub(crate) fn gauges(&self) -> Gauges {
        self.gauges
    }

    /// The gauges computed afresh from every key, to check the kept ones against.
    pub(crate) fn recount_gauges(&self) -> Gauges {
        let mut total = Gauges::default();
        for held in self.keys.iter() {
            total.add(held.state.gauges());
        }
        total
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> (usize, usize) {
        (self.keys.capacity(), self.timers.capacity())
    }

    #[cfg(test)]
    pub(crate) fn timer_count(&self) -> usize {
        self.timers.len()
    }
}

/// MEMORY USAGE of a key (see `core::footprint`): its box with the state, its slot in the table
/// (a pointer and a control byte), the key's bytes, its timer, and what the state points to.
pub(crate) fn footprint(key: &[u8], state: &KeyState, samples: usize) -> usize {
    let timer = if state.armed_at().is_some() { size_of::<Timer>() } else { 0 };
    size_of::<Held>() + size_of::<Box<Held>>() + 1 + key.len() + timer + state.footprint(samples)
}

/// What the table needs to move its keys when it grows or shrinks.
fn hash_with(hasher: &KeyHasher<impl BuildHasher>) -> impl Fn(&Box<Held>) -> u64 {
    |held| hasher.hash(&held.key)
}

/// Whether a key in the table is the one `timer` stands for: armed at its deadline, with its hash
/// (the table compares only a few bits of the hash).
fn armed_for(timer: Timer, hasher: &KeyHasher<impl BuildHasher>) -> impl Fn(&Box<Held>) -> bool {
    move |held| held.state.armed_at() == Some(timer.deadline) && hasher.hash(&held.key) == timer.hash
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasherDefault, Hasher};

    use super::*;
    use crate::core::IfHeld;
    use crate::core::key_state::Claim;
    use crate::core::testing::{acquired, at, conn};
    use crate::core::{UnlockOutcome, Verdict};

    /// Every key hashes the same: each timer entry's hash matches every key.
    #[derive(Default)]
    struct OneHash;

    impl Hasher for OneHash {
        fn finish(&self) -> u64 {
            7
        }

        fn write(&mut self, _: &[u8]) {}
    }

    type CollidingShard = Shard<BuildHasherDefault<OneHash>>;

    fn shard() -> Shard {
        Shard::new(1, 1, 0)
    }

    /// Takes or renews `key` for `lease_ms`; returns the token.
    fn hold<S: BuildHasher + Default + Clone>(shard: &mut Shard<S>, key: &str, lease_ms: u64, now: u64) -> u64 {
        let claim = Claim { owner: b"o", lease_ms, conn: conn(1), max_queue_bytes: usize::MAX };
        shard
            .change(key.as_bytes(), Absent::Create, at(now), |state, key, ctx, now| {
                acquired(state.try_lock(key, claim, IfHeld::Queue, ctx, now).outcome)
            })
            .expect("created")
    }

    fn is_held<S: BuildHasher + Default + Clone>(shard: &Shard<S>, key: &str) -> bool {
        shard.peek(key.as_bytes()).is_some()
    }

    fn expire<S: BuildHasher + Default + Clone>(shard: &mut Shard<S>, now: u64, budget: usize) -> (Option<u64>, usize) {
        let mut left = budget;
        let next = shard.expire(at(now), &mut left);
        (next, budget - left)
    }

    #[test]
    fn keys_whose_hashes_collide_expire_each_at_its_own_deadline() {
        let mut shard = CollidingShard::new(1, 1, 0);
        // Armed first, so that the table finds it first for every entry.
        hold(&mut shard, "later", 200, 0);
        hold(&mut shard, "a", 100, 0);
        hold(&mut shard, "b", 100, 0);
        assert_eq!(expire(&mut shard, 100, 2), (Some(200), 2), "both due, and only they, within a budget of two");
        assert!(!is_held(&shard, "a") && !is_held(&shard, "b") && is_held(&shard, "later"));
        assert_eq!(expire(&mut shard, 200, 2), (None, 1));
        assert_eq!((shard.ctx.stats.lease_expiries, shard.timer_count()), (3, 0));
    }

    #[test]
    fn a_closed_connection_releases_every_key_whose_hash_it_remembers() {
        let mut shard = CollidingShard::new(1, 1, 0);
        for key in ["a", "b"] {
            hold(&mut shard, key, 1_000, 0);
        }
        let hash = shard.key_hash(b"a");
        assert_eq!(hash, shard.key_hash(b"b"));
        assert!(shard.bound_to_conn(hash, conn(1)) && !shard.bound_to_conn(hash, conn(2)));
        shard.connection_closed(hash, conn(2), at(1));
        assert!(is_held(&shard, "a") && is_held(&shard, "b"), "another connection's close releases nothing");
        shard.connection_closed(hash, conn(1), at(1));
        assert!(!is_held(&shard, "a") && !is_held(&shard, "b"));
        assert!(!shard.bound_to_conn(hash, conn(1)));
    }

    #[test]
    fn a_timer_re_armed_earlier_fires_then_and_its_old_entry_does_nothing() {
        let mut shard = shard();
        hold(&mut shard, "k", 1_000, 0);
        hold(&mut shard, "k", 100, 10);
        assert_eq!(expire(&mut shard, 109, 10), (Some(110), 0));
        assert_eq!(expire(&mut shard, 110, 10), (Some(1_000), 1));
        assert!(!is_held(&shard, "k"));
        hold(&mut shard, "k", 1_500, 200);
        assert_eq!(expire(&mut shard, 1_000, 10), (Some(1_700), 0), "the old entry finds the key armed later");
        assert!(is_held(&shard, "k"));
    }

    #[test]
    fn a_plain_lock_renewed_later_is_armed_at_its_new_deadline_and_its_old_entry_does_nothing() {
        let mut shard = shard();
        hold(&mut shard, "k", 100, 0);
        hold(&mut shard, "k", 1_000, 50);
        assert_eq!(shard.timer_count(), 2);
        assert_eq!(expire(&mut shard, 100, 10), (Some(1_050), 0));
        assert!(is_held(&shard, "k"));
        assert_eq!(expire(&mut shard, 1_050, 10), (None, 1));
        assert!(!is_held(&shard, "k"));
    }

    /// A state that keeps its own timer (here: a line) re-arms only for an earlier deadline; the
    /// entry left earlier fires, finds nothing due, and re-arms at the holder's new deadline.
    #[test]
    fn a_lock_with_a_line_renewed_later_fires_at_the_old_deadline_and_arms_the_new_one() {
        let mut shard = shard();
        hold(&mut shard, "k", 100, 0);
        let place = Claim { owner: b"w", lease_ms: 5_000, conn: conn(2), max_queue_bytes: usize::MAX };
        shard.change(b"k", Absent::Create, at(10), |state, key, ctx, now| {
            state.try_lock(key, place, IfHeld::Queue, ctx, now)
        });
        hold(&mut shard, "k", 1_000, 50);
        assert_eq!(shard.timer_count(), 1);
        assert_eq!(expire(&mut shard, 100, 10), (Some(1_050), 1));
        assert!(is_held(&shard, "k"));
        assert_eq!(expire(&mut shard, 1_050, 10).1, 1);
        assert!(is_held(&shard, "k"), "the lease ended and the line's head got the lock");
    }

    #[test]
    fn the_timer_of_a_forgotten_key_expires_nothing() {
        let mut shard = shard();
        let token = hold(&mut shard, "gone", 100, 0);
        hold(&mut shard, "kept", 100, 0);
        let unlocked = shard.change(b"gone", Absent::Skip, at(10), |state, key, ctx, now| {
            state.unlock(key, b"o", token, Verdict::Failure { reason: None }, ctx, now)
        });
        assert_eq!(unlocked, Some(UnlockOutcome::Released));
        assert_eq!(expire(&mut shard, 100, 10), (None, 1));
        assert!(!is_held(&shard, "kept"));
        assert_eq!(shard.timer_count(), 0);
    }

    #[test]
    fn the_budget_caps_expiries_and_what_is_left_is_due_now() {
        let mut shard = shard();
        for key in ["a", "b", "c"] {
            hold(&mut shard, key, 100, 0);
        }
        hold(&mut shard, "d", 300, 0);
        assert_eq!(expire(&mut shard, 150, 2), (Some(100), 2));
        assert_eq!(expire(&mut shard, 150, 2), (Some(300), 1));
        assert_eq!(shard.gauges().held_keys, 1);
    }
}
