//! The state machine of one key: its holder, its queue, a remembered completion. Everything here
//! runs under its shard's mutex: no I/O, no awaiting, no clock; blocked waiters are answered by
//! posting to their connection's mailbox, which only wakes a task.

use std::sync::Arc;

use super::change::{Change, ChangeRef};
use super::clock::Timestamp;
use super::events::{LockEvent, ReleaseCause};
use super::footprint::arc_bytes;
use super::mailbox::Mailbox;
use super::outcome::{
    Answer, Answered, Completion, DonesToWrite, ExtendOutcome, Gauges, HolderInfo, KeyInfo, LockStateName, TryOutcome,
    UnlockOutcome, Verdict, WaitOutcome,
};
use super::queue::{Blocker, Blockers, PLACE_BYTES, Place, Queue, WaitEnds, Waiter};
use super::shard::{ShardCtx, StepKey};
use super::told_done::{OwedDone, ToldDone};
use super::{ConnId, IfHeld, RECOVERED};

#[derive(Debug)]
struct Holder {
    owner: Arc<[u8]>,
    token: u64,
    deadline: u64,
    /// The connection that last acquired, waited or extended; its close releases the lock when
    /// release-on-disconnect is on.
    conn: ConnId,
}

/// Whether a grant answers the TRY or WAIT that asked for a free lock, or passes the lock to
/// the head of its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrantKind {
    ToClaimer,
    HandOff,
}

/// Who a grant goes to, and on what terms.
struct NewHolder {
    owner: Arc<[u8]>,
    lease_ms: u64,
    conn: ConnId,
}

/// The rarer parts of a key's state, boxed so that a plain held lock stays small.
#[derive(Debug, Default)]
struct Extra {
    queue: Queue,
    /// Other connections of the holder's owner that were sent the current grant (an owner
    /// blocked on several connections, or renewing on another connection) and may still speak
    /// for it, oldest first; the lock is bound to the newest.
    grant_also_sent_to: Vec<ConnId>,
    /// The remembered completion (KEEP) and when it is forgotten.
    completion: Option<(Arc<Completion>, u64)>,
    told_done: ToldDone,
    last_failure: Option<ReleaseCause>,
    /// See [`KeyState::armed_at`].
    timer_at: Option<u64>,
}

impl Extra {
    /// See [`KeyState::footprint`].
    fn footprint(&self, samples: usize) -> usize {
        // The completion the owed DONEs share, when no KEEP remembers it.
        let completion =
            self.completion.as_ref().map(|(completion, _)| completion).or_else(|| self.told_done.any_completion());
        let reason = match &self.last_failure {
            Some(ReleaseCause::Failure(Some(reason))) => arc_bytes(reason),
            _ => 0,
        };
        size_of::<Extra>()
            + self.queue.footprint(samples)
            + self.told_done.footprint(samples)
            + self.grant_also_sent_to.capacity() * size_of::<ConnId>()
            + completion.map_or(0, |completion| completion_footprint(completion))
            + reason
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.completion.is_none()
            && self.told_done.is_empty()
            && self.last_failure.is_none()
            && self.grant_also_sent_to.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct KeyState {
    holder: Option<Holder>,
    extra: Option<Box<Extra>>,
}

/// Why a WAIT got no answer at once.
pub(crate) enum NotAnswered {
    Blocked(BlockedWait),
    /// The owner has no place and the queue has no room.
    QueueFull,
}

/// The parts of a wait ticket the state hands out.
pub(crate) struct BlockedWait {
    pub(crate) place: Place,
    /// The number the WAIT opened its mailbox under.
    pub(crate) number: u64,
}

/// Arguments shared by TRY and WAIT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim<'a> {
    pub(crate) owner: &'a [u8],
    pub(crate) lease_ms: u64,
    pub(crate) conn: ConnId,
    /// The most the key's queue may weigh (see `CoreSettings::max_queue_bytes`).
    pub(crate) max_queue_bytes: usize,
}

/// A completion's allocation (its counts and fields) and its strings.
fn completion_footprint(completion: &Completion) -> usize {
    2 * size_of::<usize>()
        + size_of::<Completion>()
        + arc_bytes(&completion.finisher)
        + completion.result.as_ref().map_or(0, arc_bytes)
}

impl KeyState {
    /// The bytes this state takes beyond its own struct, the line and the owed DONEs estimated
    /// from `samples` of their entries (see `core::footprint`).
    pub(crate) fn footprint(&self, samples: usize) -> usize {
        let holder = self.holder.as_ref().map_or(0, |holder| arc_bytes(&holder.owner));
        holder + self.extra.as_deref().map_or(0, |extra| extra.footprint(samples))
    }

    /// Nothing left worth remembering: the key can be forgotten.
    pub(crate) fn is_forgettable(&self) -> bool {
        self.holder.is_none()
            && self
                .extra
                .as_ref()
                .is_none_or(|extra| extra.queue.is_empty() && extra.completion.is_none() && extra.told_done.is_empty())
    }

    /// The deadline of this key's live entry among the shard's timers. A plain held lock (no
    /// line, no completion, nothing owed: most locks) keeps none of its own: its entry is always
    /// at its holder's deadline (see `Shard::step`). That keeps the state and its key within
    /// 64 bytes, jemalloc's size class below 80, for every held lock.
    pub(crate) fn armed_at(&self) -> Option<u64> {
        match &self.extra {
            Some(extra) => extra.timer_at,
            None => self.holder.as_ref().map(|holder| holder.deadline),
        }
    }

    /// Where [`KeyState::armed_at`] is kept, if this state keeps it.
    pub(crate) fn kept_armed_at(&mut self) -> Option<&mut Option<u64>> {
        self.extra.as_deref_mut().map(|extra| &mut extra.timer_at)
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn queue(&self) -> Option<&Queue> {
        self.extra.as_deref().map(|extra| &extra.queue)
    }

    /// Applies every expiry due at `now`: waiters' places, remembered completions, and the
    /// holder's lease (a FAILURE that hands the lock on).
    ///
    /// An expiry processed late (a busy machine, a paused process) hands off now, not as of the
    /// moment the lease ended: the head's lease counts from the hand-off, so nobody is told
    /// ACQUIRED for a lease that is already over, and only the head is woken. The places that ran
    /// out by now are gone first; blocked waiters stay in line however late it is.
    pub(crate) fn settle(&mut self, key: &StepKey<'_>, ctx: &mut ShardCtx, now: Timestamp) {
        if let Some(extra) = self.extra.as_deref_mut() {
            let record = &mut ctx.record;
            extra.queue.drop_expired(now.ms(), |owner| {
                record.record(ChangeRef::Leave { key, owner: &owner });
            });
            if extra.completion.as_ref().is_some_and(|(_, until)| *until <= now.ms()) {
                extra.completion = None;
                record.record(ChangeRef::Unkeep { key });
            }
            extra.told_done.drop_expired(now.ms(), |owner| record.record(ChangeRef::Paid { key, owner: &owner }));
        }
        if self.holder.as_ref().is_some_and(|holder| holder.deadline <= now.ms()) {
            self.fail_holder(key, ReleaseCause::LeaseExpired, ctx, now);
        }
        // Grants were paused (after an OS crash) and are no longer: the head of the line gets
        // the lock it would have got meanwhile.
        if self.free_with_a_line() && !ctx.grants_paused(now) {
            self.hand_off(key, ctx, now);
        }
        if self.extra.as_ref().is_some_and(|extra| extra.is_empty()) {
            self.extra = None;
        }
    }

    /// The earliest moment something about this key expires.
    /// A free lock with a line waits for `grants_resume_at` (see [`KeyState::settle`]).
    pub(crate) fn next_deadline(&self, grants_resume_at: Option<u64>) -> Option<u64> {
        let holder = self.holder.as_ref().map(|holder| holder.deadline);
        let extra = self.extra.as_deref();
        let places = extra.and_then(|extra| extra.queue.places_expire_at());
        let completion = extra.and_then(|extra| extra.completion.as_ref()).map(|(_, until)| *until);
        let told = extra.and_then(|extra| extra.told_done.next_deadline());
        let resume = grants_resume_at.filter(|_| self.free_with_a_line());
        holder.into_iter().chain(places).chain(completion).chain(told).chain(resume).min()
    }

    /// Only while grants are paused is a lock free with owners in line.
    fn free_with_a_line(&self) -> bool {
        self.holder.is_none() && self.queue().is_some_and(|queue| !queue.is_empty())
    }

    /// The answers TRY and WAIT give without queueing: a DONE the owner is owed (paid by the
    /// answer), a remembered completion, a free lock, or the owner's own lock renewed.
    fn immediate(
        &mut self,
        key: &StepKey<'_>,
        claim: Claim<'_>,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) -> Option<Answered<WaitOutcome>> {
        if let Some(extra) = self.extra.as_deref_mut() {
            if let Some(paid) = extra.told_done.take(claim.owner) {
                ctx.stats.done_answers += 1;
                ctx.record.record(ChangeRef::Paid { key, owner: &paid.owner });
                let outcome = WaitOutcome::Done(Arc::clone(&paid.completion));
                return Some(Answered { outcome, paid: Some(paid) });
            }
            if let Some((completion, _)) = &extra.completion {
                ctx.stats.done_answers += 1;
                return Some(Answered::unpaid(WaitOutcome::Done(Arc::clone(completion))));
            }
        }
        match &mut self.holder {
            // Paused: the caller queues like behind a holder.
            None if ctx.grants_paused(now) => None,
            None => {
                let holder =
                    NewHolder { owner: ctx.owner_arc(claim.owner), lease_ms: claim.lease_ms, conn: claim.conn };
                let token = self.grant(key, holder, GrantKind::ToClaimer, ctx, now);
                Some(Answered::unpaid(WaitOutcome::Acquired { token }))
            }
            Some(holder) if *holder.owner == *claim.owner => {
                holder.deadline = now.ms().saturating_add(claim.lease_ms);
                let token = holder.token;
                ctx.record.record(ChangeRef::Hold { key, owner: &holder.owner, token, lease_ms: claim.lease_ms });
                self.rebind(claim.conn);
                Some(Answered::unpaid(WaitOutcome::Acquired { token }))
            }
            Some(_) => None,
        }
    }

    fn grant(
        &mut self,
        key: &StepKey<'_>,
        holder: NewHolder,
        kind: GrantKind,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) -> u64 {
        let token = ctx.take_token();
        ctx.stats.grants += 1;
        if kind == GrantKind::HandOff {
            ctx.stats.handoffs += 1;
        }
        if ctx.collect_all_events {
            ctx.events.push(LockEvent::Granted {
                key: key.shared(),
                owner: Arc::clone(&holder.owner),
                token,
                handoff: kind == GrantKind::HandOff,
            });
        }
        self.forget_other_recipients();
        ctx.record.record(ChangeRef::Hold { key, owner: &holder.owner, token, lease_ms: holder.lease_ms });
        self.holder = Some(Holder {
            owner: holder.owner,
            token,
            deadline: now.ms().saturating_add(holder.lease_ms),
            conn: holder.conn,
        });
        token
    }

    fn place_of(&self, owner: &[u8]) -> Option<Place> {
        self.queue().and_then(|queue| queue.place_of(owner))
    }

    /// Finds the owner's place in line or appends it, and renews it (see [`Queue::renew`]).
    /// Joins the queue, or renews the place the owner has; None when it has none and the queue
    /// is full.
    fn enqueue(&mut self, key: &StepKey<'_>, claim: Claim<'_>, ctx: &mut ShardCtx, now: Timestamp) -> Option<Place> {
        let weight = self.extra.as_deref().map_or(0, |extra| extra.queue.weight());
        if weight + claim.owner.len() + PLACE_BYTES > claim.max_queue_bytes && self.place_of(claim.owner).is_none() {
            return None;
        }
        let place = self.join_or_renew(claim.owner, claim.lease_ms, claim.conn, now);
        ctx.record.record(ChangeRef::Join { key, owner: claim.owner, lease_ms: claim.lease_ms });
        Some(place)
    }

    fn join_or_renew(&mut self, owner: &[u8], lease_ms: u64, conn: ConnId, now: Timestamp) -> Place {
        let place = match self.place_of(owner) {
            Some(place) => place,
            None => {
                let waiter =
                    Waiter { owner: Box::from(owner), lease_ms, expires_at: 0, blockers: Blockers::new(), conn };
                self.extra().queue.join(waiter)
            }
        };
        self.extra().queue.renew(place, lease_ms, conn, now.ms());
        place
    }

    pub(crate) fn try_lock(
        &mut self,
        key: &StepKey<'_>,
        claim: Claim<'_>,
        if_held: IfHeld,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) -> Answered<TryOutcome> {
        if let Some(Answered { outcome, paid }) = self.immediate(key, claim, ctx, now) {
            return Answered { outcome: outcome.into(), paid };
        }
        if if_held == IfHeld::NoQueue {
            // NOQUEUE joins no queue, but a place the owner already has is renewed like by any
            // other TRY, so an owner that polls this way keeps it.
            if let Some(place) = self.place_of(claim.owner) {
                self.extra().queue.renew(place, claim.lease_ms, claim.conn, now.ms());
                ctx.record.record(ChangeRef::Join { key, owner: claim.owner, lease_ms: claim.lease_ms });
            }
            let holder =
                self.holder.as_ref().map(|holder| Arc::clone(&holder.owner)).unwrap_or_else(|| Arc::from(&[][..]));
            return Answered::unpaid(TryOutcome::Busy { holder });
        }
        Answered::unpaid(match self.enqueue(key, claim, ctx, now) {
            Some(place) => TryOutcome::Queued { position: self.extra().queue.position(place) + 1 },
            None => TryOutcome::QueueFull,
        })
    }

    /// Answers at once, or joins the queue (keeping an existing place) and registers a blocker.
    pub(crate) fn wait(
        &mut self,
        key: &StepKey<'_>,
        claim: Claim<'_>,
        mailbox: &Arc<Mailbox>,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) -> Result<Answered<WaitOutcome>, NotAnswered> {
        if let Some(answered) = self.immediate(key, claim, ctx, now) {
            return Ok(answered);
        }
        let place = self.enqueue(key, claim, ctx, now).ok_or(NotAnswered::QueueFull)?;
        let blocker = Blocker::open(mailbox);
        let number = blocker.number();
        self.extra().queue.block(place, blocker);
        Err(NotAnswered::Blocked(BlockedWait { place, number }))
    }

    /// Removes a blocked WAIT that gave up: the one that opened `mailbox` as `number`. Returns
    /// false when it was no longer blocked, i.e. it has been answered already and the answer waits
    /// in its mailbox. A timed-out owner keeps its place for its queue lease; an abandoned one
    /// (connection gone) leaves the queue when it has no other blocked WAIT.
    pub(crate) fn unblock(
        &mut self,
        key: &StepKey<'_>,
        place: Place,
        wait: (&Mailbox, u64),
        why: WaitEnds,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) -> bool {
        self.extra.as_deref_mut().is_some_and(|extra| {
            extra.queue.unblock(place, wait, why, now.ms(), |owner| {
                ctx.record.record(ChangeRef::Leave { key, owner: &owner });
            })
        })
    }

    /// Gives the lock to the first live waiter, answering its blocked WAITs in this same step.
    /// Returns whether somebody got it.
    fn hand_off(&mut self, key: &StepKey<'_>, ctx: &mut ShardCtx, now: Timestamp) -> bool {
        if ctx.grants_paused(now) {
            return false;
        }
        while let Some(waiter) = self.extra.as_deref_mut().and_then(|extra| extra.queue.pop_front()) {
            ctx.record.record(ChangeRef::Leave { key, owner: &waiter.owner });
            if !waiter.is_blocked() {
                if waiter.expires_at <= now.ms() {
                    continue;
                }
                // Not blocked right now but still holding its place: it learns ACQUIRED on its
                // next TRY or WAIT, and the grant is bound to the connection it last used.
                let holder = NewHolder { owner: Arc::from(waiter.owner), lease_ms: waiter.lease_ms, conn: waiter.conn };
                self.grant(key, holder, GrantKind::HandOff, ctx, now);
                return true;
            }
            // The token grant() will take; sent first so we learn whether anyone is listening.
            let token = ctx.next_token;
            // Every blocked call of the owner is told; the lock binds to the newest one that was
            // still listening, the connection the owner waited on last.
            let mut delivered_to = Vec::new();
            for blocker in waiter.blockers {
                let conn = blocker.conn();
                let answer = Answer::new(WaitOutcome::Acquired { token }, now, ctx.answers_recorded_at());
                let delivered = match ctx.handed_to.as_mut() {
                    Some(handed_to) => blocker.hand_over(answer, handed_to),
                    None => blocker.answer(answer),
                };
                if delivered {
                    delivered_to.push(conn);
                }
            }
            if let Some(conn) = delivered_to.pop() {
                let holder = NewHolder { owner: Arc::from(waiter.owner), lease_ms: waiter.lease_ms, conn };
                self.grant(key, holder, GrantKind::HandOff, ctx, now);
                if !delivered_to.is_empty() {
                    self.extra().grant_also_sent_to = delivered_to;
                }
                return true;
            }
            // Every blocked call of this owner is gone without telling us: it has left.
        }
        false
    }

    /// Ends the current holding as failed and passes the lock on. Returns whether somebody got it.
    fn fail_holder(&mut self, key: &StepKey<'_>, cause: ReleaseCause, ctx: &mut ShardCtx, now: Timestamp) -> bool {
        let Some(holder) = self.holder.take() else {
            return false;
        };
        ctx.record.record(ChangeRef::Free { key, cause: Some(&cause) });
        match cause {
            ReleaseCause::Failure(_) => ctx.stats.failures += 1,
            ReleaseCause::LeaseExpired => ctx.stats.lease_expiries += 1,
            ReleaseCause::HolderDisconnected | ReleaseCause::GrantUndelivered => ctx.stats.disconnect_releases += 1,
        }
        self.extra().last_failure = Some(cause.clone());
        let grant_events_from = ctx.events.len();
        let handed_off = self.hand_off(key, ctx, now);
        // One line tells the whole step: who failed and who has the lock now. It goes before the
        // grant it led to, so that observers learn of the release, then of the hand-off.
        let next = self.holder.as_ref().map(|next| (Arc::clone(&next.owner), next.token));
        ctx.events.insert(
            grant_events_from,
            LockEvent::Released { key: key.shared(), owner: holder.owner, token: holder.token, cause, next },
        );
        handed_off
    }

    pub(crate) fn unlock(
        &mut self,
        key: &StepKey<'_>,
        owner: &[u8],
        token: u64,
        verdict: Verdict,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) -> UnlockOutcome {
        let holding = match &self.holder {
            Some(holder) if *holder.owner == *owner && holder.token == token => Arc::clone(&holder.owner),
            // A retry of an UNLOCK that was carried out gets the same answer.
            other => {
                return ctx.unlock_memo.answer(key, owner, token).unwrap_or(if other.is_some() {
                    UnlockOutcome::NotHolder
                } else {
                    UnlockOutcome::NotLocked
                });
            }
        };
        let outcome = self.end_holding(key, token, verdict, ctx, now);
        ctx.record.record(ChangeRef::Unlocked { key, owner: &holding, token, outcome });
        ctx.unlock_memo.remember(token, key, &holding, outcome);
        outcome
    }

    /// The holding `token` ends with the holder's `verdict`.
    fn end_holding(
        &mut self,
        key: &StepKey<'_>,
        token: u64,
        verdict: Verdict,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) -> UnlockOutcome {
        match verdict {
            Verdict::Success { result, keep_ms } => {
                let Some(holder) = self.holder.take() else {
                    return UnlockOutcome::NotLocked;
                };
                ctx.record.record(ChangeRef::Free { key, cause: None });
                let completion = Arc::new(Completion { token, finisher: Arc::clone(&holder.owner), result });
                // The completion is recorded only for the owed DONEs or the KEEP that refer to it:
                // a SUCCESS with neither (most of them) has nothing to replay it for.
                let waiters_told = self.tell_done(key, &completion, ctx, now);
                if let Some(keep_ms) = keep_ms {
                    let until = now.ms().saturating_add(keep_ms);
                    if waiters_told == 0 {
                        ctx.record.record(ChangeRef::Finish { key, completion: &completion });
                    }
                    ctx.record.record(ChangeRef::Keep { key, token, until });
                    self.extra().completion = Some((completion, until));
                }
                ctx.stats.successes += 1;
                if ctx.collect_all_events {
                    ctx.events.push(LockEvent::Succeeded {
                        key: key.shared(),
                        owner: holder.owner,
                        token,
                        waiters_told,
                        keep_ms,
                    });
                }
                UnlockOutcome::Succeeded { waiters_told }
            }
            Verdict::Failure { reason } => {
                if self.fail_holder(key, ReleaseCause::Failure(reason), ctx, now) {
                    UnlockOutcome::HandedOff
                } else {
                    UnlockOutcome::Released
                }
            }
        }
    }

    /// Empties the queue. Every owner in it is owed the DONE on its next call, for as long as its
    /// place would have lasted; blocked owners are also answered now. A blocked owner is owed it
    /// too because the answer can still be lost: its connection may close before reading it, or
    /// the server go down (or a cluster leader be deposed) before the reply is released. The
    /// owner then asks again, and must learn DONE rather than be granted work already done.
    /// Returns how many are owed; the completion is recorded before the first of them.
    fn tell_done(
        &mut self,
        key: &StepKey<'_>,
        completion: &Arc<Completion>,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) -> usize {
        let Some(extra) = self.extra.as_deref_mut().filter(|extra| !extra.queue.is_empty()) else {
            return 0;
        };
        ctx.record.record(ChangeRef::LeaveAll { key });
        let mut told = 0;
        let mut to_write = Vec::new();
        for waiter in extra.queue.take_all() {
            // A blocked owner's place would have been leased from the moment it stopped waiting.
            let until = if waiter.is_blocked() { now.ms().saturating_add(waiter.lease_ms) } else { waiter.expires_at };
            if until <= now.ms() {
                continue;
            }
            let owner: Arc<[u8]> = Arc::from(waiter.owner);
            let mut answered = false;
            for blocker in waiter.blockers {
                let answer = Answer::new(WaitOutcome::Done(Arc::clone(completion)), now, ctx.answers_recorded_at());
                answered |= match ctx.handed_to {
                    Some(_) => blocker.tell_done(answer, &owner, &mut to_write),
                    None => blocker.answer(answer),
                };
            }
            if answered {
                ctx.stats.done_answers += 1;
            }
            if told == 0 {
                ctx.record.record(ChangeRef::Finish { key, completion });
            }
            owe(&mut extra.told_done, key, owner, until, Arc::clone(completion), ctx);
            told += 1;
        }
        if let Some(handed_to) = ctx.handed_to.as_mut()
            && !to_write.is_empty()
        {
            handed_to.dones = Some(DonesToWrite::new(key.shared(), completion.token, to_write));
        }
        told
    }

    /// A blocked WAIT's DONE of the completion `token` is being written to `owner`: it is owed no
    /// more, unless the write fails and the writer gives it back ([`KeyState::done_unwritten`]).
    pub(crate) fn pay_done(
        &mut self,
        key: &StepKey<'_>,
        owner: &[u8],
        token: u64,
        ctx: &mut ShardCtx,
    ) -> Option<OwedDone> {
        let paid = self.extra.as_deref_mut()?.told_done.take_of(owner, token)?;
        ctx.record.record(ChangeRef::Paid { key, owner: &paid.owner });
        Some(paid)
    }

    /// A DONE paid as its write began, or by an answer, never left: it is owed again, unless its
    /// time is up or the owner has called again meanwhile and was answered afresh.
    pub(crate) fn done_unwritten(
        &mut self,
        key: &StepKey<'_>,
        unwritten: OwedDone,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) {
        let OwedDone { owner, until, completion } = unwritten;
        let called_again = self.holder.as_ref().is_some_and(|holder| holder.owner == owner)
            || self
                .extra
                .as_deref()
                .is_some_and(|extra| extra.queue.place_of(&owner).is_some() || extra.told_done.owes(&owner));
        if called_again || until <= now.ms() {
            return;
        }
        // The completion may be long gone from the journal's recent past: recorded again so that
        // a replay can owe it.
        ctx.record.record(ChangeRef::Finish { key, completion: &completion });
        owe(&mut self.extra().told_done, key, owner, until, completion, ctx);
    }

    /// LOCK.EXTEND: the holder's lease restarts at `claim.lease_ms` and binds to `claim.conn`.
    pub(crate) fn extend(
        &mut self,
        key: &StepKey<'_>,
        claim: Claim<'_>,
        token: u64,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) -> ExtendOutcome {
        let Some(holder) = &mut self.holder else {
            return ExtendOutcome::NotLocked;
        };
        if *holder.owner != *claim.owner || holder.token != token {
            return ExtendOutcome::NotHolder;
        }
        holder.deadline = now.ms().saturating_add(claim.lease_ms);
        ctx.record.record(ChangeRef::Hold { key, owner: &holder.owner, token, lease_ms: claim.lease_ms });
        self.rebind(claim.conn);
        ExtendOutcome::Extended
    }

    /// The holder renewed (TRY or WAIT) or extended on `conn`: the lock binds to it. The connection
    /// it was bound to keeps speaking for the owner, who was told there that it holds the lock, so
    /// that a close of one of them alone does not pass the lock on while the other is open.
    /// Requests of one owner on two connections are applied in no set order: a WAIT sent on a
    /// connection the client then walked away from may be applied after the owner's WAIT on its
    /// new connection, and that close must not take the lock the new connection was told of.
    fn rebind(&mut self, conn: ConnId) {
        let Some(holder) = self.holder.as_mut() else {
            return;
        };
        let previous = std::mem::replace(&mut holder.conn, conn);
        if previous == conn {
            return;
        }
        if let Some(extra) = self.extra.as_deref_mut() {
            extra.grant_also_sent_to.retain(|other| *other != conn);
        }
        // A recovered holding was bound to no connection: nothing to keep.
        if previous != RECOVERED {
            self.extra().grant_also_sent_to.push(previous);
        }
    }

    /// A new grant: connections that were sent an earlier one no longer stand in for it.
    fn forget_other_recipients(&mut self) {
        if let Some(extra) = self.extra.as_deref_mut() {
            extra.grant_also_sent_to.clear();
        }
    }

    /// Takes the owner out of the line; its blocked WAITs end as if timed out (their blockers
    /// drop, telling them so).
    pub(crate) fn cancel(&mut self, key: &StepKey<'_>, owner: &[u8], ctx: &mut ShardCtx) -> bool {
        let Some(waiter) = self.place_of(owner).and_then(|place| self.extra().queue.remove(place)) else {
            return false;
        };
        if ctx.collect_all_events {
            ctx.events.push(LockEvent::Cancelled { key: key.shared(), owner: Arc::from(&*waiter.owner) });
        }
        ctx.record.record(ChangeRef::Leave { key, owner: &waiter.owner });
        true
    }

    /// Whether a close of `conn` may matter for this key: it holds it, a grant may bind to it (a
    /// place it refreshed last or a WAIT blocked on it), or it was sent the current grant.
    pub(crate) fn bound_to_conn(&self, conn: ConnId) -> bool {
        self.holder.as_ref().is_some_and(|holder| holder.conn == conn)
            || self.queue().is_some_and(|queue| queue.bound_to_conn(conn))
            || self.extra.as_deref().is_some_and(|extra| extra.grant_also_sent_to.contains(&conn))
    }

    /// `conn` closed, with release-on-disconnect on. The places it last refreshed leave the line,
    /// so that an owner who has gone is never granted the lock; then the lock itself is released
    /// if it is bound to `conn`.
    pub(crate) fn connection_closed(&mut self, key: &StepKey<'_>, conn: ConnId, ctx: &mut ShardCtx, now: Timestamp) {
        if let Some(extra) = self.extra.as_deref_mut() {
            let record = &mut ctx.record;
            extra.queue.drop_places_of(conn, |owner| {
                record.record(ChangeRef::Leave { key, owner: &owner });
            });
        }
        self.unbind(key, conn, ReleaseCause::HolderDisconnected, ctx, now);
    }

    /// The grant `token`, sent to a blocked WAIT on `conn`, will never be read there (the
    /// connection closed).
    pub(crate) fn grant_undelivered(
        &mut self,
        key: &StepKey<'_>,
        token: u64,
        conn: ConnId,
        ctx: &mut ShardCtx,
        now: Timestamp,
    ) {
        if self.holder.as_ref().is_some_and(|holder| holder.token == token) {
            self.unbind(key, conn, ReleaseCause::GrantUndelivered, ctx, now);
        }
    }

    /// `conn` can no longer speak for the holder. If the lock is bound to it, the binding moves to
    /// the newest other connection that was sent the same grant (the owner was told there, so
    /// passing the lock on would make two holders); with none, the lock passes on for `cause`.
    fn unbind(&mut self, key: &StepKey<'_>, conn: ConnId, cause: ReleaseCause, ctx: &mut ShardCtx, now: Timestamp) {
        if let Some(extra) = self.extra.as_deref_mut() {
            extra.grant_also_sent_to.retain(|other| *other != conn);
        }
        let Some(holder) = self.holder.as_mut().filter(|holder| holder.conn == conn) else {
            return;
        };
        match self.extra.as_deref_mut().and_then(|extra| extra.grant_also_sent_to.pop()) {
            Some(other) => holder.conn = other,
            None => {
                self.fail_holder(key, cause, ctx, now);
            }
        }
    }

    /// Replays one recorded change on recovery (see [`Change`]). Holders and places come back
    /// bound to no connection ([`RECOVERED`]), leased afresh from `now`: a client re-attaches with
    /// its next TRY, WAIT or EXTEND.
    pub(crate) fn replay(&mut self, change: Change, ctx: &mut ShardCtx, now: Timestamp) {
        match change {
            Change::Hold { owner, token, lease_ms, .. } => {
                ctx.next_token = ctx.next_token.max(token.saturating_add(1));
                self.forget_other_recipients();
                self.holder =
                    Some(Holder { owner, token, deadline: now.ms().saturating_add(lease_ms), conn: RECOVERED });
            }
            Change::Free { cause, .. } => {
                self.holder = None;
                if cause.is_some() {
                    self.extra().last_failure = cause;
                }
            }
            Change::Join { owner, lease_ms, .. } => {
                self.join_or_renew(&owner, lease_ms, RECOVERED, now);
            }
            Change::Leave { owner, .. } => {
                if let Some(place) = self.place_of(&owner) {
                    self.extra().queue.remove(place);
                }
            }
            Change::LeaveAll { .. } => self.extra().queue.take_all().for_each(drop),
            Change::Finish { completion, .. } => ctx.replayed_completion = Some(completion),
            Change::Keep { token, until, .. } => {
                if let Some(completion) = ctx.replayed_completion(token) {
                    self.extra().completion = Some((completion, until));
                }
            }
            Change::Unkeep { .. } => self.extra().completion = None,
            Change::Owe { owner, token, until, .. } => {
                if let Some(completion) = ctx.replayed_completion(token) {
                    self.extra().told_done.insert(owner, until, completion);
                }
            }
            Change::Paid { owner, .. } => {
                self.extra().told_done.take(&owner);
            }
            Change::Unlocked { key, owner, token, outcome } => {
                ctx.unlock_memo.remember(token, &key, &owner, outcome);
            }
        }
    }

    /// The changes that rebuild this key's durable state, for a snapshot (see [`Change`]).
    pub(crate) fn snapshot(&self, key: &StepKey<'_>, now: Timestamp, out: &mut Vec<Change>) {
        let extra = self.extra.as_deref();
        if let Some(cause) = extra.and_then(|extra| extra.last_failure.clone()) {
            out.push(Change::Free { key: key.shared(), cause: Some(cause) });
        }
        if let Some(holder) = &self.holder {
            out.push(Change::Hold {
                key: key.shared(),
                owner: Arc::clone(&holder.owner),
                token: holder.token,
                lease_ms: holder.deadline.saturating_sub(now.ms()).max(1),
            });
        }
        let Some(extra) = extra else {
            return;
        };
        let mut finished: Option<u64> = None;
        let mut finish = |completion: &Arc<Completion>, out: &mut Vec<Change>| {
            if finished != Some(completion.token) {
                finished = Some(completion.token);
                out.push(Change::Finish { key: key.shared(), completion: Arc::clone(completion) });
            }
        };
        if let Some((completion, until)) = &extra.completion {
            finish(completion, out);
            out.push(Change::Keep { key: key.shared(), token: completion.token, until: *until });
        }
        for (owner, until, completion) in extra.told_done.iter() {
            finish(completion, out);
            out.push(Change::Owe { key: key.shared(), owner: Arc::clone(owner), token: completion.token, until });
        }
        for waiter in extra.queue.iter() {
            out.push(Change::Join { key: key.shared(), owner: Arc::from(&*waiter.owner), lease_ms: waiter.lease_ms });
        }
    }

    /// LOCK.INFO, listing at most `listed` owners from the head of the line.
    pub(crate) fn info(&self, now: Timestamp, listed: usize) -> KeyInfo {
        let now = now.ms();
        let extra = self.extra.as_deref();
        let completion = extra
            .and_then(|extra| extra.completion.as_ref())
            .map(|(completion, until)| (Arc::clone(completion), until.saturating_sub(now)));
        let state = match (&self.holder, &completion) {
            (Some(_), _) => LockStateName::Held,
            (None, Some(_)) => LockStateName::Done,
            (None, None) => LockStateName::Free,
        };
        KeyInfo {
            state,
            holder: self.holder.as_ref().map(|holder| HolderInfo {
                owner: Arc::clone(&holder.owner),
                token: holder.token,
                lease_remaining_ms: holder.deadline.saturating_sub(now),
            }),
            queue: self.queue().into_iter().flat_map(Queue::iter).take(listed).map(|w| Arc::from(&*w.owner)).collect(),
            waiters: self.queue().map_or(0, Queue::len),
            blocked: self.queue().map_or(0, Queue::blocked_count),
            completion,
            last_failure: extra.and_then(|extra| extra.last_failure.as_ref()).map(ReleaseCause::reason),
            // Server-wide: the caller fills it in.
            grants_paused_ms: 0,
        }
    }

    pub(crate) fn owed_dones(&self) -> Vec<Arc<[u8]>> {
        let mut owed: Vec<Arc<[u8]>> = self
            .extra
            .as_deref()
            .into_iter()
            .flat_map(|extra| extra.told_done.iter().map(|(owner, _, _)| Arc::clone(owner)))
            .collect();
        owed.sort();
        owed
    }

    /// What this key adds to its shard's gauges, in O(1).
    pub(crate) fn gauges(&self) -> Gauges {
        Gauges {
            keys: 1,
            held_keys: u64::from(self.holder.is_some()),
            waiters: self.queue().map_or(0, Queue::len) as u64,
            blocked_waiters: self.queue().map_or(0, Queue::blocked_count) as u64,
        }
    }
}

impl From<WaitOutcome> for TryOutcome {
    fn from(outcome: WaitOutcome) -> TryOutcome {
        match outcome {
            WaitOutcome::Acquired { token } => TryOutcome::Acquired { token },
            WaitOutcome::Done(completion) => TryOutcome::Done(completion),
        }
    }
}

/// `owner` is owed the DONE of `completion` until `until`, recorded after its `Finish`.
fn owe(
    told_done: &mut ToldDone,
    key: &StepKey<'_>,
    owner: Arc<[u8]>,
    until: u64,
    completion: Arc<Completion>,
    ctx: &mut ShardCtx,
) {
    ctx.record.record(ChangeRef::Owe { key, owner: &owner, token: completion.token, until });
    told_done.insert(owner, until, completion);
}
