//! The state machine of one key. Everything here runs under its shard's mutex: no I/O, no
//! awaiting; blocked waiters are answered by sending on their oneshot channel, which only wakes a
//! task.

use std::collections::VecDeque;

use hashbrown::HashSet;
use std::num::NonZeroU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::oneshot;

use super::events::{LockEvent, ReleaseCause};
use super::outcome::{
    Completion, CoreStats, ExtendOutcome, HolderInfo, KeyInfo, LockStateName, TryOutcome, UnlockOutcome, Verdict,
    WaitOutcome,
};

/// Connections are numbered from 1 by the server; the core only compares them.
pub type ConnId = NonZeroU64;

/// Per-shard bookkeeping that the key states update.
#[derive(Debug)]
pub(crate) struct ShardCtx {
    pub next_token: u64,
    pub next_wait_id: u64,
    pub stats: CoreStats,
    pub events: Vec<LockEvent>,
    /// Grants are the hot path; only collect their events when they will be logged.
    pub log_grants: bool,
    /// The earliest timer this operation armed (u64::MAX when none), so the core can wake the
    /// expiry driver if it now sleeps too long.
    pub earliest_new_deadline: u64,
    recent_owner: Option<Arc<[u8]>>,
}

impl ShardCtx {
    pub fn new(token_seed: u64) -> ShardCtx {
        ShardCtx {
            next_token: token_seed.max(1),
            next_wait_id: 1,
            stats: CoreStats::default(),
            events: Vec::new(),
            log_grants: false,
            earliest_new_deadline: u64::MAX,
            recent_owner: None,
        }
    }

    /// The owner as a shared string. One node usually takes many keys in a row, so the last owner
    /// seen is reused rather than copied for every lock it holds.
    fn owner_arc(&mut self, owner: &[u8]) -> Arc<[u8]> {
        match &self.recent_owner {
            Some(recent) if **recent == *owner => Arc::clone(recent),
            _ => {
                let owner: Arc<[u8]> = Arc::from(owner);
                self.recent_owner = Some(Arc::clone(&owner));
                owner
            }
        }
    }

    fn take_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }
}

#[derive(Debug)]
struct Holder {
    owner: Arc<[u8]>,
    token: u64,
    deadline: u64,
    /// The connection that last acquired, waited or extended; its close releases the lock when
    /// release-on-disconnect is on. None after a hand-off to an owner that was not blocked.
    conn: Option<ConnId>,
}

/// Who a grant goes to, and on what terms.
struct NewHolder {
    owner: Arc<[u8]>,
    lease_ms: u64,
    conn: Option<ConnId>,
}

#[derive(Debug)]
struct Blocker {
    wait_id: u64,
    conn: ConnId,
    sender: oneshot::Sender<WaitOutcome>,
    /// Set when a grant is sent, so the connection can measure hand-off latency.
    granted_at: Arc<OnceLock<Instant>>,
}

#[derive(Debug)]
struct Waiter {
    owner: Arc<[u8]>,
    /// The lease the owner asked for, used when it is granted.
    lease_ms: u64,
    /// When an owner with no blocked WAIT loses its place. Ignored while it is blocked.
    expires_at: u64,
    /// Blocked LOCK.WAIT calls of this owner (normally zero or one), oldest first.
    blockers: Vec<Blocker>,
    /// The connection of the owner's last TRY or WAIT: the one a grant binds to when the owner is
    /// not blocked at hand-off time.
    conn: ConnId,
}

impl Waiter {
    fn is_live(&self, now: u64) -> bool {
        !self.blockers.is_empty() || self.expires_at > now
    }
}

/// An owner that was queued but not blocked when the holder succeeded: it must learn DONE on its
/// next TRY or WAIT instead of being granted the lock afresh.
#[derive(Debug)]
struct ToldDone {
    owner: Arc<[u8]>,
    until: u64,
    completion: Arc<Completion>,
}

/// The FIFO line of one key. Joining, leaving at the head and checking whether an owner is in
/// line are O(1), so that building a line of thousands of waiters stays linear.
#[derive(Debug)]
struct Queue {
    waiters: VecDeque<Waiter>,
    owners: HashSet<Arc<[u8]>>,
    /// No place of a waiter that is not blocked runs out before this (u64::MAX: none can). A
    /// lower bound: expiries are only scanned for once it has passed.
    places_expire_at: u64,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue { waiters: VecDeque::new(), owners: HashSet::new(), places_expire_at: u64::MAX }
    }
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.waiters.iter()
    }

    fn position(&self, owner: &[u8]) -> Option<usize> {
        if !self.owners.contains(owner) {
            return None;
        }
        self.waiters.iter().position(|waiter| *waiter.owner == *owner)
    }

    fn push_back(&mut self, waiter: Waiter) -> usize {
        self.owners.insert(Arc::clone(&waiter.owner));
        self.waiters.push_back(waiter);
        self.waiters.len() - 1
    }

    fn pop_front(&mut self) -> Option<Waiter> {
        let waiter = self.waiters.pop_front()?;
        self.owners.remove(&waiter.owner);
        Some(waiter)
    }

    fn remove(&mut self, index: usize) -> Option<Waiter> {
        let waiter = self.waiters.remove(index)?;
        self.owners.remove(&waiter.owner);
        Some(waiter)
    }

    fn take_all(&mut self) -> VecDeque<Waiter> {
        self.owners.clear();
        self.places_expire_at = u64::MAX;
        std::mem::take(&mut self.waiters)
    }

    /// A waiter that is not blocked holds its place until `expires_at`.
    fn place_leased_until(&mut self, expires_at: u64) {
        self.places_expire_at = self.places_expire_at.min(expires_at);
    }

    /// Drops the waiters whose place has run out.
    fn drop_expired(&mut self, now: u64) {
        if self.places_expire_at > now {
            return;
        }
        let owners = &mut self.owners;
        self.waiters.retain(|waiter| {
            let live = waiter.is_live(now);
            if !live {
                owners.remove(&waiter.owner);
            }
            live
        });
        self.places_expire_at = self
            .waiters
            .iter()
            .filter(|waiter| waiter.blockers.is_empty())
            .map(|waiter| waiter.expires_at)
            .min()
            .unwrap_or(u64::MAX);
    }
}

/// The rarer parts of a key's state, boxed so that a plain held lock stays small.
#[derive(Debug, Default)]
struct Extra {
    queue: Queue,
    /// Other connections of the holder's owner that were sent the current grant (an owner
    /// blocked on several connections); the lock is bound to the newest.
    grant_also_sent_to: Vec<ConnId>,
    completion: Option<(Arc<Completion>, u64)>,
    told_done: Vec<ToldDone>,
    last_failure: Option<Arc<[u8]>>,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.completion.is_none()
            && self.told_done.is_empty()
            && self.last_failure.is_none()
            && self.grant_also_sent_to.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct LockState {
    holder: Option<Holder>,
    /// The deadline of this key's live entry in the shard's timer heap; 0 when it has none.
    pub timer_at: u64,
    extra: Option<Box<Extra>>,
}

/// The parts of a wait ticket the state hands out.
pub(crate) struct BlockedWait {
    pub wait_id: u64,
    pub receiver: oneshot::Receiver<WaitOutcome>,
    pub granted_at: Arc<OnceLock<Instant>>,
}

/// Arguments shared by TRY and WAIT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim<'a> {
    pub owner: &'a [u8],
    pub lease_ms: u64,
    pub conn: ConnId,
}

impl LockState {
    /// Nothing left worth remembering: the key can be forgotten.
    pub fn is_forgettable(&self) -> bool {
        self.holder.is_none()
            && self
                .extra
                .as_ref()
                .is_none_or(|extra| extra.queue.is_empty() && extra.completion.is_none() && extra.told_done.is_empty())
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn queue(&self) -> impl Iterator<Item = &Waiter> {
        self.extra.iter().flat_map(|extra| extra.queue.iter())
    }

    /// Applies every expiry due at `now`: waiters' places, the holder's lease (a FAILURE that
    /// hands the lock on), remembered completions.
    pub fn settle(&mut self, key: &Arc<[u8]>, ctx: &mut ShardCtx, now: u64) {
        // Leases that ended before `now` hand off as of the moment they ended, to the waiters
        // still in line then; the expiry driver may come late, or time may jump in tests.
        while let Some(lease_end) = self.holder.as_ref().map(|holder| holder.deadline).filter(|end| *end <= now) {
            if let Some(extra) = self.extra.as_deref_mut() {
                extra.queue.drop_expired(lease_end);
            }
            ctx.stats.lease_expiries += 1;
            self.fail_holder(key, ReleaseCause::LeaseExpired, Some(Arc::from(&b"lease expired"[..])), ctx, lease_end);
        }
        if let Some(extra) = self.extra.as_deref_mut() {
            extra.queue.drop_expired(now);
            if extra.completion.as_ref().is_some_and(|(_, until)| *until <= now) {
                extra.completion = None;
            }
            extra.told_done.retain(|told| told.until > now);
        }
        if self.extra.as_ref().is_some_and(|extra| extra.is_empty()) {
            self.extra = None;
        }
    }

    /// The earliest moment something about this key expires.
    pub fn next_deadline(&self) -> Option<u64> {
        let holder = self.holder.as_ref().map(|holder| holder.deadline);
        let extra = self.extra.as_deref();
        let places = extra.map(|extra| extra.queue.places_expire_at).filter(|&at| at != u64::MAX);
        let completion = extra.and_then(|extra| extra.completion.as_ref()).map(|(_, until)| *until);
        let told = extra.into_iter().flat_map(|extra| extra.told_done.iter()).map(|told| told.until);
        holder.into_iter().chain(places).chain(completion).chain(told).min()
    }

    /// The answers TRY and WAIT give without queueing: a DONE the owner is owed, a remembered
    /// completion, a free lock, or the owner's own lock renewed.
    fn immediate(&mut self, key: &Arc<[u8]>, claim: Claim<'_>, ctx: &mut ShardCtx, now: u64) -> Option<WaitOutcome> {
        if let Some(extra) = self.extra.as_deref_mut() {
            if let Some(index) = extra.told_done.iter().position(|told| *told.owner == *claim.owner) {
                ctx.stats.done_answers += 1;
                return Some(WaitOutcome::Done(extra.told_done.swap_remove(index).completion));
            }
            if let Some((completion, _)) = &extra.completion {
                ctx.stats.done_answers += 1;
                return Some(WaitOutcome::Done(Arc::clone(completion)));
            }
        }
        match &mut self.holder {
            None => {
                let holder =
                    NewHolder { owner: ctx.owner_arc(claim.owner), lease_ms: claim.lease_ms, conn: Some(claim.conn) };
                let token = self.grant(key, holder, false, ctx, now);
                Some(WaitOutcome::Acquired { token })
            }
            Some(holder) if *holder.owner == *claim.owner => {
                holder.deadline = now.saturating_add(claim.lease_ms);
                holder.conn = Some(claim.conn);
                Some(WaitOutcome::Acquired { token: holder.token })
            }
            Some(_) => None,
        }
    }

    fn grant(&mut self, key: &Arc<[u8]>, holder: NewHolder, handoff: bool, ctx: &mut ShardCtx, now: u64) -> u64 {
        let token = ctx.take_token();
        ctx.stats.grants += 1;
        if handoff {
            ctx.stats.handoffs += 1;
        }
        if ctx.log_grants {
            ctx.events.push(LockEvent::Granted {
                key: Arc::clone(key),
                owner: Arc::clone(&holder.owner),
                token,
                handoff,
            });
        }
        if let Some(extra) = self.extra.as_deref_mut() {
            extra.grant_also_sent_to.clear();
        }
        self.holder = Some(Holder {
            owner: holder.owner,
            token,
            deadline: now.saturating_add(holder.lease_ms),
            conn: holder.conn,
        });
        token
    }

    fn position_of(&self, owner: &[u8]) -> Option<usize> {
        self.extra.as_deref().and_then(|extra| extra.queue.position(owner))
    }

    /// Finds the owner's place in line or appends it; returns the index.
    fn enqueue(&mut self, claim: Claim<'_>, ctx: &mut ShardCtx, now: u64) -> usize {
        let queue = &mut self.extra().queue;
        let expires_at = now.saturating_add(claim.lease_ms);
        let index = match queue.position(claim.owner) {
            Some(index) => index,
            None => queue.push_back(Waiter {
                owner: ctx.owner_arc(claim.owner),
                lease_ms: claim.lease_ms,
                expires_at,
                blockers: Vec::new(),
                conn: claim.conn,
            }),
        };
        queue.place_leased_until(expires_at);
        let waiter = &mut queue.waiters[index];
        waiter.lease_ms = claim.lease_ms;
        waiter.expires_at = expires_at;
        waiter.conn = claim.conn;
        index
    }

    pub fn try_lock(
        &mut self,
        key: &Arc<[u8]>,
        claim: Claim<'_>,
        noqueue: bool,
        ctx: &mut ShardCtx,
        now: u64,
    ) -> TryOutcome {
        if let Some(outcome) = self.immediate(key, claim, ctx, now) {
            return outcome.into();
        }
        if noqueue {
            let holder =
                self.holder.as_ref().map(|holder| Arc::clone(&holder.owner)).unwrap_or_else(|| Arc::from(&[][..]));
            return TryOutcome::Busy { holder };
        }
        TryOutcome::Queued { position: self.enqueue(claim, ctx, now) + 1 }
    }

    /// Answers at once, or joins the queue (keeping an existing place) and registers a blocker.
    pub fn wait(
        &mut self,
        key: &Arc<[u8]>,
        claim: Claim<'_>,
        ctx: &mut ShardCtx,
        now: u64,
    ) -> Result<WaitOutcome, BlockedWait> {
        if let Some(outcome) = self.immediate(key, claim, ctx, now) {
            return Ok(outcome);
        }
        let index = self.enqueue(claim, ctx, now);
        let wait_id = ctx.next_wait_id;
        ctx.next_wait_id += 1;
        let (sender, receiver) = oneshot::channel();
        let granted_at = Arc::new(OnceLock::new());
        let blocker = Blocker { wait_id, conn: claim.conn, sender, granted_at: Arc::clone(&granted_at) };
        self.extra().queue.waiters[index].blockers.push(blocker);
        Err(BlockedWait { wait_id, receiver, granted_at })
    }

    /// Removes a blocked WAIT that gave up. Returns false when it was no longer blocked, i.e. it
    /// has been answered already and the answer waits in its channel. A timed-out owner keeps its
    /// place for its queue lease; an abandoned one (connection gone) leaves the queue when it has
    /// no other blocked WAIT.
    pub fn unblock(&mut self, wait_id: u64, leave_queue: bool, now: u64) -> bool {
        let Some(extra) = self.extra.as_deref_mut() else {
            return false;
        };
        let found = extra.queue.waiters.iter().enumerate().find_map(|(index, waiter)| {
            waiter.blockers.iter().position(|blocker| blocker.wait_id == wait_id).map(|at| (index, at))
        });
        let Some((index, at)) = found else {
            return false;
        };
        let waiter = &mut extra.queue.waiters[index];
        // Keep the order: the newest blocker is the one a grant binds to.
        waiter.blockers.remove(at);
        if waiter.blockers.is_empty() {
            if leave_queue {
                extra.queue.remove(index);
            } else {
                waiter.expires_at = now.saturating_add(waiter.lease_ms);
                let expires_at = waiter.expires_at;
                extra.queue.place_leased_until(expires_at);
            }
        }
        true
    }

    /// Gives the lock to the first live waiter, answering its blocked WAITs in this same step.
    /// Returns whether somebody got it.
    fn hand_off(&mut self, key: &Arc<[u8]>, ctx: &mut ShardCtx, now: u64) -> bool {
        while let Some(waiter) = self.extra.as_deref_mut().and_then(|extra| extra.queue.pop_front()) {
            if waiter.blockers.is_empty() {
                if waiter.expires_at <= now {
                    continue;
                }
                // Not blocked right now but still holding its place: it learns ACQUIRED on its
                // next TRY or WAIT, and the grant is bound to the connection it last used.
                let holder = NewHolder { owner: waiter.owner, lease_ms: waiter.lease_ms, conn: Some(waiter.conn) };
                self.grant(key, holder, true, ctx, now);
                return true;
            }
            // The token grant() will take; sent first so we learn whether anyone is listening.
            let token = ctx.next_token;
            let sent_at = Instant::now();
            // Every blocked call of the owner is told; the lock binds to the newest one that was
            // still listening, the connection the owner waited on last.
            let mut delivered_to = Vec::new();
            for blocker in waiter.blockers {
                if blocker.sender.send(WaitOutcome::Acquired { token }).is_ok() {
                    let _ = blocker.granted_at.set(sent_at);
                    delivered_to.push(blocker.conn);
                }
            }
            if let Some(conn) = delivered_to.pop() {
                let holder = NewHolder { owner: waiter.owner, lease_ms: waiter.lease_ms, conn: Some(conn) };
                self.grant(key, holder, true, ctx, now);
                if !delivered_to.is_empty() {
                    self.extra().grant_also_sent_to = delivered_to;
                }
                return true;
            }
            // Every blocked call of this owner is gone without telling us: it has left.
        }
        false
    }

    /// Ends the current holding as failed and passes the lock on.
    fn fail_holder(
        &mut self,
        key: &Arc<[u8]>,
        cause: ReleaseCause,
        reason: Option<Arc<[u8]>>,
        ctx: &mut ShardCtx,
        now: u64,
    ) -> bool {
        let Some(holder) = self.holder.take() else {
            return false;
        };
        if reason.is_some() || self.extra.is_some() {
            self.extra().last_failure.clone_from(&reason);
        }
        let handed_off = self.hand_off(key, ctx, now);
        // One line tells the whole step: who failed and who has the lock now.
        let next = self.holder.as_ref().map(|next| (Arc::clone(&next.owner), next.token));
        ctx.events.push(LockEvent::Released {
            key: Arc::clone(key),
            owner: holder.owner,
            token: holder.token,
            cause,
            reason,
            next,
        });
        handed_off
    }

    pub fn unlock(
        &mut self,
        key: &Arc<[u8]>,
        owner: &[u8],
        token: u64,
        verdict: Verdict,
        ctx: &mut ShardCtx,
        now: u64,
    ) -> UnlockOutcome {
        let Some(holder) = &self.holder else {
            return UnlockOutcome::NotLocked;
        };
        if *holder.owner != *owner || holder.token != token {
            return UnlockOutcome::NotHolder;
        }
        match verdict {
            Verdict::Success { result, keep_ms } => {
                let Some(holder) = self.holder.take() else {
                    return UnlockOutcome::NotLocked;
                };
                let completion = Arc::new(Completion { finisher: Arc::clone(&holder.owner), result });
                let waiters_told = self.tell_done(&completion, ctx, now);
                if keep_ms > 0 {
                    self.extra().completion = Some((completion, now.saturating_add(keep_ms)));
                }
                ctx.stats.successes += 1;
                if ctx.log_grants {
                    ctx.events.push(LockEvent::Succeeded {
                        key: Arc::clone(key),
                        owner: holder.owner,
                        token,
                        waiters_told,
                        keep_ms,
                    });
                }
                UnlockOutcome::Succeeded { waiters_told }
            }
            Verdict::Failure { reason } => {
                ctx.stats.failures += 1;
                let reason = reason.or_else(|| Some(Arc::from(&b"FAILURE reported by the holder"[..])));
                if self.fail_holder(key, ReleaseCause::Failure, reason, ctx, now) {
                    UnlockOutcome::HandedOff
                } else {
                    UnlockOutcome::Released
                }
            }
        }
    }

    /// Empties the queue: blocked owners are answered now, the others on their next call.
    fn tell_done(&mut self, completion: &Arc<Completion>, ctx: &mut ShardCtx, now: u64) -> usize {
        let Some(extra) = self.extra.as_deref_mut() else {
            return 0;
        };
        let mut told = 0;
        for waiter in extra.queue.take_all() {
            if waiter.blockers.is_empty() {
                if waiter.expires_at > now {
                    extra.told_done.push(ToldDone {
                        owner: waiter.owner,
                        until: waiter.expires_at,
                        completion: Arc::clone(completion),
                    });
                    told += 1;
                }
                continue;
            }
            let mut delivered = false;
            for blocker in waiter.blockers {
                delivered |= blocker.sender.send(WaitOutcome::Done(Arc::clone(completion))).is_ok();
            }
            if delivered {
                ctx.stats.done_answers += 1;
                told += 1;
            }
        }
        told
    }

    pub fn extend(&mut self, owner: &[u8], token: u64, lease_ms: u64, conn: ConnId, now: u64) -> ExtendOutcome {
        let Some(holder) = &mut self.holder else {
            return ExtendOutcome::NotLocked;
        };
        if *holder.owner != *owner || holder.token != token {
            return ExtendOutcome::NotHolder;
        }
        holder.deadline = now.saturating_add(lease_ms);
        holder.conn = Some(conn);
        ExtendOutcome::Extended
    }

    /// Takes the owner out of the line; its blocked WAITs end as if timed out (their senders drop).
    pub fn cancel(&mut self, owner: &[u8]) -> bool {
        let Some(index) = self.position_of(owner) else {
            return false;
        };
        self.extra().queue.remove(index);
        true
    }

    pub fn held_by_conn(&self, conn: ConnId) -> bool {
        self.holder.as_ref().is_some_and(|holder| holder.conn == Some(conn))
    }

    /// Whether a close of `conn` may matter for this key: it holds it, or a grant may bind to it.
    pub fn bound_to_conn(&self, conn: ConnId) -> bool {
        self.held_by_conn(conn) || self.queue().any(|waiter| waiter.conn == conn)
    }

    /// A grant sent to a blocked WAIT on `conn` will never be read there (the connection closed).
    /// The lock passes on as after a FAILURE, unless the owner has the grant through another
    /// connection: one that was sent the same grant (the lock then binds to it), or one it renewed
    /// or extended on since.
    pub fn grant_undelivered(&mut self, key: &Arc<[u8]>, token: u64, conn: ConnId, ctx: &mut ShardCtx, now: u64) {
        let Some(holder) = self.holder.as_mut().filter(|holder| holder.token == token) else {
            return;
        };
        if holder.conn != Some(conn) {
            if let Some(extra) = self.extra.as_deref_mut() {
                extra.grant_also_sent_to.retain(|other| *other != conn);
            }
            return;
        }
        if let Some(other) = self.extra.as_deref_mut().and_then(|extra| extra.grant_also_sent_to.pop()) {
            holder.conn = Some(other);
            return;
        }
        self.release_as_failed(key, ReleaseCause::GrantUndelivered, ctx, now);
    }

    /// A FAILURE on behalf of a holder that can no longer report: its connection closed, or the
    /// grant never reached it.
    pub fn release_as_failed(&mut self, key: &Arc<[u8]>, cause: ReleaseCause, ctx: &mut ShardCtx, now: u64) {
        let reason = match cause {
            ReleaseCause::HolderDisconnected => &b"holder connection closed"[..],
            ReleaseCause::GrantUndelivered => &b"waiter connection closed before the grant reached it"[..],
            ReleaseCause::Failure | ReleaseCause::LeaseExpired => &b"released"[..],
        };
        ctx.stats.disconnect_releases += 1;
        self.fail_holder(key, cause, Some(Arc::from(reason)), ctx, now);
    }

    pub fn info(&self, now: u64) -> KeyInfo {
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
            queue: self.queue().map(|waiter| Arc::clone(&waiter.owner)).collect(),
            blocked: self.queue().filter(|waiter| !waiter.blockers.is_empty()).count(),
            completion,
            last_failure: extra.and_then(|extra| extra.last_failure.clone()),
        }
    }

    /// Adds this key's gauges to a stats snapshot.
    pub fn count_into(&self, stats: &mut CoreStats) {
        stats.keys += 1;
        stats.held_keys += u64::from(self.holder.is_some());
        for waiter in self.queue() {
            stats.waiters += 1;
            stats.blocked_waiters += u64::from(!waiter.blockers.is_empty());
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
