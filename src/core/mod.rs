//! The lock core: a sharded table of lock states that knows nothing of sockets. Callers pass the
//! current time (milliseconds of a monotonic [`Clock`]) and get outcome enums back. Each shard is a
//! `parking_lot` mutex held only for the few steps of one operation, never across an `.await`.

mod clock;
mod events;
pub mod keyslot;
mod outcome;
mod state;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::sync::Notify;

pub use clock::{Clock, token_seed};
pub use events::ReleaseCause;
pub use outcome::{
    Completion, CoreStats, ExtendOutcome, HolderInfo, KeyInfo, LockStateName, TryOutcome, UnlockOutcome, Verdict,
    WaitOutcome, WaitStart, WaitTicket,
};
pub use state::ConnId;

use state::{Claim, LockState, ShardCtx};

#[derive(Debug, Clone, Copy)]
pub struct CoreSettings {
    pub default_lease_ms: u64,
    pub max_lease_ms: u64,
    pub release_on_disconnect: bool,
    pub shards: usize,
}

/// A TRY or WAIT as the core sees it.
#[derive(Debug, Clone, Copy)]
pub struct LockRequest<'a> {
    pub key: &'a [u8],
    pub owner: &'a [u8],
    /// PX; None means the server's default lease.
    pub lease_ms: Option<u64>,
    pub conn: ConnId,
}

struct Shard {
    /// Boxed: the table stays a third the size, which matters more than one allocation per key
    /// because the table is sized in powers of two and is often half empty.
    keys: HashMap<Arc<[u8]>, Box<LockState>>,
    /// Min-heap of (deadline, key). A key has at most one live entry (the one equal to its
    /// `timer_at`); superseded entries are skipped when popped and purged when they pile up.
    timers: BinaryHeap<Reverse<(u64, Arc<[u8]>)>>,
    ctx: ShardCtx,
}

impl Shard {
    /// Runs `op` on the key's settled state, then re-arms its timer or forgets it.
    fn with_key<R>(
        &mut self,
        key: &[u8],
        now: u64,
        op: impl FnOnce(&mut LockState, &Arc<[u8]>, &mut ShardCtx) -> R,
    ) -> R {
        let key = self.keys.get_key_value(key).map_or_else(|| Arc::from(key), |(key, _)| Arc::clone(key));
        let state = self.keys.entry(Arc::clone(&key)).or_default();
        state.settle(&key, &mut self.ctx, now);
        let result = op(state, &key, &mut self.ctx);
        self.after_change(&key, now);
        result
    }

    /// Like `with_key` but never creates the key.
    fn with_existing<R>(
        &mut self,
        key: &[u8],
        now: u64,
        op: impl FnOnce(&mut LockState, &Arc<[u8]>, &mut ShardCtx) -> R,
    ) -> Option<R> {
        let (key, state) = self.keys.get_key_value_mut(key)?;
        let key = Arc::clone(key);
        state.settle(&key, &mut self.ctx, now);
        let result = op(state, &key, &mut self.ctx);
        self.after_change(&key, now);
        Some(result)
    }

    fn after_change(&mut self, key: &Arc<[u8]>, _now: u64) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        if state.is_forgettable() {
            self.keys.remove(key);
            return;
        }
        if let Some(deadline) = state.next_deadline()
            && (state.timer_at == 0 || deadline < state.timer_at)
        {
            state.timer_at = deadline;
            self.timers.push(Reverse((deadline, Arc::clone(key))));
            self.ctx.earliest_new_deadline = self.ctx.earliest_new_deadline.min(deadline);
            self.purge_stale_timers();
        }
    }

    /// Keeps the heap proportional to the live keys when keys churn faster than their leases end.
    fn purge_stale_timers(&mut self) {
        if self.timers.len() <= 2 * self.keys.len() + 1024 {
            return;
        }
        let keys = &self.keys;
        self.timers.retain(|Reverse((deadline, key))| keys.get(key).is_some_and(|state| state.timer_at == *deadline));
    }

    /// Processes every timer due at `now`; returns the next deadline still pending.
    fn expire(&mut self, now: u64) -> Option<u64> {
        while let Some(Reverse((deadline, _))) = self.timers.peek() {
            if *deadline > now {
                return Some(*deadline);
            }
            let Some(Reverse((deadline, key))) = self.timers.pop() else {
                break;
            };
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            if state.timer_at != deadline {
                continue;
            }
            state.timer_at = 0;
            state.settle(&key, &mut self.ctx, now);
            self.after_change(&key, now);
        }
        None
    }
}

pub struct LockCore {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: u64,
    settings: CoreSettings,
    /// The deadline the expiry driver plans to wake at (u64::MAX while it is scanning).
    planned_wake: AtomicU64,
    timers_changed: Notify,
}

impl LockCore {
    pub fn new(settings: CoreSettings, token_seed: u64) -> LockCore {
        let count = settings.shards.max(1).next_power_of_two();
        let shards = (0..count)
            .map(|_| {
                Mutex::new(Shard { keys: HashMap::new(), timers: BinaryHeap::new(), ctx: ShardCtx::new(token_seed) })
            })
            .collect();
        LockCore {
            shards,
            shard_mask: count as u64 - 1,
            settings,
            planned_wake: AtomicU64::new(u64::MAX),
            timers_changed: Notify::new(),
        }
    }

    pub fn settings(&self) -> &CoreSettings {
        &self.settings
    }

    /// Notified when a deadline earlier than the one returned by the last [`LockCore::expire`]
    /// appears, so the expiry driver can sleep until then and no longer.
    pub fn timers_changed(&self) -> &Notify {
        &self.timers_changed
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Turns a requested lease (PX, KEEP, EXTEND) into the one applied: the default when absent,
    /// capped by the maximum.
    pub fn lease_for(&self, requested: Option<u64>) -> u64 {
        requested.unwrap_or(self.settings.default_lease_ms).clamp(1, self.settings.max_lease_ms)
    }

    /// Locks the key's shard, runs `op`, and logs what happened once the shard lock is released.
    fn on_shard<R>(&self, key: &[u8], op: impl FnOnce(&mut Shard) -> R) -> R {
        let index = (keyslot::shard_hash(key) & self.shard_mask) as usize;
        let (result, events, new_deadline) = {
            let mut shard = self.shards[index].lock();
            shard.ctx.log_grants = tracing::enabled!(tracing::Level::DEBUG);
            let result = op(&mut shard);
            let new_deadline = std::mem::replace(&mut shard.ctx.earliest_new_deadline, u64::MAX);
            (result, std::mem::take(&mut shard.ctx.events), new_deadline)
        };
        if new_deadline < self.planned_wake.fetch_min(new_deadline, Ordering::AcqRel) {
            self.timers_changed.notify_one();
        }
        if !events.is_empty() {
            events::emit(events);
        }
        result
    }

    fn claim<'a>(&self, request: &LockRequest<'a>) -> Claim<'a> {
        Claim { owner: request.owner, lease_ms: self.lease_for(request.lease_ms), conn: request.conn }
    }

    pub fn try_lock(&self, request: LockRequest<'_>, noqueue: bool, now: u64) -> TryOutcome {
        self.try_lock_sharing_key(request, noqueue, now).0
    }

    /// [`LockCore::try_lock`], also handing back the core's copy of the key for callers that keep
    /// it (a reference count instead of a second copy and a second lookup).
    pub fn try_lock_sharing_key(&self, request: LockRequest<'_>, noqueue: bool, now: u64) -> (TryOutcome, Arc<[u8]>) {
        let claim = self.claim(&request);
        self.on_shard(request.key, |shard| {
            shard.with_key(request.key, now, |state, key, ctx| {
                (state.try_lock(key, claim, noqueue, ctx, now), Arc::clone(key))
            })
        })
    }

    pub fn wait(&self, request: LockRequest<'_>, now: u64) -> WaitStart {
        self.wait_sharing_key(request, now).0
    }

    /// [`LockCore::wait`], also handing back the core's copy of the key.
    pub fn wait_sharing_key(&self, request: LockRequest<'_>, now: u64) -> (WaitStart, Arc<[u8]>) {
        let claim = self.claim(&request);
        self.on_shard(request.key, |shard| {
            shard.with_key(request.key, now, |state, key, ctx| {
                let start = match state.wait(key, claim, ctx, now) {
                    Ok(outcome) => WaitStart::Ready(outcome),
                    Err(blocked) => WaitStart::Blocked(WaitTicket {
                        key: Arc::clone(key),
                        conn: request.conn,
                        wait_id: blocked.wait_id,
                        receiver: blocked.receiver,
                        granted_at: blocked.granted_at,
                    }),
                };
                (start, Arc::clone(key))
            })
        })
    }

    /// The WAIT's timeout passed. Returns the answer it got in the meantime, if any (then that is
    /// its reply); otherwise it is no longer blocked and keeps its place for its queue lease.
    pub fn wait_timed_out(&self, mut ticket: WaitTicket, now: u64) -> Option<WaitOutcome> {
        self.on_shard(&ticket.key.clone(), |shard| {
            let unblocked =
                shard.with_existing(&ticket.key, now, |state, _, _| state.unblock(ticket.wait_id, false, now));
            if unblocked == Some(true) { None } else { ticket.receiver.try_recv().ok() }
        })
    }

    /// The WAIT's connection closed (or the server is stopping): the owner leaves the queue. If a
    /// grant had already been sent to it, the lock passes on as after a FAILURE, in the same step.
    pub fn wait_abandoned(&self, mut ticket: WaitTicket, now: u64) {
        self.on_shard(&ticket.key.clone(), |shard| {
            let unblocked =
                shard.with_existing(&ticket.key, now, |state, _, _| state.unblock(ticket.wait_id, true, now));
            if unblocked == Some(true) {
                return;
            }
            if let Ok(WaitOutcome::Acquired { token }) = ticket.receiver.try_recv() {
                shard.with_existing(&ticket.key, now, |state, key, ctx| {
                    state.grant_undelivered(key, token, ticket.conn, ctx, now);
                });
            }
        })
    }

    pub fn unlock(&self, key: &[u8], owner: &[u8], token: u64, verdict: Verdict, now: u64) -> UnlockOutcome {
        let verdict = match verdict {
            Verdict::Success { result, keep_ms } => {
                Verdict::Success { result, keep_ms: if keep_ms == 0 { 0 } else { self.lease_for(Some(keep_ms)) } }
            }
            failure => failure,
        };
        self.on_shard(key, |shard| {
            shard
                .with_existing(key, now, |state, key, ctx| state.unlock(key, owner, token, verdict, ctx, now))
                .unwrap_or(UnlockOutcome::NotLocked)
        })
    }

    pub fn extend(&self, key: &[u8], owner: &[u8], token: u64, lease_ms: u64, conn: ConnId, now: u64) -> ExtendOutcome {
        let lease_ms = self.lease_for(Some(lease_ms));
        self.on_shard(key, |shard| {
            shard
                .with_existing(key, now, |state, _, _| state.extend(owner, token, lease_ms, conn, now))
                .unwrap_or(ExtendOutcome::NotLocked)
        })
    }

    pub fn cancel(&self, key: &[u8], owner: &[u8], now: u64) -> bool {
        self.on_shard(key, |shard| shard.with_existing(key, now, |state, _, _| state.cancel(owner)).unwrap_or(false))
    }

    pub fn info(&self, key: &[u8], now: u64) -> Option<KeyInfo> {
        self.on_shard(key, |shard| shard.with_existing(key, now, |state, _, _| state.info(now)))
    }

    /// The core's own copy of `key`, if it has state, for callers that keep keys around (sharing
    /// it costs a reference count instead of a second copy).
    pub fn shared_key(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.on_shard(key, |shard| shard.keys.get_key_value(key).map(|(key, _)| Arc::clone(key)))
    }

    /// Whether `conn` holds `key` or is the connection a grant of `key` would bind to.
    pub fn bound_to_conn(&self, key: &[u8], conn: ConnId) -> bool {
        self.on_shard(key, |shard| shard.keys.get(key).is_some_and(|state| state.bound_to_conn(conn)))
    }

    /// A connection closed: every lock it holds (among `keys`, the ones it acquired, waited for or
    /// extended) fails over to the next waiter, when release-on-disconnect is on.
    pub fn release_connection<'k>(&self, conn: ConnId, keys: impl IntoIterator<Item = &'k [u8]>, now: u64) {
        if !self.settings.release_on_disconnect {
            return;
        }
        for key in keys {
            self.on_shard(key, |shard| {
                shard.with_existing(key, now, |state, key, ctx| {
                    if state.held_by_conn(conn) {
                        state.release_as_failed(key, ReleaseCause::HolderDisconnected, ctx, now);
                    }
                });
            });
        }
    }

    /// Applies every expiry due at `now` (lease expiries hand the lock on). Returns the next
    /// deadline, so the caller knows when to come back.
    pub fn expire(&self, now: u64) -> Option<u64> {
        // Deadlines added while we scan lower this again and notify.
        self.planned_wake.store(u64::MAX, Ordering::Release);
        let mut next: Option<u64> = None;
        for shard in self.shards.iter() {
            let (deadline, events) = {
                let mut shard = shard.lock();
                let deadline = shard.expire(now);
                shard.ctx.earliest_new_deadline = u64::MAX;
                (deadline, std::mem::take(&mut shard.ctx.events))
            };
            events::emit(events);
            next = match (next, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if let Some(next) = next {
            self.planned_wake.fetch_min(next, Ordering::AcqRel);
        }
        next
    }

    /// Counters plus current gauges, summed over the shards.
    pub fn stats(&self) -> CoreStats {
        let mut total = CoreStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            let counters = shard.ctx.stats;
            total.grants += counters.grants;
            total.handoffs += counters.handoffs;
            total.successes += counters.successes;
            total.failures += counters.failures;
            total.lease_expiries += counters.lease_expiries;
            total.disconnect_releases += counters.disconnect_releases;
            total.done_answers += counters.done_answers;
            for state in shard.keys.values() {
                state.count_into(&mut total);
            }
        }
        total
    }

    /// Zeroes the event counters (the gauges are computed, so they stay).
    pub fn reset_counters(&self) {
        for shard in self.shards.iter() {
            shard.lock().ctx.stats = CoreStats::default();
        }
    }

    /// Number of keys with any state (held, queued, or remembering a completion).
    pub fn key_count(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().keys.len()).sum()
    }
}

#[cfg(test)]
mod tests;
