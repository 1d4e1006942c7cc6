//! One shard of the lock table: its keys, their timers, and the bookkeeping the key states share.
//! Everything here runs under the shard's mutex.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use hashbrown::HashMap;
use hashbrown::hash_map::EntryRef;

use super::change::{Change, ChangeSink, Recorder};
use super::clock::Timestamp;
use super::events::LockEvent;
use super::key_state::KeyState;
use super::outcome::{Completion, CoreStats, Gauges};
use super::unlock_memo::UnlockMemo;

/// Per-shard bookkeeping that the key states update.
#[derive(Debug)]
pub(crate) struct ShardCtx {
    pub(crate) next_token: u64,
    pub(crate) next_wait_id: u64,
    pub(crate) stats: CoreStats,
    pub(crate) events: Vec<LockEvent>,
    /// Grants are the hot path; only collect their events when they will be logged.
    pub(crate) log_grants: bool,
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
}

impl ShardCtx {
    fn new(token_seed: u64, shards: usize) -> ShardCtx {
        ShardCtx {
            next_token: token_seed.max(1),
            next_wait_id: 1,
            stats: CoreStats::default(),
            events: Vec::new(),
            log_grants: false,
            earliest_new_deadline: None,
            recent_owner: None,
            record: Recorder::default(),
            unlock_memo: UnlockMemo::for_one_of(shards),
            replayed_completion: None,
            grants_resume_at: None,
            latest: Timestamp::from_ms(0),
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

/// What [`Shard::change`] does with a key that has no state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent {
    Create,
    Skip,
}

/// Tables and timer heaps this small are not worth shrinking or purging.
const SPARSE_SLACK: usize = 1024;

pub(crate) struct Shard {
    /// Boxed: the table stays a third the size, which matters more than one allocation per key
    /// because the table is sized in powers of two and is often half empty.
    keys: HashMap<Arc<[u8]>, Box<KeyState>>,
    /// Min-heap of (deadline, key). A key has at most one live entry (the one equal to its
    /// `timer_at`); superseded entries are skipped when popped and purged when they pile up.
    timers: BinaryHeap<Reverse<(u64, Arc<[u8]>)>>,
    /// The sum of every key's [`KeyState::gauges`], adjusted by [`Shard::change`], the one place
    /// keys change, so INFO never walks the keys.
    gauges: Gauges,
    pub(crate) ctx: ShardCtx,
    sink: Option<Arc<dyn ChangeSink>>,
}

impl Shard {
    /// Shard of a table of `shards`.
    pub(crate) fn new(token_seed: u64, shards: usize) -> Shard {
        Shard {
            keys: HashMap::new(),
            timers: BinaryHeap::new(),
            gauges: Gauges::default(),
            ctx: ShardCtx::new(token_seed, shards),
            sink: None,
        }
    }

    /// From now on every change is handed to `sink` (None: to nobody, and none is collected).
    pub(crate) fn set_sink(&mut self, sink: Option<Arc<dyn ChangeSink>>) {
        self.ctx.record.set_enabled(sink.is_some());
        self.sink = sink;
    }

    /// Hands the changes of the operation that just ran to the sink, still under the shard lock
    /// so that changes of a key reach it in the order they were made.
    pub(crate) fn flush_changes(&mut self) {
        let changes = self.ctx.record.changes();
        if let Some(sink) = &self.sink
            && !changes.is_empty()
        {
            sink.record(changes);
        }
    }

    /// The changes that rebuild this shard's state (see [`Change`]), oldest remembered UNLOCK first.
    pub(crate) fn snapshot(&self, now: Timestamp) -> Vec<Change> {
        let mut out = Vec::new();
        for (token, unlocked) in self.ctx.unlock_memo.iter() {
            out.push(Change::Unlocked {
                key: Arc::clone(&unlocked.key),
                owner: Arc::clone(&unlocked.owner),
                token,
                outcome: unlocked.outcome,
            });
        }
        for (key, state) in &self.keys {
            state.snapshot(key, now, &mut out);
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
        op: impl FnOnce(&mut KeyState, &Arc<[u8]>, &mut ShardCtx, Timestamp) -> R,
    ) -> Option<R> {
        let now = self.ctx.latest.max(now);
        self.ctx.latest = now;
        self.step(key, absent, Some(now), |state, key, ctx| op(state, key, ctx, now))
    }

    /// Replays one recorded step of a key. Nothing falls due meanwhile: what fell due while the
    /// journal was written was journaled as it happened, and what falls due by now is settled by
    /// the expiry driver once the replay is over.
    pub(crate) fn replay(&mut self, key: &[u8], op: impl FnOnce(&mut KeyState, &mut ShardCtx)) {
        self.step(key, Absent::Create, None, |state, _, ctx| op(state, ctx));
    }

    /// [`Shard::change`], settling what fell due at `settle_at` first.
    fn step<R>(
        &mut self,
        key: &[u8],
        absent: Absent,
        settle_at: Option<Timestamp>,
        op: impl FnOnce(&mut KeyState, &Arc<[u8]>, &mut ShardCtx) -> R,
    ) -> Option<R> {
        let (key, state, before) = match self.keys.entry_ref(key) {
            EntryRef::Occupied(entry) => {
                let before = entry.get().gauges();
                (Arc::clone(entry.key()), entry.into_mut(), before)
            }
            EntryRef::Vacant(entry) if absent == Absent::Create => {
                let key: Arc<[u8]> = Arc::from(key);
                (Arc::clone(&key), entry.insert_with_key(key, Box::default()), Gauges::default())
            }
            EntryRef::Vacant(_) => return None,
        };
        if let Some(now) = settle_at {
            state.settle(&key, &mut self.ctx, now);
        }
        let result = op(state, &key, &mut self.ctx);
        if state.is_forgettable() {
            self.keys.remove(&key);
            self.gauges.replace(before, Gauges::default());
            self.purge_stale_timers();
            self.shrink_if_sparse();
            return Some(result);
        }
        self.gauges.replace(before, state.gauges());
        if let Some(deadline) = state.next_deadline(self.ctx.grants_resume_at)
            && state.timer_at.is_none_or(|armed| deadline < armed)
        {
            state.timer_at = Some(deadline);
            self.timers.push(Reverse((deadline, key)));
            self.ctx.earliest_new_deadline =
                Some(self.ctx.earliest_new_deadline.map_or(deadline, |earliest| earliest.min(deadline)));
            self.purge_stale_timers();
        }
        Some(result)
    }

    /// The state of `key` as it is, without settling it (for questions that change nothing).
    pub(crate) fn peek(&self, key: &[u8]) -> Option<(&Arc<[u8]>, &KeyState)> {
        self.keys.get_key_value(key).map(|(key, state)| (key, &**state))
    }

    /// A table that once held a million keys keeps its memory after they are gone unless told:
    /// shrunk to twice the keys left once they fill less than a quarter, which costs O(1) per
    /// removal amortized (the next shrink needs the keys halved again). The same for the heap.
    fn shrink_if_sparse(&mut self) {
        let len = self.keys.len();
        if self.keys.capacity() > 4 * len + SPARSE_SLACK {
            self.keys.shrink_to(2 * len);
        }
        if self.timers.capacity() > 4 * self.timers.len() + SPARSE_SLACK {
            self.timers.shrink_to(2 * self.timers.len());
        }
    }

    /// Keeps the heap proportional to the live keys. Each entry holds its key, and one whose key
    /// is gone (released, or its timer re-armed) would stay until its deadline: a million locks
    /// released long before their leases end would keep a million keys allocated. Purged once
    /// the entries outnumber the live keys twice over (plus slack), which is O(1) amortized per
    /// removal or arming.
    fn purge_stale_timers(&mut self) {
        if self.timers.len() <= 2 * self.keys.len() + SPARSE_SLACK {
            return;
        }
        let keys = &self.keys;
        self.timers
            .retain(|Reverse((deadline, key))| keys.get(key).is_some_and(|state| state.timer_at == Some(*deadline)));
    }

    /// Processes the timers due at `now`, taking one from `budget` for each; returns the next
    /// deadline still pending (at or before `now` when the budget ran out first).
    pub(crate) fn expire(&mut self, now: Timestamp, budget: &mut usize) -> Option<u64> {
        while let Some(Reverse((deadline, _))) = self.timers.peek() {
            if *deadline > now.ms() || *budget == 0 {
                let next = *deadline;
                self.shrink_if_sparse();
                return Some(next);
            }
            let Some(Reverse((deadline, key))) = self.timers.pop() else {
                break;
            };
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            if state.timer_at != Some(deadline) {
                continue;
            }
            state.timer_at = None;
            self.change(&key, Absent::Skip, now, |_, _, _, _| ());
            *budget -= 1;
        }
        self.shrink_if_sparse();
        None
    }

    pub(crate) fn gauges(&self) -> Gauges {
        self.gauges
    }

    /// The gauges computed afresh from every key, to check the kept ones against.
    pub(crate) fn recount_gauges(&self) -> Gauges {
        let mut total = Gauges::default();
        for state in self.keys.values() {
            total.add(state.gauges());
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
