//! The lock core: a sharded table of lock states that knows nothing of sockets and never reads a
//! clock. Callers pass the current [`Timestamp`] and get outcome enums back. Each shard is a
//! `parking_lot` mutex held only for the few steps of one operation, never across an `.await`.
//!
//! Layout: [`LockCore`] (here) routes each call to its shard; `shard` owns the keys and their
//! timers and funnels every change of a key through `Shard::change` (which also keeps the
//! gauges); `key_state` is the state machine of one key, `queue` its FIFO line (over `ranked`, an
//! order-statistics tree), `told_done` the DONEs it owes; `outcome` is what callers get back,
//! `mailbox` where a blocked WAIT's answer is left, and `events` what is logged and told to the
//! observer.
//!
//! Nothing a request or a timer does here walks all keys or a whole queue: a hostile client can
//! make either hold millions of entries, and every shard lock held meanwhile stalls other clients.

mod change;
mod change_codec;
mod clock;
mod events;
mod footprint;
mod key_state;
mod key_table;
mod keyslot;
mod mailbox;
mod outcome;
mod queue;
mod ranked;
mod shard;
#[doc(hidden)]
pub mod testing;
mod timers;
mod told_done;
mod unlock_memo;

use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

pub use change::{Change, ChangeRef, ChangeSink};
pub use change_codec::{BATCH_PART_BYTES, ChangeEncoder, DecodeError, WallClock, decode_changes};
pub(crate) use change_codec::{Input, put_u64};
pub(crate) use clock::token_seed;
pub use clock::{Clock, Timestamp};
pub(crate) use events::{LockEvent, LockObserver};
pub use events::{Notification, ReleaseCause};
pub(crate) use keyslot::{SLOTS, key_slot};
pub use mailbox::{AnswerWriter, Letter, Mailbox};
pub(crate) use outcome::CoreStats;
pub use outcome::{
    Answer, Answered, Completion, ExtendOutcome, Gauges, HandedTo, HolderInfo, KeyInfo, LockStateName, RecordedAt,
    TryOutcome, UnlockOutcome, Verdict, WaitOutcome, WaitStart, WaitTicket, Written,
};

use key_state::{Claim, NotAnswered};
use key_table::{POSITION_BITS, ScanBudget};
#[cfg(test)]
pub(crate) use queue::PLACE_BYTES;
use queue::WaitEnds;
pub use shard::KeyHash;
use shard::{Absent, SHARD_BITS, Shard};
pub use told_done::OwedDone;

/// Connections are numbered from 1 by the server; the core only compares them.
pub type ConnId = NonZeroU64;

/// What holders and places recovered from a journal are bound to: no connection, so no close
/// releases them until their owner re-attaches (with a TRY, WAIT or EXTEND) or their lease ends.
pub const RECOVERED: ConnId = NonZeroU64::MAX;

/// `planned_wake` while the expiry driver has no deadline planned (or is scanning). An atomic
/// cannot hold an `Option`, and no deadline in milliseconds reaches this.
const NO_WAKE_PLANNED: u64 = u64::MAX;

/// Keys that background work (a closing connection's release, lease expiries) changes per
/// shard-lock acquisition. Each costs about a microsecond under the lock, so other clients of the
/// shard wait a fraction of a millisecond, while the lock is taken a few hundred times less often
/// than key by key.
pub const SLICE: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct CoreSettings {
    pub default_lease_ms: u64,
    pub max_lease_ms: u64,
    pub release_on_disconnect: bool,
    pub shards: usize,
    /// The most one key's queue may weigh, its owners' bytes and [`queue::PLACE_BYTES`] a place:
    /// a TRY or WAIT of an owner without a place that would take it over is answered QueueFull.
    /// The largest steps the core takes (telling a whole queue DONE, skipping a line of lapsed
    /// places) record a change per place, and each step is one journal record or Raft entry,
    /// whose size is bounded.
    pub max_queue_bytes: usize,
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

/// What a LOCK.TRY does when another owner holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfHeld {
    /// Take a place in the line (or renew the one the owner has): the default.
    Queue,
    /// NOQUEUE: answer BUSY with the holder, joining nothing (a place the owner has is renewed).
    NoQueue,
}

pub struct LockCore {
    shards: Box<[Mutex<Shard>]>,
    settings: CoreSettings,
    /// The deadline the expiry driver plans to wake at ([`NO_WAKE_PLANNED`] while it is scanning).
    planned_wake: AtomicU64,
    timers_changed: Notify,
    /// See [`LockCore::pause_grants_until`]; 0 when never paused.
    grants_resume_at: AtomicU64,
    observer: Option<Arc<dyn LockObserver>>,
    /// One per shard: whose turn it is to tell the observer (see [`LockCore::observation_turn`]).
    observation_turns: Box<[Mutex<()>]>,
}

impl LockCore {
    pub fn new(settings: CoreSettings, token_seed: u64) -> LockCore {
        let count = settings.shards.clamp(1, 1 << SHARD_BITS).next_power_of_two();
        let shards = (0..count).map(|index| Mutex::new(Shard::new(token_seed, count, index))).collect();
        LockCore {
            shards,
            settings,
            planned_wake: AtomicU64::new(NO_WAKE_PLANNED),
            timers_changed: Notify::new(),
            grants_resume_at: AtomicU64::new(0),
            observer: None,
            observation_turns: (0..count).map(|_| Mutex::new(())).collect(),
        }
    }

    /// From now on every lock event is also told to `observer`, while it listens.
    pub(crate) fn set_observer(&mut self, observer: Arc<dyn LockObserver>) {
        self.observer = Some(observer);
    }

    /// The observer, if it listens now: one atomic load when nobody does.
    fn listening_observer(&self) -> Option<&dyn LockObserver> {
        self.observer.as_deref().filter(|observer| observer.listening())
    }

    /// Called with shard `index` still locked and the events of the operation that just ran on it:
    /// the turn to tell the observer, taken before the shard lock is released, so that the next
    /// operation on the shard (which may run on another thread as soon as it is) cannot tell its
    /// events first, while the observer itself is called without the shard lock. None when
    /// there is nothing to tell.
    fn observation_turn(&self, index: usize, observing: bool, events: &[LockEvent]) -> Option<MutexGuard<'_, ()>> {
        (observing && !events.is_empty()).then(|| self.observation_turns[index].lock())
    }

    pub(crate) fn settings(&self) -> &CoreSettings {
        &self.settings
    }

    /// Notified when a deadline earlier than the one returned by the last [`LockCore::expire`]
    /// appears, so the expiry driver can sleep until then and no longer.
    pub(crate) fn timers_changed(&self) -> &Notify {
        &self.timers_changed
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Turns a requested lease (PX, KEEP, EXTEND) into the one applied: the default when absent,
    /// capped by the maximum.
    pub(crate) fn lease_for(&self, requested: Option<u64>) -> u64 {
        requested.unwrap_or(self.settings.default_lease_ms).clamp(1, self.settings.max_lease_ms)
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        Self::shard_index(key, self.shards.len())
    }

    /// Locks the key's shard, runs `op`, and logs what happened (and tells the observer) once the
    /// shard lock is released.
    fn on_shard<R>(&self, key: &[u8], op: impl FnOnce(&mut Shard) -> R) -> R {
        self.on_shard_at(self.shard_of(key), op)
    }

    /// [`LockCore::on_shard`] by the shard's index.
    fn on_shard_at<R>(&self, index: usize, op: impl FnOnce(&mut Shard) -> R) -> R {
        let (result, events) = self.on_shard_logging_later(index, op);
        if !events.is_empty() {
            events::emit(events);
        }
        result
    }

    /// [`LockCore::on_shard_at`], handing back the events for the caller to log.
    fn on_shard_logging_later<R>(&self, index: usize, op: impl FnOnce(&mut Shard) -> R) -> (R, Vec<LockEvent>) {
        let observer = self.listening_observer();
        let (result, events, new_deadline, turn) = {
            let mut shard = self.shards[index].lock();
            shard.ctx.collect_all_events = observer.is_some() || tracing::enabled!(tracing::Level::DEBUG);
            let result = op(&mut shard);
            shard.flush_changes();
            let new_deadline = shard.ctx.earliest_new_deadline.take();
            let events = std::mem::take(&mut shard.ctx.events);
            let turn = self.observation_turn(index, observer.is_some(), &events);
            (result, events, new_deadline, turn)
        };
        if let Some(deadline) = new_deadline
            && deadline < self.planned_wake.fetch_min(deadline, Ordering::AcqRel)
        {
            self.timers_changed.notify_one();
        }
        if let (Some(observer), Some(_turn)) = (observer, turn) {
            observer.observe(&events);
        }
        (result, events)
    }

    /// Runs `op` on the key's state through [`Shard::change`], creating the key when it has none;
    /// also hands back the key's hash.
    fn change_key<R>(
        &self,
        key: &[u8],
        now: Timestamp,
        op: impl FnOnce(&mut key_state::KeyState, &shard::StepKey<'_>, &mut shard::ShardCtx, Timestamp) -> R,
    ) -> (R, KeyHash) {
        let (result, hash) = self.change_hashing(key, Absent::Create, now, op);
        (result.expect("Absent::Create always has a state to change"), hash)
    }

    /// [`Shard::change`] of `key`, also handing back the key's hash (computed once, for both).
    fn change_hashing<R>(
        &self,
        key: &[u8],
        absent: Absent,
        now: Timestamp,
        op: impl FnOnce(&mut key_state::KeyState, &shard::StepKey<'_>, &mut shard::ShardCtx, Timestamp) -> R,
    ) -> (Option<R>, KeyHash) {
        self.on_shard(key, |shard| {
            let hash = shard.key_hash(key);
            (shard.change_hashed(hash, key, absent, now, op), hash)
        })
    }

    /// Runs `op` on the key's state through [`Shard::change`]; None when the key has no state.
    fn change_existing<R>(
        &self,
        key: &[u8],
        now: Timestamp,
        op: impl FnOnce(&mut key_state::KeyState, &shard::StepKey<'_>, &mut shard::ShardCtx, Timestamp) -> R,
    ) -> Option<R> {
        self.on_shard(key, |shard| shard.change(key, Absent::Skip, now, op))
    }

    fn claim<'a>(&self, request: &LockRequest<'a>) -> Claim<'a> {
        Claim {
            owner: request.owner,
            lease_ms: self.lease_for(request.lease_ms),
            conn: request.conn,
            max_queue_bytes: self.settings.max_queue_bytes,
        }
    }

    /// LOCK.TRY, for callers to whom an answer is as good as delivered: a DONE it pays is not
    /// handed back (a server's connection uses [`LockCore::try_lock_answered`]).
    pub fn try_lock(&self, request: LockRequest<'_>, if_held: IfHeld, now: Timestamp) -> TryOutcome {
        self.try_lock_answered(request, if_held, now).outcome
    }

    /// LOCK.TRY, with the DONE its answer paid, if any.
    pub fn try_lock_answered(&self, request: LockRequest<'_>, if_held: IfHeld, now: Timestamp) -> Answered<TryOutcome> {
        self.try_lock_hashing_key(request, if_held, now).0
    }

    /// [`LockCore::try_lock_answered`], also handing back the key's hash for callers that
    /// remember the key (without a second lookup).
    pub(crate) fn try_lock_hashing_key(
        &self,
        request: LockRequest<'_>,
        if_held: IfHeld,
        now: Timestamp,
    ) -> (Answered<TryOutcome>, KeyHash) {
        let claim = self.claim(&request);
        self.change_key(request.key, now, |state, key, ctx, now| state.try_lock(key, claim, if_held, ctx, now))
    }

    /// LOCK.WAIT on the connection whose mailbox is `mailbox` (`request.conn`'s). If it blocks,
    /// its answer will be posted there.
    pub fn wait(&self, request: LockRequest<'_>, mailbox: &Arc<Mailbox>, now: Timestamp) -> WaitStart {
        self.wait_hashing_key(request, mailbox, now).0
    }

    /// [`LockCore::wait`], also handing back the key's hash.
    pub(crate) fn wait_hashing_key(
        &self,
        request: LockRequest<'_>,
        mailbox: &Arc<Mailbox>,
        now: Timestamp,
    ) -> (WaitStart, KeyHash) {
        debug_assert_eq!(request.conn, mailbox.conn(), "a WAIT is answered on its own connection");
        let claim = self.claim(&request);
        self.change_key(request.key, now, |state, key, ctx, now| match state.wait(key, claim, mailbox, ctx, now) {
            Ok(answered) => WaitStart::Ready(answered),
            Err(NotAnswered::QueueFull) => WaitStart::QueueFull,
            Err(NotAnswered::Blocked(blocked)) => WaitStart::Blocked(WaitTicket {
                place: blocked.place,
                mailbox: Arc::clone(mailbox),
                number: blocked.number,
            }),
        })
    }

    /// The WAIT on `key` that `ticket` stands for timed out. Returns the answer it got in the
    /// meantime, if any (then that is its reply, and a grant's hand-off latency counts from its
    /// `sent_at`); otherwise it is no longer blocked and keeps its place for its queue lease.
    ///
    /// The ticket does not keep the key: the connection has it already, in the request it read.
    pub fn wait_timed_out(&self, mut ticket: WaitTicket, key: &[u8], now: Timestamp) -> Option<Answer> {
        let unblocked = self.change_existing(key, now, |state, key, ctx, now| {
            state.unblock(key, ticket.place, ticket.wait(), WaitEnds::TimedOut, ctx, now)
        });
        // Not blocked any more: the answer was posted under the shard lock, so it is in the mailbox.
        if unblocked == Some(true) {
            return None;
        }
        match ticket.take_letter()? {
            Letter::Answer(answer) => Some(answer),
            Letter::Withdrawn => None,
        }
    }

    /// The WAIT's connection closed (or the server is stopping): the owner leaves the queue. If a
    /// grant had already been sent to it, it is undelivered (see [`LockCore::grant_undelivered`]),
    /// in the same step.
    pub fn wait_abandoned(&self, mut ticket: WaitTicket, key: &[u8], now: Timestamp) {
        let found = self.change_existing(key, now, |state, key, ctx, now| {
            if state.unblock(key, ticket.place, ticket.wait(), WaitEnds::Abandoned, ctx, now) {
                return;
            }
            // A grant written whole to the client by the connection that handed it over was
            // delivered: the lock is this connection's, released with it like any other.
            match ticket.take_letter() {
                Some(Letter::Answer(Answer { outcome: WaitOutcome::Acquired { token }, written, .. }))
                    if written != Written::Whole =>
                {
                    state.grant_undelivered(key, token, ticket.conn(), ctx, now);
                }
                // A DONE paid for a direct write that did not finish it: owed again.
                Some(Letter::Answer(Answer { paid: Some(paid), .. })) => state.done_unwritten(key, paid, ctx, now),
                _ => {}
            }
        });
        // Its payment may have let the key be forgotten.
        if found.is_none() {
            self.give_back_unwritten_done(&mut ticket, key, now);
        }
    }

    /// The server is stopping while the WAIT blocks: the owner keeps its place (the server goes
    /// away, not the client), and a DONE paid for a direct write that did not finish it is owed
    /// again, as it stays owed to a WAIT that was told DONE and not written to.
    pub fn wait_stopped_by_shutdown(&self, mut ticket: WaitTicket, key: &[u8], now: Timestamp) {
        self.give_back_unwritten_done(&mut ticket, key, now);
    }

    fn give_back_unwritten_done(&self, ticket: &mut WaitTicket, key: &[u8], now: Timestamp) {
        if let Some(Letter::Answer(Answer { paid: Some(paid), .. })) = ticket.take_letter() {
            self.done_unwritten(key, paid, now);
        }
    }

    /// The grant `token` of `key` was taken out of a blocked WAIT on `conn` but never reached the
    /// client (the connection closed first). The lock passes on as after a FAILURE (`last_failure`:
    /// the grant never reached the waiter), unless the owner has it through another connection:
    /// one that was sent the same grant (the lock then binds to the newest of those), or one it
    /// renewed or extended on since.
    pub fn grant_undelivered(&self, key: &[u8], token: u64, conn: ConnId, now: Timestamp) {
        self.change_existing(key, now, |state, key, ctx, now| state.grant_undelivered(key, token, conn, ctx, now));
    }

    /// The DONE of the completion `token` that a blocked WAIT of `owner` was answered is about to
    /// be written to its client. Until then the owner stays owed it, so that one lost with its
    /// connection (or with the server) is told again on its next call, not granted the work done
    /// already. From then on it is paid: were it paid only once written, the client could read
    /// it and call again on another connection before then, and be told DONE twice. A write that
    /// fails gives the debt back with [`LockCore::done_unwritten`].
    pub fn pay_done(&self, key: &[u8], owner: &[u8], token: u64, now: Timestamp) -> Option<OwedDone> {
        self.change_existing(key, now, |state, key, ctx, _| state.pay_done(key, owner, token, ctx)).flatten()
    }

    /// Writes the DONEs a SUCCESS left for its connection (see [`HandedTo`]), once its record is
    /// written: each is paid under its key's shard lock, as [`LockCore::pay_done`] pays the one a
    /// waiter's task writes, then written outside it (see `Mailbox::write_directly`). One event
    /// loop telling 10,000 waiters sent the last DONE 0.66x as soon, with 0.88x the CPU, as when
    /// each waiter's task was polled to pay and write its own (docs/benchmarks-history.md).
    ///
    /// Threads that call it with the same `handed_to` share its DONEs: each takes a few at a time
    /// until none is left, so together they write each once, and finish at about the same time
    /// however fast each ran. Returns how many this call wrote whole.
    pub fn write_dones_directly(&self, handed_to: &HandedTo, now: Timestamp) -> usize {
        let Some(dones) = &handed_to.dones else {
            return 0;
        };
        let mut written_whole = 0;
        loop {
            let taken = dones.take_some();
            if taken.is_empty() {
                return written_whole;
            }
            for (mailbox, number, owner) in taken {
                let paid = self
                    .change_existing(&dones.key, now, |state, key, ctx, _| {
                        mailbox.pay_for_direct_write(*number, || state.pay_done(key, owner, dones.token, ctx))
                    })
                    .unwrap_or(false);
                if paid && mailbox.write_directly(*number) == Written::Whole {
                    written_whole += 1;
                }
            }
        }
    }

    /// A DONE paid by [`LockCore::pay_done`] or by an answer (see [`Answered`]) was not written:
    /// the owner is owed it again.
    pub fn done_unwritten(&self, key: &[u8], unwritten: OwedDone, now: Timestamp) {
        self.on_shard(key, |shard| {
            shard
                .change(key, Absent::Create, now, |state, key, ctx, now| state.done_unwritten(key, unwritten, ctx, now))
        });
    }

    pub fn unlock(&self, key: &[u8], owner: &[u8], token: u64, verdict: Verdict, now: Timestamp) -> UnlockOutcome {
        self.unlock_handing_off(key, owner, token, verdict, now).0
    }

    /// [`LockCore::unlock`], also saying which blocked WAITs a FAILURE handed the lock to, for the
    /// caller to write their grants itself ([`HandedTo::write_directly`]).
    pub fn unlock_handing_off(
        &self,
        key: &[u8],
        owner: &[u8],
        token: u64,
        verdict: Verdict,
        now: Timestamp,
    ) -> (UnlockOutcome, HandedTo) {
        let verdict = match verdict {
            Verdict::Success { result, keep_ms } => {
                Verdict::Success { result, keep_ms: keep_ms.map(|keep_ms| self.lease_for(Some(keep_ms))) }
            }
            failure => failure,
        };
        let ((outcome, mut handed_to), events) = self.on_shard_logging_later(self.shard_of(key), |shard| {
            shard.ctx.handed_to = Some(HandedTo::default());
            let outcome = shard
                .change(key, Absent::Skip, now, |state, key, ctx, now| {
                    state.unlock(key, owner, token, verdict, ctx, now)
                })
                // A retry of an UNLOCK that was carried out gets the same answer.
                .unwrap_or_else(|| shard.ctx.unlock_memo.answer(key, owner, token).unwrap_or(UnlockOutcome::NotLocked));
            (outcome, shard.ctx.handed_to.take().unwrap_or_default())
        });
        // Logged once the caller has written the grants.
        handed_to.log_later(events);
        (outcome, handed_to)
    }

    pub fn extend(
        &self,
        key: &[u8],
        owner: &[u8],
        token: u64,
        lease_ms: u64,
        conn: ConnId,
        now: Timestamp,
    ) -> ExtendOutcome {
        self.extend_hashing_key(LockRequest { key, owner, lease_ms: Some(lease_ms), conn }, token, now).0
    }

    /// [`LockCore::extend`], also handing back the key's hash.
    pub(crate) fn extend_hashing_key(
        &self,
        request: LockRequest<'_>,
        token: u64,
        now: Timestamp,
    ) -> (ExtendOutcome, KeyHash) {
        let claim = self.claim(&request);
        let (extended, hash) = self.change_hashing(request.key, Absent::Skip, now, |state, key, ctx, now| {
            state.extend(key, claim, token, ctx, now)
        });
        (extended.unwrap_or(ExtendOutcome::NotLocked), hash)
    }

    pub fn cancel(&self, key: &[u8], owner: &[u8], now: Timestamp) -> bool {
        self.change_existing(key, now, |state, key, ctx, _| state.cancel(key, owner, ctx)).unwrap_or(false)
    }

    /// LOCK.INFO of `key`, listing at most `listed` owners from the head of its line.
    pub fn info(&self, key: &[u8], now: Timestamp, listed: usize) -> Option<KeyInfo> {
        self.change_existing(key, now, |state, _, _, now| state.info(now, listed))
    }

    /// The owners `key` owes a DONE (a SUCCESS emptied the line while they were not blocked), in
    /// byte order: LOCK.INFO does not show them, tests of the journal compare them.
    #[doc(hidden)]
    pub fn owed_dones(&self, key: &[u8]) -> Vec<Arc<[u8]>> {
        self.on_shard(key, |shard| shard.peek(key).map(|(_, state)| state.owed_dones()).unwrap_or_default())
    }

    /// Whether `key` has any state (a holder, a line, a remembered or owed DONE) once what fell
    /// due is settled: the keys EXISTS, TYPE and SCAN know of.
    pub fn exists(&self, key: &[u8], now: Timestamp) -> bool {
        self.change_existing(key, now, |state, _, _, _| !state.is_forgettable()).unwrap_or(false)
    }

    /// MEMORY USAGE: an estimate of the bytes `key` takes, its line and owed DONEs estimated from
    /// their first `samples` entries (see `footprint`); None when it has no state.
    pub fn footprint(&self, key: &[u8], samples: usize, now: Timestamp) -> Option<usize> {
        self.change_existing(key, now, |state, key, _, _| {
            (!state.is_forgettable()).then(|| shard::footprint(key, state, samples))
        })
        .flatten()
    }

    /// One SCAN call: the keys from `cursor` on, about `count` of them, and the cursor to go on
    /// from (0 once every shard has been gone through). None when `cursor` names no shard here.
    ///
    /// A cursor is a shard index above [`POSITION_BITS`] bits and a position in that shard's
    /// table below (see `key_table`); 0 starts an iteration. The shards are gone through in
    /// order, each from the position on, one shard lock at a time and for a bounded number of
    /// keys: what one call costs does not grow with the number of keys. A key present from the
    /// first call to the last is returned, whatever keys come and go and however the tables
    /// grow and shrink meanwhile, and no key is returned twice. With at most 2^16 shards a
    /// cursor stays below 2^40, exact even for clients that read it as a double.
    pub fn scan(&self, cursor: u64, count: usize) -> Option<ScanPage> {
        let mut shard = usize::try_from(cursor >> POSITION_BITS).ok().filter(|shard| *shard < self.shards.len())?;
        let mut position = (cursor & ((1 << POSITION_BITS) - 1)) as u32;
        let mut budget = ScanBudget::new(count);
        let mut keys = Vec::new();
        loop {
            match self.shards[shard].lock().scan(position, &mut budget, &mut keys) {
                Some(next) => position = next,
                None if shard + 1 == self.shards.len() => return Some(ScanPage { cursor: 0, keys }),
                None => (shard, position) = (shard + 1, 0),
            }
            if budget.exhausted() {
                let cursor = ((shard as u64) << POSITION_BITS) | u64::from(position);
                return Some(ScanPage { cursor, keys });
            }
        }
    }

    /// Returns once whatever operation on `key`'s shard is under way has finished, changes
    /// handed to the sink included.
    pub(crate) fn barrier(&self, key: &[u8]) {
        self.on_shard(key, |_| ());
    }

    /// How a connection remembers `key`, whose state it may be bound to.
    pub(crate) fn key_hash(&self, key: &[u8]) -> KeyHash {
        self.shards[self.shard_of(key)].lock().key_hash(key)
    }

    /// Whether a close of `conn` may matter for the key with `hash`: it holds it, a grant would
    /// bind to it, or it was sent the current grant.
    #[cfg(test)]
    pub(crate) fn bound_to_conn(&self, hash: KeyHash, conn: ConnId) -> bool {
        self.shards[hash.shard()].lock().bound_to_conn(hash, conn)
    }

    /// Keeps in `hashes`, once each, the keys whose close of `conn` may matter (see
    /// [`LockCore::bound_to_conn`]), and now and then one that no longer does (see
    /// [`Shard::may_be_bound_to_conn`]). A connection prunes its list of bound keys with this: the
    /// keys are looked at shard by shard, [`SLICE`] of them per acquisition of a shard's lock
    /// (a lookup each, nothing changed), instead of one acquisition per key.
    pub(crate) fn retain_bound(&self, conn: ConnId, hashes: &mut Vec<KeyHash>) {
        hashes.sort_unstable_by_key(|hash| (hash.shard(), *hash));
        hashes.dedup();
        let mut kept = 0;
        let mut start = 0;
        while start < hashes.len() {
            let index = hashes[start].shard();
            let same_shard = hashes[start..].iter().take(SLICE).take_while(|hash| hash.shard() == index).count();
            let shard = self.shards[index].lock();
            for position in start..start + same_shard {
                let hash = hashes[position];
                if shard.may_be_bound_to_conn(hash, conn) {
                    hashes[kept] = hash;
                    kept += 1;
                }
            }
            drop(shard);
            start += same_shard;
        }
        hashes.truncate(kept);
    }

    /// A connection closed: plans the release of the keys with `hashes` (the ones it acquired,
    /// queued for, waited for or extended), which [`LockCore::release_slice`] then carries out a
    /// slice at a time. Nothing is released when release-on-disconnect is off.
    pub fn release_connection(&self, conn: ConnId, hashes: impl IntoIterator<Item = KeyHash>) -> ConnectionRelease {
        let mut release = ConnectionRelease { conn, by_shard: Vec::new() };
        if self.settings.release_on_disconnect {
            release.by_shard.resize_with(self.shards.len(), Vec::new);
            for hash in hashes {
                release.by_shard[hash.shard()].push(hash);
            }
            release.drop_finished_shards();
        }
        release
    }

    /// Releases up to [`SLICE`] keys of `release`, all of one shard, under one
    /// acquisition of its lock: the queue places the connection last refreshed are dropped
    /// (unless the owner is blocked on another connection), and every lock bound to it fails over
    /// to the next waiter, unless the owner was sent the same grant on a connection still open.
    /// Returns whether keys remain; a caller on a runtime yields between slices, so that a
    /// connection holding a million locks does not hold a worker thread for seconds.
    pub fn release_slice(&self, release: &mut ConnectionRelease, now: Timestamp) -> bool {
        let index = release.by_shard.len().saturating_sub(1);
        let Some(keys) = release.by_shard.last_mut() else {
            return false;
        };
        let slice = keys.split_off(keys.len().saturating_sub(SLICE));
        let conn = release.conn;
        self.on_shard_at(index, |shard| {
            for hash in slice {
                shard.connection_closed(hash, conn, now);
            }
        });
        release.drop_finished_shards();
        !release.by_shard.is_empty()
    }

    /// Applies the expiries due at `now` (lease expiries hand the lock on), [`SLICE`] of them at
    /// most, taking each shard's lock at most once. Returns the next deadline, so the caller
    /// knows when to come back: at or before `now` while expiries remain due (a million leases
    /// that end together), when it should yield to other work and come back at once. One call
    /// costs about what one request does, so on one worker thread the clients' requests
    /// interleave with the expiries.
    pub fn expire(&self, now: Timestamp) -> Option<u64> {
        // Deadlines added while we scan lower this again and notify.
        self.planned_wake.store(NO_WAKE_PLANNED, Ordering::Release);
        let mut next: Option<u64> = None;
        let mut budget = SLICE;
        let mut events = Vec::new();
        let observer = self.listening_observer();
        for (index, shard) in self.shards.iter().enumerate() {
            if budget == 0 {
                // Shards not looked at may have expiries due: come back at once.
                next = Some(now.ms());
                break;
            }
            let shard_events_from = events.len();
            let (deadline, turn) = {
                let mut shard = shard.lock();
                shard.ctx.collect_all_events = observer.is_some() || tracing::enabled!(tracing::Level::DEBUG);
                let deadline = shard.expire(now, &mut budget);
                shard.flush_changes();
                shard.ctx.earliest_new_deadline = None;
                events.append(&mut shard.ctx.events);
                (deadline, self.observation_turn(index, observer.is_some(), &events[shard_events_from..]))
            };
            // Observers hear of each shard's expiries before the next shard is looked at: the
            // clients a hand-off woke may already be acting on it.
            if let (Some(observer), Some(_turn)) = (observer, turn) {
                observer.observe(&events[shard_events_from..]);
            }
            next = next.into_iter().chain(deadline).min();
        }
        // One batch for the pass, so that a mass expiry is told in a line, not one per shard.
        events::emit(events);
        if let Some(next) = next {
            self.planned_wake.fetch_min(next, Ordering::AcqRel);
        }
        next
    }

    /// From now on every durable change is handed to `sink`, in order per key (see [`Change`]).
    pub fn attach_sink(&self, sink: Arc<dyn ChangeSink>) {
        for shard in self.shards.iter() {
            shard.lock().set_sink(Some(Arc::clone(&sink)));
        }
    }

    /// Stops handing changes on: what happens from now on (a stopping server dropping its
    /// connections) is not journaled.
    pub fn detach_sink(&self) {
        for shard in self.shards.iter() {
            shard.lock().set_sink(None);
        }
    }

    /// Replays a batch of changes read back from a journal (what one [`ChangeSink::record`] call
    /// took, or a snapshot), at the moment `now` of this server's clock. The changes of one key
    /// that follow each other were one step of the live core and are replayed as one step, so a
    /// key is forgotten between steps exactly when the live core forgot it. Call before any
    /// client is served, then [`LockCore::finish_replay`].
    pub fn replay(&self, batch: Vec<Change>, now: Timestamp) {
        let mut changes = batch.into_iter().peekable();
        while let Some(first) = changes.next() {
            let key = Arc::clone(first.key());
            let mut step = vec![first];
            while let Some(next) = changes.next_if(|change| *change.key() == key) {
                step.push(next);
            }
            self.on_shard(&key, |shard| {
                shard.replay(&key, |state, ctx| {
                    for change in step {
                        state.replay(change, ctx, now);
                    }
                })
            });
        }
    }

    /// Grants nothing before `resume_at` (this clock's ms): TRY queues, WAIT blocks, a FAILURE or
    /// an expiry leaves the lock free with its line, and at `resume_at` every such line's head
    /// gets its lock. Holders keep renewing, extending and unlocking. After an OS crash, the
    /// records of grants not yet synced may be lost; pausing for the longest lease ever granted
    /// makes sure none of those holders still believes it holds (Chubby's lock-delay).
    pub fn pause_grants_until(&self, resume_at: u64) {
        self.grants_resume_at.store(resume_at, Ordering::Release);
        for shard in self.shards.iter() {
            shard.lock().ctx.grants_resume_at = Some(resume_at);
        }
    }

    /// How long grants stay paused, from `now`.
    pub fn grants_paused_ms(&self, now: Timestamp) -> u64 {
        self.grants_resume_at.load(Ordering::Acquire).saturating_sub(now.ms())
    }

    /// The replay is over; every token issued from now on is at least `next_token`.
    pub fn finish_replay(&self, next_token: u64) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.ctx.replayed_completion = None;
            shard.ctx.next_token = shard.ctx.next_token.max(next_token);
        }
    }

    /// Forgets every key, answering nobody: blocked waiters are told their WAIT was withdrawn.
    /// A cluster node that stops leading does this, because its live core may hold changes that
    /// will never commit; it is rebuilt from the committed state if the node leads again.
    pub fn reset(&self, token_seed: u64) {
        let count = self.shards.len();
        for (index, shard) in self.shards.iter().enumerate() {
            let mut shard = shard.lock();
            let sink = shard.take_sink();
            *shard = Shard::new(token_seed, count, index);
            shard.set_sink(sink);
        }
    }

    /// No token issued so far by this core, or replayed into it, is at or above this.
    pub fn token_floor(&self) -> u64 {
        self.shards.iter().map(|shard| shard.lock().ctx.next_token).max().unwrap_or(1)
    }

    /// The changes that rebuild shard `index` as it is now, and what `mark` returns when called
    /// in the same step (under the shard lock): a journal reads its position there, so that the
    /// snapshot holds exactly the shard's changes up to that position.
    pub fn snapshot_shard<M>(&self, index: usize, now: Timestamp, mark: impl FnOnce() -> M) -> (Vec<Change>, M) {
        let shard = self.shards[index].lock();
        (shard.snapshot(now), mark())
    }

    /// The shard `key` belongs to among `shard_count` (a power of two), as a core with that many
    /// shards places it.
    pub fn shard_index(key: &[u8], shard_count: usize) -> usize {
        (keyslot::shard_hash(key) & (shard_count.max(1) as u64 - 1)) as usize
    }

    /// Counters plus current gauges, summed over the shards: O(shards), whatever the keys.
    pub(crate) fn stats(&self) -> CoreStats {
        let mut total = CoreStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            let counters = shard.ctx.stats;
            let gauges = shard.gauges();
            total.grants += counters.grants;
            total.handoffs += counters.handoffs;
            total.successes += counters.successes;
            total.failures += counters.failures;
            total.lease_expiries += counters.lease_expiries;
            total.disconnect_releases += counters.disconnect_releases;
            total.done_answers += counters.done_answers;
            total.keys += gauges.keys;
            total.held_keys += gauges.held_keys;
            total.waiters += gauges.waiters;
            total.blocked_waiters += gauges.blocked_waiters;
        }
        total
    }

    /// The gauges as kept, summed over the shards.
    pub fn gauges(&self) -> Gauges {
        self.sum_over_shards(Shard::gauges)
    }

    /// The gauges computed afresh by walking every key, for tests to check the kept ones
    /// against. O(keys): never on a request path.
    #[doc(hidden)]
    pub fn recount_gauges(&self) -> Gauges {
        self.sum_over_shards(Shard::recount_gauges)
    }

    fn sum_over_shards(&self, gauges: impl Fn(&Shard) -> Gauges) -> Gauges {
        let mut total = Gauges::default();
        for shard in self.shards.iter() {
            total.add(gauges(&shard.lock()));
        }
        total
    }

    /// Zeroes the event counters (the gauges describe the present, so they stay).
    pub(crate) fn reset_counters(&self) {
        for shard in self.shards.iter() {
            shard.lock().ctx.stats = CoreStats::default();
        }
    }

    /// Room in the key tables and timer wheels, summed over the shards (tests check it shrinks).
    #[cfg(test)]
    pub(crate) fn table_capacity(&self) -> (usize, usize) {
        self.shards.iter().map(|shard| shard.lock().capacity()).fold((0, 0), |(k, t), (sk, st)| (k + sk, t + st))
    }

    /// Number of keys with any state (held, queued, or remembering a completion).
    pub fn key_count(&self) -> usize {
        self.gauges().keys as usize
    }
}

/// What one SCAN call found (see [`LockCore::scan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub cursor: u64,
    pub keys: Vec<Arc<[u8]>>,
}

/// The keys of a closed connection still to release, by shard (see
/// [`LockCore::release_connection`]).
#[derive(Debug)]
pub struct ConnectionRelease {
    conn: ConnId,
    /// Indexed by shard; shards are done from the last, and dropped once done.
    by_shard: Vec<Vec<KeyHash>>,
}

impl ConnectionRelease {
    fn drop_finished_shards(&mut self) {
        while self.by_shard.last().is_some_and(Vec::is_empty) {
            self.by_shard.pop();
        }
    }
}

#[cfg(test)]
mod tests;
