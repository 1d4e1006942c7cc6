//! Model-based property test of the lock core.
//!
//! Random sequences of TRY / WAIT / UNLOCK / EXTEND / CANCEL, blocked waiters timing out or
//! disconnecting, holders disconnecting and the clock moving on are run against
//! `baton::core::LockCore` and against a small reference model written from the semantics (not from
//! the core's code). After every step the two must agree on: the outcome of the call, every answer
//! delivered to a blocked WAIT (each ticket's oneshot), and `LOCK.INFO` of every key (holder, token,
//! lease left, queue order, blocked count, remembered completion, last failure), and the number of
//! keys the core remembers. Tokens are not predicted (they depend on the seed and the shard), only
//! checked: every grant of a key carries a larger token than every earlier grant of that key.
//!
//! The harness acts like the server: a connection blocked in LOCK.WAIT sends nothing else until its
//! WAIT is answered, times out or the connection closes; a closed connection first abandons its
//! WAIT, then releases what it holds, and is replaced by a fresh connection id. The expiry driver
//! is punctual: the clock stops at every deadline and `expire` runs there.
//!
//! Two generators: in `one_connection_per_owner` each owner always speaks over its own connection
//! (how clients use owner ids); in `owners_across_connections` any owner may speak over any
//! connection (a client retrying over a new connection while the old one hangs).
//!
//! The model's reading of the semantics where the summary leaves room:
//! - a grant binds the lock to a connection (whose close is a FAILURE with release-on-disconnect):
//!   the one of the TRY/WAIT/EXTEND that acquired or renewed it; for a hand-off to a blocked owner,
//!   the connection of its newest blocked WAIT; to an owner not blocked, the connection of its last
//!   TRY or WAIT;
//! - a WAIT whose connection closes after a grant was put in its channel but before it was read
//!   passes the lock on, unless the owner learned of that grant some other way (another of its
//!   WAITs got it too, or it renewed or extended since): nobody who was told ACQUIRED may lose
//!   the lock without a FAILURE of its own;
//! - a stale token gets NOTHOLDER while someone holds the key, NOLOCK when nobody does;
//! - with release-on-disconnect, a closing connection also takes the queue places it last renewed
//!   (an owner blocked on another connection keeps its place, bound to that WAIT's connection);
//! - NOQUEUE never queues, but renews a place the owner has like any TRY (its lease, PX and
//!   connection); CANCEL leaves a DONE already owed in place;
//! - a SUCCESS owes its DONE to blocked owners too (answered at once as well), for their place's
//!   lease from then: their next TRY or WAIT answers it again, in case the first was lost.
//!
//! Disagreements found are kept below the generators as plain tests.

// A test binary has no outside users: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

use std::sync::{Arc, Mutex};

use baton::core::testing::{acquired, at, blocked, conn, release_connection, request, wait};
use baton::core::{
    Answered, Change, ChangeEncoder, ChangeSink, ConnId, CoreSettings, ExtendOutcome, Gauges, IfHeld, KeyInfo, Letter,
    LockCore, LockRequest, LockStateName, OwedDone, TryOutcome, UnlockOutcome, Verdict, WaitOutcome, WaitStart,
    WaitTicket, WallClock, decode_changes,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};

const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const OWNERS: [&str; 4] = ["a", "b", "c", "d"];
const SLOTS: usize = 4;
const DEFAULT_LEASE: u64 = 100;
const MAX_LEASE: u64 = 400;
/// LOCK.INFO is also asked to list this few owners, shorter than most lines the generators build.
const LISTED: usize = 1;

const REASON_FAILURE: &[u8] = b"FAILURE reported by the holder";
const REASON_EXPIRED: &[u8] = b"lease expired";
const REASON_DISCONNECTED: &[u8] = b"holder connection closed";
const REASON_UNDELIVERED: &[u8] = b"waiter connection closed before the grant reached it";

// ---------------------------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone, Copy)]
enum Who {
    /// Whoever holds the key now (owner `a` when nobody does).
    Holder,
    Owner(usize),
}

#[derive(Debug, Clone, Copy)]
enum Tok {
    /// The current holder's token (when known).
    Holder,
    /// One of the tokens this key has had.
    Seen(usize),
    Bogus(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Try {
        slot: usize,
        key: usize,
        owner: usize,
        lease: Option<u64>,
        noqueue: bool,
        /// An answer that paid a DONE was never written, and the server owes it again.
        write_fails: bool,
    },
    /// `eager`: the connection reads the answer as soon as it arrives; otherwise it is slow and the
    /// answer sits in the channel until `Receive`, `TimeOut` or `Disconnect`.
    Wait {
        slot: usize,
        key: usize,
        owner: usize,
        lease: Option<u64>,
        eager: bool,
        /// An answer at once that paid a DONE was never written, as for `Try`.
        write_fails: bool,
    },
    Unlock {
        slot: usize,
        key: usize,
        who: Who,
        tok: Tok,
        success: bool,
        result: Option<u8>,
        keep: Option<u64>,
    },
    Extend {
        slot: usize,
        key: usize,
        who: Who,
        tok: Tok,
        lease: u64,
    },
    Cancel {
        key: usize,
        owner: usize,
    },
    /// `write_fails`: a DONE read this way was never written (the connection's write failed), and
    /// the server owes it again.
    Receive {
        slot: usize,
        write_fails: bool,
    },
    TimeOut {
        slot: usize,
    },
    Disconnect {
        slot: usize,
    },
    Advance {
        ms: u64,
    },
}

fn lease_strategy() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(1)),
        4 => (1u64..200).prop_map(Some),
        1 => Just(Some(10_000)),
    ]
}

fn who_strategy() -> impl Strategy<Value = Who> {
    prop_oneof![3 => Just(Who::Holder), 1 => (0..OWNERS.len()).prop_map(Who::Owner)]
}

fn tok_strategy() -> impl Strategy<Value = Tok> {
    prop_oneof![
        4 => Just(Tok::Holder),
        2 => (0usize..8).prop_map(Tok::Seen),
        1 => prop_oneof![Just(1u64), Just(u64::MAX), any::<u64>()].prop_map(Tok::Bogus),
    ]
}

fn write_fails() -> impl Strategy<Value = bool> {
    proptest::bool::weighted(0.25)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let key = 0..KEYS.len();
    let owner = 0..OWNERS.len();
    prop_oneof![
        4 => (slot.clone(), key.clone(), owner.clone(), lease_strategy(), prop::bool::weighted(0.2), write_fails())
            .prop_map(|(slot, key, owner, lease, noqueue, write_fails)| Op::Try {
                slot,
                key,
                owner,
                lease,
                noqueue,
                write_fails
            }),
        4 => (slot.clone(), key.clone(), owner.clone(), lease_strategy(), prop::bool::weighted(0.6), write_fails())
            .prop_map(|(slot, key, owner, lease, eager, write_fails)| Op::Wait {
                slot,
                key,
                owner,
                lease,
                eager,
                write_fails
            }),
        4 => (
            slot.clone(),
            key.clone(),
            who_strategy(),
            tok_strategy(),
            any::<bool>(),
            prop::option::of(0u8..3),
            prop_oneof![2 => Just(None), 1 => Just(Some(1u64)), 2 => (1u64..300).prop_map(Some), 1 => Just(Some(5_000))],
        )
            .prop_map(|(slot, key, who, tok, success, result, keep)| Op::Unlock {
                slot,
                key,
                who,
                tok,
                success,
                result,
                keep
            }),
        1 => (slot.clone(), key.clone(), who_strategy(), tok_strategy(), prop_oneof![1u64..300, Just(50_000)])
            .prop_map(|(slot, key, who, tok, lease)| Op::Extend { slot, key, who, tok, lease }),
        1 => (key.clone(), owner).prop_map(|(key, owner)| Op::Cancel { key, owner }),
        2 => (slot.clone(), write_fails()).prop_map(|(slot, write_fails)| Op::Receive { slot, write_fails }),
        2 => slot.clone().prop_map(|slot| Op::TimeOut { slot }),
        1 => slot.prop_map(|slot| Op::Disconnect { slot }),
        3 => prop_oneof![0u64..5, 0u64..150, Just(DEFAULT_LEASE), 100u64..1_000].prop_map(|ms| Op::Advance { ms }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The reference model

type GrantId = usize;
type TicketId = usize;
/// An answer at once, and the DONE it paid if it was one owed.
type Paying<T> = (T, Option<MOwed>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct MCompletion {
    finisher: usize,
    result: Option<Vec<u8>>,
    /// The holding that succeeded: a delivered DONE pays what is owed of this completion only.
    grant: GrantId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MOutcome {
    Acquired(GrantId),
    Done(MCompletion),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MTry {
    Acquired(GrantId),
    Queued(usize),
    Busy(usize),
    Done(MCompletion),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TicketState {
    Pending,
    Delivered(MOutcome),
    /// The owner was cancelled out of the queue: the WAIT ends with nil.
    Closed,
}

#[derive(Debug, Clone)]
struct MTicket {
    key: usize,
    owner: usize,
    conn: ConnId,
    state: TicketState,
}

#[derive(Debug, Clone)]
struct MHolder {
    owner: usize,
    grant: GrantId,
    deadline: u64,
    /// The connection the lock is bound to: the one it last acquired, waited or extended on.
    /// When one grant reaches several blocked WAITs of the owner at once, the one whose WAIT came
    /// last; after a grant to an owner that was not blocked, the connection of its last TRY or
    /// WAIT.
    conn: Option<ConnId>,
    /// Connections the lock was bound to before a renewal or EXTEND moved it, oldest first: the
    /// owner was told there that it holds the lock, so they still speak for it.
    renewed_from: Vec<ConnId>,
}

impl MHolder {
    fn rebind(&mut self, conn: ConnId) {
        if let Some(previous) = self.conn.replace(conn).filter(|&previous| previous != conn) {
            self.renewed_from.retain(|&other| other != conn);
            self.renewed_from.push(previous);
        }
    }
}

#[derive(Debug, Clone)]
struct MWaiter {
    owner: usize,
    /// The connection of its last TRY or WAIT: a grant made while it is not blocked binds there.
    conn: ConnId,
    lease: u64,
    /// End of its place in line while no WAIT of it is blocked.
    expires_at: u64,
    blockers: Vec<TicketId>,
}

#[derive(Debug, Clone)]
struct MOwed {
    owner: usize,
    until: u64,
    completion: MCompletion,
}

#[derive(Debug, Clone, Default)]
struct MKey {
    holder: Option<MHolder>,
    queue: Vec<MWaiter>,
    completion: Option<(MCompletion, u64)>,
    owed: Vec<MOwed>,
    last_failure: Option<Vec<u8>>,
}

impl MKey {
    fn exists(&self) -> bool {
        self.holder.is_some() || !self.queue.is_empty() || self.completion.is_some() || !self.owed.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Failure,
    Expired,
    Disconnected,
    Undelivered,
}

/// What the model saw happen, for the figures in docs/reliability.md.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    immediate_grants: u64,
    handoffs_to_blocked: u64,
    handoffs_to_unblocked_head: u64,
    done_delivered: u64,
    done_owed: u64,
    /// Blocked WAITs' DONEs given back to the server when their write failed.
    done_unwritten: u64,
    /// DONEs owed and paid by a TRY's or WAIT's answer at once, given back when its write failed.
    immediate_done_unwritten: u64,
    failures: u64,
    lease_expiries: u64,
    disconnect_releases: u64,
    undelivered_releases: u64,
    timeouts_returning_an_answer: u64,
    abandoned_waits: u64,
    cancels: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.immediate_grants += o.immediate_grants;
        self.handoffs_to_blocked += o.handoffs_to_blocked;
        self.handoffs_to_unblocked_head += o.handoffs_to_unblocked_head;
        self.done_delivered += o.done_delivered;
        self.done_owed += o.done_owed;
        self.done_unwritten += o.done_unwritten;
        self.immediate_done_unwritten += o.immediate_done_unwritten;
        self.failures += o.failures;
        self.lease_expiries += o.lease_expiries;
        self.disconnect_releases += o.disconnect_releases;
        self.undelivered_releases += o.undelivered_releases;
        self.timeouts_returning_an_answer += o.timeouts_returning_an_answer;
        self.abandoned_waits += o.abandoned_waits;
        self.cancels += o.cancels;
    }
}

struct Model {
    counts: Counters,
    release_on_disconnect: bool,
    keys: Vec<MKey>,
    tickets: Vec<MTicket>,
    /// Per grant: its key and its token once observed.
    grants: Vec<(usize, Option<u64>)>,
    /// Tickets whose connection closed while they were blocked or held an unread answer.
    abandoned: Vec<bool>,
    /// Connections closed with release-on-disconnect on: they no longer speak for a holder.
    closed: Vec<ConnId>,
    /// Every UNLOCK carried out: (key, owner, token, answer). A retry gets the same answer.
    unlocked: Vec<(usize, usize, u64, UnlockOutcome)>,
}

fn lease_for(requested: Option<u64>) -> u64 {
    requested.unwrap_or(DEFAULT_LEASE).clamp(1, MAX_LEASE)
}

impl Model {
    fn new(release_on_disconnect: bool) -> Model {
        Model {
            counts: Counters::default(),
            release_on_disconnect,
            keys: vec![MKey::default(); KEYS.len()],
            tickets: Vec::new(),
            grants: Vec::new(),
            abandoned: Vec::new(),
            closed: Vec::new(),
            unlocked: Vec::new(),
        }
    }

    fn new_grant(&mut self, key: usize) -> GrantId {
        self.grants.push((key, None));
        self.grants.len() - 1
    }

    fn token(&self, grant: GrantId) -> Option<u64> {
        self.grants[grant].1
    }

    /// Records (or checks) the token the core showed for `grant`; tokens of one key must rise in
    /// the order the grants were made.
    fn learn(&mut self, grant: GrantId, token: u64) -> Result<(), String> {
        match self.grants[grant].1 {
            Some(known) if known != token => return Err(format!("grant {grant}: token {token}, earlier seen {known}")),
            Some(_) => return Ok(()),
            None => self.grants[grant].1 = Some(token),
        }
        let key = self.grants[grant].0;
        let mut last = 0u64;
        for (g, (k, t)) in self.grants.iter().enumerate() {
            if *k != key {
                continue;
            }
            if let Some(t) = t {
                if *t <= last {
                    return Err(format!("tokens of {} do not increase: grant {g} has {t} after {last}", KEYS[key]));
                }
                last = *t;
            }
        }
        Ok(())
    }

    /// Tokens this key has had, in grant order.
    fn seen_tokens(&self, key: usize) -> Vec<u64> {
        self.grants.iter().filter(|(k, _)| *k == key).filter_map(|(_, t)| *t).collect()
    }

    fn result(result: Option<u8>) -> Option<Arc<[u8]>> {
        result.map(|r| Arc::from(&[b'r', b'0' + r][..]))
    }

    /// TRY and WAIT answers that need no queue: a DONE owed (paid by the answer) or remembered,
    /// a free lock, a renewal.
    fn immediate(&mut self, key: usize, owner: usize, lease: u64, conn: ConnId, now: u64) -> Option<Paying<MOutcome>> {
        let k = &mut self.keys[key];
        if let Some(at) = k.owed.iter().position(|owed| owed.owner == owner) {
            let paid = k.owed.remove(at);
            return Some((MOutcome::Done(paid.completion.clone()), Some(paid)));
        }
        if let Some((completion, _)) = &k.completion {
            return Some((MOutcome::Done(completion.clone()), None));
        }
        if self.keys[key].holder.is_none() {
            self.counts.immediate_grants += 1;
            let grant = self.new_grant(key);
            self.keys[key].holder =
                Some(MHolder { owner, grant, deadline: now + lease, conn: Some(conn), renewed_from: Vec::new() });
            return Some((MOutcome::Acquired(grant), None));
        }
        match &mut self.keys[key].holder {
            Some(holder) if holder.owner == owner => {
                holder.deadline = now + lease;
                holder.rebind(conn);
                Some((MOutcome::Acquired(holder.grant), None))
            }
            _ => None,
        }
    }

    /// Finds or appends the owner's place and renews it; returns its index.
    fn enqueue(&mut self, key: usize, owner: usize, lease: u64, conn: ConnId, now: u64) -> usize {
        let queue = &mut self.keys[key].queue;
        let index = match queue.iter().position(|w| w.owner == owner) {
            Some(index) => index,
            None => {
                queue.push(MWaiter { owner, conn, lease, expires_at: 0, blockers: Vec::new() });
                queue.len() - 1
            }
        };
        self.renew(key, index, lease, conn, now);
        index
    }

    /// A TRY or WAIT renews the owner's place: its lease from now, and its connection.
    fn renew(&mut self, key: usize, index: usize, lease: u64, conn: ConnId, now: u64) {
        let waiter = &mut self.keys[key].queue[index];
        waiter.conn = conn;
        waiter.lease = lease;
        waiter.expires_at = now + lease;
    }

    fn try_lock(
        &mut self,
        key: usize,
        owner: usize,
        lease: u64,
        if_held: IfHeld,
        conn: ConnId,
        now: u64,
    ) -> Paying<MTry> {
        if let Some((outcome, paid)) = self.immediate(key, owner, lease, conn, now) {
            let outcome = match outcome {
                MOutcome::Acquired(grant) => MTry::Acquired(grant),
                MOutcome::Done(completion) => MTry::Done(completion),
            };
            return (outcome, paid);
        }
        if if_held == IfHeld::NoQueue {
            if let Some(index) = self.keys[key].queue.iter().position(|w| w.owner == owner) {
                self.renew(key, index, lease, conn, now);
            }
            return (MTry::Busy(self.keys[key].holder.as_ref().map_or(usize::MAX, |h| h.owner)), None);
        }
        (MTry::Queued(self.enqueue(key, owner, lease, conn, now) + 1), None)
    }

    fn wait(
        &mut self,
        key: usize,
        owner: usize,
        lease: u64,
        conn: ConnId,
        now: u64,
    ) -> Result<Paying<MOutcome>, TicketId> {
        if let Some(outcome) = self.immediate(key, owner, lease, conn, now) {
            return Ok(outcome);
        }
        let index = self.enqueue(key, owner, lease, conn, now);
        self.tickets.push(MTicket { key, owner, conn, state: TicketState::Pending });
        let id = self.tickets.len() - 1;
        self.keys[key].queue[index].blockers.push(id);
        Err(id)
    }

    /// The lock is free again after a failure: it goes to the first waiter still in line.
    fn hand_off(&mut self, key: usize, now: u64) -> bool {
        while !self.keys[key].queue.is_empty() {
            let waiter = self.keys[key].queue.remove(0);
            if waiter.blockers.is_empty() && waiter.expires_at <= now {
                continue;
            }
            let grant = self.new_grant(key);
            if waiter.blockers.is_empty() {
                self.counts.handoffs_to_unblocked_head += 1;
            } else {
                self.counts.handoffs_to_blocked += 1;
            }
            // Ticket ids grow with every WAIT: the largest is the owner's latest WAIT. An owner
            // not blocked now is bound to the connection of its last TRY or WAIT.
            let conn = waiter.blockers.iter().max().map_or(Some(waiter.conn), |&t| Some(self.tickets[t].conn));
            for &ticket in &waiter.blockers {
                self.tickets[ticket].state = TicketState::Delivered(MOutcome::Acquired(grant));
            }
            self.keys[key].holder = Some(MHolder {
                owner: waiter.owner,
                grant,
                deadline: now + waiter.lease,
                conn,
                renewed_from: Vec::new(),
            });
            return true;
        }
        false
    }

    fn fail(&mut self, key: usize, cause: Cause, reason: Option<Vec<u8>>, now: u64) -> bool {
        self.keys[key].holder = None;
        match cause {
            Cause::Failure => self.counts.failures += 1,
            Cause::Expired => self.counts.lease_expiries += 1,
            Cause::Disconnected => self.counts.disconnect_releases += 1,
            Cause::Undelivered => self.counts.undelivered_releases += 1,
        }
        self.keys[key].last_failure = Some(match cause {
            Cause::Failure => reason.unwrap_or_else(|| REASON_FAILURE.to_vec()),
            Cause::Expired => REASON_EXPIRED.to_vec(),
            Cause::Disconnected => REASON_DISCONNECTED.to_vec(),
            Cause::Undelivered => REASON_UNDELIVERED.to_vec(),
        });
        self.hand_off(key, now)
    }

    fn unlock(&mut self, key: usize, owner: usize, token: u64, verdict: &Verdict, now: u64) -> UnlockOutcome {
        let holding = self.keys[key]
            .holder
            .as_ref()
            .map(|holder| holder.owner == owner && self.token(holder.grant) == Some(token));
        if holding != Some(true) {
            let retried = self.unlocked.iter().find(|(k, o, t, _)| (*k, *o, *t) == (key, owner, token));
            return match (retried, holding) {
                (Some((.., answer)), _) => *answer,
                (None, Some(_)) => UnlockOutcome::NotHolder,
                (None, None) => UnlockOutcome::NotLocked,
            };
        }
        let answer = self.end_holding(key, owner, verdict, now);
        self.unlocked.push((key, owner, token, answer));
        answer
    }

    fn end_holding(&mut self, key: usize, owner: usize, verdict: &Verdict, now: u64) -> UnlockOutcome {
        match verdict {
            Verdict::Success { result, keep_ms } => {
                let k = &mut self.keys[key];
                let grant = k.holder.take().expect("only a holding succeeds").grant;
                let completion = MCompletion { finisher: owner, result: result.as_deref().map(<[u8]>::to_vec), grant };
                let mut told = 0;
                for waiter in std::mem::take(&mut k.queue) {
                    // Owed to blocked owners too (answered at once as well), as if they had
                    // stopped waiting now: their answer may be lost with their connection.
                    let until = if waiter.blockers.is_empty() { waiter.expires_at } else { now + waiter.lease };
                    if until <= now {
                        continue;
                    }
                    if waiter.blockers.is_empty() {
                        self.counts.done_owed += 1;
                    } else {
                        self.counts.done_delivered += 1;
                    }
                    for ticket in waiter.blockers {
                        self.tickets[ticket].state = TicketState::Delivered(MOutcome::Done(completion.clone()));
                    }
                    k.owed.push(MOwed { owner: waiter.owner, until, completion: completion.clone() });
                    told += 1;
                }
                if let Some(keep_ms) = keep_ms {
                    k.completion = Some((completion, now + lease_for(Some(*keep_ms))));
                }
                UnlockOutcome::Succeeded { waiters_told: told }
            }
            Verdict::Failure { reason } => {
                if self.fail(key, Cause::Failure, reason.as_deref().map(<[u8]>::to_vec), now) {
                    UnlockOutcome::HandedOff
                } else {
                    UnlockOutcome::Released
                }
            }
        }
    }

    fn extend(&mut self, key: usize, owner: usize, token: u64, lease: u64, conn: ConnId, now: u64) -> ExtendOutcome {
        let known = self.keys[key].holder.as_ref().and_then(|h| self.token(h.grant));
        let Some(holder) = &mut self.keys[key].holder else {
            return ExtendOutcome::NotLocked;
        };
        if holder.owner != owner || known != Some(token) {
            return ExtendOutcome::NotHolder;
        }
        holder.deadline = now + lease_for(Some(lease));
        holder.rebind(conn);
        ExtendOutcome::Extended
    }

    fn cancel(&mut self, key: usize, owner: usize) -> bool {
        let Some(index) = self.keys[key].queue.iter().position(|w| w.owner == owner) else {
            return false;
        };
        let waiter = self.keys[key].queue.remove(index);
        self.counts.cancels += 1;
        for ticket in waiter.blockers {
            self.tickets[ticket].state = TicketState::Closed;
        }
        true
    }

    /// The DONE a blocked WAIT was answered is being written to its client: its owner is owed
    /// that completion no more. Returns the debt it paid, if it was still owed.
    fn done_received(&mut self, ticket: TicketId) -> Option<MOwed> {
        let MTicket { key, owner, state: TicketState::Delivered(MOutcome::Done(completion)), .. } =
            &self.tickets[ticket]
        else {
            return None;
        };
        let (key, owner, grant) = (*key, *owner, completion.grant);
        let owed = &mut self.keys[key].owed;
        let index = owed.iter().position(|owed| owed.owner == owner && owed.completion.grant == grant)?;
        Some(owed.remove(index))
    }

    /// A DONE paid as its write began was not written: owed again, unless its time is up or its
    /// owner has called since.
    fn done_unwritten(&mut self, key: usize, unwritten: MOwed, now: u64) {
        let k = &mut self.keys[key];
        let called_again = k.holder.as_ref().is_some_and(|h| h.owner == unwritten.owner)
            || k.queue.iter().any(|w| w.owner == unwritten.owner)
            || k.owed.iter().any(|owed| owed.owner == unwritten.owner);
        if !called_again && unwritten.until > now {
            k.owed.push(unwritten);
        }
    }

    fn remove_blocker(&mut self, ticket: TicketId) -> Option<(usize, usize)> {
        let key = self.tickets[ticket].key;
        let index = self.keys[key].queue.iter().position(|w| w.blockers.contains(&ticket))?;
        self.keys[key].queue[index].blockers.retain(|&t| t != ticket);
        Some((key, index))
    }

    /// The WAIT timed out. Returns what it had been told meanwhile (its reply then).
    fn timed_out(&mut self, ticket: TicketId, now: u64) -> Option<MOutcome> {
        match self.tickets[ticket].state.clone() {
            TicketState::Pending => {
                let (key, index) = self.remove_blocker(ticket).expect("a pending ticket is queued");
                let waiter = &mut self.keys[key].queue[index];
                if waiter.blockers.is_empty() {
                    waiter.expires_at = now + waiter.lease;
                }
                None
            }
            TicketState::Delivered(outcome) => {
                self.counts.timeouts_returning_an_answer += 1;
                Some(outcome)
            }
            TicketState::Closed => None,
        }
    }

    /// The WAIT's connection closed: it leaves the line (unless its place was renewed elsewhere
    /// since). A grant it was sent but never read passes on, unless the owner learned of it some
    /// other way.
    fn mark_abandoned(&mut self, ticket: TicketId) {
        if self.abandoned.len() <= ticket {
            self.abandoned.resize(ticket + 1, false);
        }
        self.abandoned[ticket] = true;
    }

    fn abandoned(&mut self, ticket: TicketId, now: u64) {
        self.counts.abandoned_waits += 1;
        match self.tickets[ticket].state.clone() {
            // It leaves the line, unless the owner renewed its place since on another connection:
            // then the place stays, not blocked, leased from now.
            TicketState::Pending => {
                let (key, index) = self.remove_blocker(ticket).expect("a pending ticket is queued");
                let waiter = &mut self.keys[key].queue[index];
                if waiter.blockers.is_empty() {
                    if waiter.conn == self.tickets[ticket].conn {
                        self.keys[key].queue.remove(index);
                    } else {
                        waiter.expires_at = now + waiter.lease;
                    }
                }
            }
            // The grant never reaches the client on this connection. Only the connection the lock
            // is bound to matters (a renewal or EXTEND elsewhere moved the binding away).
            TicketState::Delivered(MOutcome::Acquired(grant)) => {
                self.mark_abandoned(ticket);
                let key = self.grants[grant].0;
                if self.keys[key].holder.as_ref().is_some_and(|h| h.grant == grant) {
                    self.unbind(key, self.tickets[ticket].conn, Cause::Undelivered, now);
                }
            }
            TicketState::Delivered(MOutcome::Done(_)) | TicketState::Closed => {}
        }
    }

    /// `gone` can no longer speak for the holder. If the lock is bound to it, it moves to another
    /// connection, still open, where the owner was told it holds it: the newest the lock was bound
    /// to before a renewal moved it, else the newest whose WAIT was sent the grant. With none, it
    /// passes on for `cause`.
    fn unbind(&mut self, key: usize, gone: ConnId, cause: Cause, now: u64) {
        let Some(holder) = &self.keys[key].holder else {
            return;
        };
        if holder.conn != Some(gone) {
            return;
        }
        let open = |conn: ConnId| conn != gone && !self.closed.contains(&conn);
        let sent = TicketState::Delivered(MOutcome::Acquired(holder.grant));
        let renewed_from = holder.renewed_from.iter().rev().copied().find(|&conn| open(conn));
        let waited_on = (0..self.tickets.len())
            .filter(|&t| {
                open(self.tickets[t].conn)
                    && !self.abandoned.get(t).copied().unwrap_or(false)
                    && self.tickets[t].state == sent
            })
            .max()
            .map(|t| self.tickets[t].conn);
        match renewed_from.or(waited_on) {
            Some(conn) => self.keys[key].holder.as_mut().expect("checked above").conn = Some(conn),
            None => {
                self.fail(key, cause, None, now);
            }
        }
    }

    /// With release-on-disconnect, a closed connection takes with it the places it last renewed
    /// (an owner still blocked elsewhere stays, now bound to its newest WAIT's connection), then
    /// the locks bound to it.
    fn release_connection(&mut self, conn: ConnId, now: u64) {
        if !self.release_on_disconnect {
            return;
        }
        self.closed.push(conn);
        for key in 0..KEYS.len() {
            let tickets = &self.tickets;
            self.keys[key].queue.retain_mut(|w| {
                if w.conn != conn {
                    return true;
                }
                if let Some(&newest) = w.blockers.iter().filter(|&&t| tickets[t].conn != conn).max() {
                    w.conn = tickets[newest].conn;
                }
                !w.blockers.is_empty()
            });
            self.unbind(key, conn, Cause::Disconnected, now);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut consider = |t: u64| next = Some(next.map_or(t, |n| n.min(t)));
        for k in &self.keys {
            if let Some(h) = &k.holder {
                consider(h.deadline);
            }
            for w in k.queue.iter().filter(|w| w.blockers.is_empty()) {
                consider(w.expires_at);
            }
            if let Some((_, until)) = &k.completion {
                consider(*until);
            }
            for owed in &k.owed {
                consider(owed.until);
            }
        }
        next
    }

    /// Everything due at `now`, in the order it falls due at one instant: places and remembered
    /// answers first, then the holder's lease (a failure that hands the lock on).
    fn expire(&mut self, now: u64) {
        for key in 0..KEYS.len() {
            let k = &mut self.keys[key];
            k.queue.retain(|w| !w.blockers.is_empty() || w.expires_at > now);
            if k.completion.as_ref().is_some_and(|(_, until)| *until <= now) {
                k.completion = None;
            }
            k.owed.retain(|owed| owed.until > now);
            if k.holder.as_ref().is_some_and(|h| h.deadline <= now) {
                self.fail(key, Cause::Expired, None, now);
            }
        }
    }

    /// Keys with nothing left to remember are forgotten (and their last failure with them).
    fn forget(&mut self) {
        for k in &mut self.keys {
            if !k.exists() {
                k.last_failure = None;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The harness

struct Outstanding {
    ticket: WaitTicket,
    /// The WAIT's key, in `KEYS`.
    key: usize,
    id: TicketId,
    eager: bool,
}

struct Slot {
    conn: ConnId,
    waiting: Option<Outstanding>,
}

struct Harness {
    core: LockCore,
    /// Every change the core journaled, in order.
    journal: Arc<Journal>,
    /// A snapshot of the core (the changes that rebuild it) and how much of `journal` it covers.
    snapshot: (Vec<Change>, usize),
    model: Model,
    slots: Vec<Slot>,
    next_conn: u64,
    now: u64,
    shared_owners: bool,
    log: Vec<String>,
}

type Check = Result<(), String>;

fn ensure(condition: bool, message: impl FnOnce() -> String) -> Check {
    if condition { Ok(()) } else { Err(message()) }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn owner_index(name: &[u8]) -> Option<usize> {
    OWNERS.iter().position(|o| o.as_bytes() == name)
}

/// The model's queues are a few short owners: far below what a queue may weigh.
fn settings(shards: usize, release_on_disconnect: bool) -> CoreSettings {
    CoreSettings {
        default_lease_ms: DEFAULT_LEASE,
        max_lease_ms: MAX_LEASE,
        release_on_disconnect,
        shards,
        max_queue_bytes: 48 << 20,
    }
}

impl Harness {
    fn new(shards: usize, release_on_disconnect: bool, seed: u64, shared_owners: bool) -> Harness {
        let core = LockCore::new(settings(shards, release_on_disconnect), seed);
        let slots = (0..SLOTS).map(|i| Slot { conn: conn(i as u64 + 1), waiting: None }).collect();
        let journal = Arc::new(Journal::default());
        core.attach_sink(Arc::clone(&journal) as Arc<dyn ChangeSink>);
        Harness {
            core,
            journal,
            snapshot: (Vec::new(), 0),
            model: Model::new(release_on_disconnect),
            slots,
            next_conn: SLOTS as u64 + 1,
            now: 0,
            shared_owners,
            log: Vec::new(),
        }
    }

    /// The slot an owner speaks from when each owner has its own connection.
    fn slot_of(&self, slot: usize, owner: usize) -> usize {
        if self.shared_owners { slot } else { owner % SLOTS }
    }

    /// A TRY or WAIT of `owner` and the slot it goes out on; None while that slot's connection is
    /// blocked in a WAIT (it sends nothing else then).
    fn request_from(
        &self,
        slot: usize,
        key: usize,
        owner: usize,
        lease: Option<u64>,
    ) -> Option<(usize, LockRequest<'static>)> {
        let slot = self.slot_of(slot, owner);
        if self.slots[slot].waiting.is_some() {
            return None;
        }
        let conn = self.slots[slot].conn;
        Some((slot, LockRequest { key: KEYS[key].as_bytes(), owner: OWNERS[owner].as_bytes(), lease_ms: lease, conn }))
    }

    fn resolve_who(&self, key: usize, who: Who) -> usize {
        match who {
            Who::Owner(owner) => owner,
            Who::Holder => self.model.keys[key].holder.as_ref().map_or(0, |h| h.owner),
        }
    }

    fn resolve_tok(&self, key: usize, tok: Tok) -> u64 {
        let seen = self.model.seen_tokens(key);
        match tok {
            Tok::Holder => self.model.keys[key]
                .holder
                .as_ref()
                .and_then(|h| self.model.token(h.grant))
                .or_else(|| seen.last().copied())
                .unwrap_or(1),
            Tok::Seen(i) if !seen.is_empty() => seen[i % seen.len()],
            Tok::Seen(_) => 1,
            Tok::Bogus(t) => t,
        }
    }

    fn apply(&mut self, op: &Op) -> Check {
        let now = self.now;
        match *op {
            Op::Try { slot, key, owner, lease, noqueue, write_fails } => {
                let Some((_, request)) = self.request_from(slot, key, owner, lease) else {
                    return Ok(());
                };
                let conn = request.conn;
                let if_held = if noqueue { IfHeld::NoQueue } else { IfHeld::Queue };
                let Answered { outcome: got, paid } = self.core.try_lock_answered(request, if_held, at(now));
                let (want, owed) = self.model.try_lock(key, owner, lease_for(lease), if_held, conn, now);
                self.log.push(format!(
                    "t={now} TRY {} {} conn={conn} lease={lease:?} noqueue={noqueue} -> {got:?}",
                    KEYS[key], OWNERS[owner]
                ));
                self.answered_at_once(key, owner, paid, owed, write_fails)?;
                match (&got, &want) {
                    (TryOutcome::Acquired { token }, MTry::Acquired(grant)) => self.model.learn(*grant, *token),
                    (TryOutcome::Queued { position }, MTry::Queued(expected)) => {
                        ensure(position == expected, || format!("QUEUED {position}, model says {expected}"))
                    }
                    (TryOutcome::Busy { holder }, MTry::Busy(expected)) => {
                        ensure(owner_index(holder) == Some(*expected), || {
                            format!("BUSY {}, model says {}", text(holder), OWNERS[*expected])
                        })
                    }
                    (TryOutcome::Done(c), MTry::Done(expected)) => same_completion(c, expected),
                    _ => Err(format!("TRY answered {got:?}, model says {want:?}")),
                }
            }
            Op::Wait { slot, key, owner, lease, eager, write_fails } => {
                let Some((slot, request)) = self.request_from(slot, key, owner, lease) else {
                    return Ok(());
                };
                let conn = request.conn;
                let got = wait(&self.core, request, at(now));
                let want = self.model.wait(key, owner, lease_for(lease), conn, now);
                self.log.push(format!(
                    "t={now} WAIT {} {} conn={conn} lease={lease:?} eager={eager} -> {}",
                    KEYS[key],
                    OWNERS[owner],
                    match &got {
                        WaitStart::Ready(answered) => format!("{:?}", answered.outcome),
                        WaitStart::Blocked(_) => "blocked".to_owned(),
                        WaitStart::QueueFull => "queue full".to_owned(),
                    }
                ));
                match (got, want) {
                    (WaitStart::Ready(Answered { outcome, paid }), Ok((expected, owed))) => {
                        self.answered_at_once(key, owner, paid, owed, write_fails)?;
                        self.same_outcome(&outcome, &expected)
                    }
                    (WaitStart::Blocked(ticket), Err(id)) => {
                        self.slots[slot].waiting = Some(Outstanding { ticket, key, id, eager });
                        Ok(())
                    }
                    (WaitStart::Ready(answered), Err(_)) => {
                        Err(format!("WAIT answered {:?}, model blocks", answered.outcome))
                    }
                    (WaitStart::Blocked(_), Ok(expected)) => Err(format!("WAIT blocked, model answers {expected:?}")),
                    // A few owners of a few bytes never weigh what a queue may.
                    (WaitStart::QueueFull, _) => Err("WAIT found the queue full".to_owned()),
                }
            }
            Op::Unlock { slot, key, who, tok, success, result, keep } => {
                let owner = self.resolve_who(key, who);
                let slot = self.slot_of(slot, owner);
                if self.slots[slot].waiting.is_some() {
                    return Ok(());
                }
                let token = self.resolve_tok(key, tok);
                let verdict = if success {
                    Verdict::Success { result: Model::result(result), keep_ms: keep }
                } else {
                    Verdict::Failure { reason: result.map(|r| Arc::from(&[b'x', r][..])) }
                };
                let got =
                    self.core.unlock(KEYS[key].as_bytes(), OWNERS[owner].as_bytes(), token, verdict.clone(), at(now));
                let want = self.model.unlock(key, owner, token, &verdict, now);
                self.log.push(format!("t={now} UNLOCK {} {} {token} {verdict:?} -> {got:?}", KEYS[key], OWNERS[owner]));
                ensure(got == want, || format!("UNLOCK answered {got:?}, model says {want:?}"))
            }
            Op::Extend { slot, key, who, tok, lease } => {
                let owner = self.resolve_who(key, who);
                let slot = self.slot_of(slot, owner);
                if self.slots[slot].waiting.is_some() {
                    return Ok(());
                }
                let conn = self.slots[slot].conn;
                let token = self.resolve_tok(key, tok);
                let got = self.core.extend(KEYS[key].as_bytes(), OWNERS[owner].as_bytes(), token, lease, conn, at(now));
                let want = self.model.extend(key, owner, token, lease, conn, now);
                self.log.push(format!(
                    "t={now} EXTEND {} {} {token} {lease} conn={conn} -> {got:?}",
                    KEYS[key], OWNERS[owner]
                ));
                ensure(got == want, || format!("EXTEND answered {got:?}, model says {want:?}"))
            }
            Op::Cancel { key, owner } => {
                let got = self.core.cancel(KEYS[key].as_bytes(), OWNERS[owner].as_bytes(), at(now));
                let want = self.model.cancel(key, owner);
                self.log.push(format!("t={now} CANCEL {} {} -> {got}", KEYS[key], OWNERS[owner]));
                ensure(got == want, || format!("CANCEL answered {got}, model says {want}"))
            }
            Op::Receive { slot, write_fails } => {
                let Some(waiting) = &self.slots[slot].waiting else {
                    return Ok(());
                };
                let state = self.model.tickets[waiting.id].state.clone();
                if state == TicketState::Pending {
                    return Ok(());
                }
                let mut waiting = self.slots[slot].waiting.take().expect("checked above");
                self.log.push(format!("t={now} slot {slot} reads its answer"));
                self.receive(&mut waiting, &state, write_fails)
            }
            Op::TimeOut { slot } => {
                let Some(waiting) = self.slots[slot].waiting.take() else {
                    return Ok(());
                };
                let got = self
                    .core
                    .wait_timed_out(waiting.ticket, KEYS[waiting.key].as_bytes(), at(now))
                    .map(|answer| answer.outcome);
                let want = self.model.timed_out(waiting.id, now);
                self.log.push(format!("t={now} slot {slot} WAIT times out -> {got:?}"));
                match (got, want) {
                    (None, None) => Ok(()),
                    (Some(outcome), Some(expected)) => {
                        self.same_outcome(&outcome, &expected)?;
                        self.delivered(waiting.key, waiting.id, &outcome, false)
                    }
                    (got, want) => Err(format!("timed-out WAIT got {got:?}, model says {want:?}")),
                }
            }
            Op::Disconnect { slot } => {
                let closed = self.slots[slot].conn;
                self.log.push(format!("t={now} slot {slot} (conn {closed}) disconnects"));
                if let Some(waiting) = self.slots[slot].waiting.take() {
                    self.core.wait_abandoned(waiting.ticket, KEYS[waiting.key].as_bytes(), at(now));
                    self.model.abandoned(waiting.id, now);
                }
                let keys: Vec<&[u8]> = KEYS.iter().map(|k| k.as_bytes()).collect();
                release_connection(&self.core, closed, keys, at(now));
                self.model.release_connection(closed, now);
                self.slots[slot].conn = conn(self.next_conn);
                self.next_conn += 1;
                Ok(())
            }
            Op::Advance { ms } => {
                let target = now + ms;
                while let Some(deadline) = self.model.next_deadline().filter(|&d| d <= target) {
                    self.step_clock(deadline)?;
                }
                self.step_clock(target)
            }
        }
    }

    /// Moves the clock to `to` and lets both sides expire what is due there.
    fn step_clock(&mut self, to: u64) -> Check {
        self.now = to;
        let core_next = self.core.expire(at(to));
        self.model.expire(to);
        self.model.forget();
        self.log.push(format!("t={to} expire -> next {core_next:?}"));
        let model_next = self.model.next_deadline();
        // The expiry driver sleeps until the deadline returned: it must never be later than a
        // real one (earlier is only a spurious wake-up).
        match (core_next, model_next) {
            (_, None) => {}
            (None, Some(want)) => return Err(format!("expire() returned no deadline; model has one at {want}")),
            (Some(got), Some(want)) => {
                ensure(got <= want, || format!("expire() returned {got}, a deadline is due at {want}"))?
            }
        }
        self.check_all()
    }

    fn receive(&mut self, waiting: &mut Outstanding, state: &TicketState, write_fails: bool) -> Check {
        let got = waiting.ticket.take_letter();
        match (got, state) {
            (Some(Letter::Answer(answer)), TicketState::Delivered(expected)) => {
                let expected = expected.clone();
                self.same_outcome(&answer.outcome, &expected)?;
                self.delivered(waiting.key, waiting.id, &answer.outcome, write_fails)
            }
            (Some(Letter::Withdrawn), TicketState::Closed) => Ok(()),
            (got, want) => Err(format!("WAIT mailbox holds {got:?}, model says {want:?}")),
        }
    }

    /// A TRY or WAIT was answered at once, paying the DONE its owner was owed if that was the
    /// answer. If its write fails, the connection gives the DONE back.
    fn answered_at_once(
        &mut self,
        key: usize,
        owner: usize,
        paid: Option<OwedDone>,
        owed: Option<MOwed>,
        write_fails: bool,
    ) -> Check {
        ensure(paid.is_some() == owed.is_some(), || {
            format!("{} answered {} paying {paid:?}, model pays {owed:?}", KEYS[key], OWNERS[owner])
        })?;
        let (Some(paid), Some(owed)) = (paid, owed) else {
            return Ok(());
        };
        self.model.forget();
        if write_fails {
            self.log.push(format!("t={} DONE to {} not written", self.now, OWNERS[owner]));
            self.core.done_unwritten(KEYS[key].as_bytes(), paid, at(self.now));
            self.model.counts.immediate_done_unwritten += 1;
            self.model.done_unwritten(key, owed, self.now);
        }
        Ok(())
    }

    /// The WAIT's answer was written to its client, as a connection pays a DONE it writes; or
    /// its write failed, and the connection gives the DONE back.
    fn delivered(&mut self, key: usize, ticket: TicketId, outcome: &WaitOutcome, write_fails: bool) -> Check {
        let WaitOutcome::Done(completion) = outcome else {
            return Ok(());
        };
        let owner = self.model.tickets[ticket].owner;
        let (key_name, owner_name) = (KEYS[key].as_bytes(), OWNERS[owner].as_bytes());
        let paid = self.core.pay_done(key_name, owner_name, completion.token, at(self.now));
        let owed = self.model.done_received(ticket);
        // Paying the last thing the key kept lets the core forget it.
        self.model.forget();
        ensure(paid.is_some() == owed.is_some(), || {
            format!("paying the DONE of {} to {} found {paid:?}, model {owed:?}", completion.token, OWNERS[owner])
        })?;
        if !write_fails {
            self.log.push(format!("t={} DONE of {} delivered to {}", self.now, completion.token, OWNERS[owner]));
            return Ok(());
        }
        self.log.push(format!("t={} DONE of {} to {} not written", self.now, completion.token, OWNERS[owner]));
        if let Some(unwritten) = paid {
            self.core.done_unwritten(key_name, unwritten, at(self.now));
            self.model.counts.done_unwritten += 1;
        }
        if let Some(owed) = owed {
            self.model.done_unwritten(key, owed, self.now);
        }
        Ok(())
    }

    fn same_outcome(&mut self, got: &WaitOutcome, want: &MOutcome) -> Check {
        match (got, want) {
            (WaitOutcome::Acquired { token }, MOutcome::Acquired(grant)) => self.model.learn(*grant, *token),
            (WaitOutcome::Done(c), MOutcome::Done(expected)) => {
                same_completion(c, expected)?;
                ensure(self.model.token(expected.grant) == Some(c.token), || {
                    format!(
                        "DONE of token {}, model: of grant {} ({:?})",
                        c.token,
                        expected.grant,
                        self.model.token(expected.grant)
                    )
                })
            }
            _ => Err(format!("answer {got:?}, model says {want:?}")),
        }
    }

    /// Compares everything observable after a step.
    fn check_all(&mut self) -> Check {
        self.model.forget();
        // Blocked WAITs: a fast connection reads its answer at once; a slow one leaves it in the
        // channel, which must hold exactly what the model says was sent.
        for slot in 0..SLOTS {
            let Some(waiting) = &self.slots[slot].waiting else {
                continue;
            };
            let state = self.model.tickets[waiting.id].state.clone();
            if waiting.eager {
                if state == TicketState::Pending {
                    ensure(!waiting.ticket.has_answer(), || format!("slot {slot}: WAIT answered, model says pending"))?;
                    continue;
                }
                let mut waiting = self.slots[slot].waiting.take().expect("checked above");
                self.receive(&mut waiting, &state, false).map_err(|e| format!("slot {slot}: {e}"))?;
            } else {
                let delivered = matches!(state, TicketState::Delivered(_));
                ensure(waiting.ticket.has_answer() == delivered, || {
                    format!("slot {slot}: answer waiting={}, model says {state:?}", waiting.ticket.has_answer())
                })?;
            }
        }
        for (key, name) in KEYS.iter().enumerate() {
            let info = self.core.info(name.as_bytes(), at(self.now), usize::MAX);
            let short = self.core.info(name.as_bytes(), at(self.now), LISTED);
            ensure(short == info.clone().map(|info| listing(info, LISTED)), || {
                format!("{name}: LOCK.INFO COUNT {LISTED} is {short:?}, the whole one {info:?}")
            })?;
            self.compare_info(key, info).map_err(|e| format!("{name}: {e}"))?;
        }
        let existing = self.model.keys.iter().filter(|k| k.exists()).count();
        ensure(self.core.key_count() == existing, || {
            format!("core remembers {} keys, model {existing}", self.core.key_count())
        })?;
        self.check_gauges()?;
        self.check_recovery()
    }

    /// A core rebuilt from the last snapshot and the changes journaled since, as a restart would
    /// rebuild it now, must hold what the live core holds: the same holders and tokens (leases
    /// re-armed, never shorter), the same lines in the same order (no longer blocked), the same
    /// completions and owed DONEs, the same last failures. Every few steps the snapshot is
    /// retaken, so recoveries start both from a snapshot and from the start of the journal.
    fn check_recovery(&mut self) -> Check {
        let journaled = self.journal.len();
        if journaled - self.snapshot.1 > 12 {
            let mut snapshot = Vec::new();
            let mut covered = journaled;
            for index in 0..self.core.shard_count() {
                let (changes, mark) = self.core.snapshot_shard(index, at(self.now), || self.journal.len());
                snapshot.extend(changes);
                covered = covered.min(mark);
            }
            self.snapshot = (snapshot, covered);
        }
        let recovered = LockCore::new(self.core_settings(), 1);
        recovered.replay(self.snapshot.0.clone(), at(self.now));
        for batch in self.journal.since(self.snapshot.1) {
            recovered.replay(batch, at(self.now));
        }
        recovered.finish_replay(1);
        for name in KEYS {
            let live = self.core.info(name.as_bytes(), at(self.now), usize::MAX);
            let back = recovered.info(name.as_bytes(), at(self.now), usize::MAX);
            same_after_recovery(live, back).map_err(|e| format!("{name} after recovery: {e}"))?;
            let (owed_live, owed_back) = (self.core.owed_dones(name.as_bytes()), recovered.owed_dones(name.as_bytes()));
            ensure(owed_live == owed_back, || {
                format!("{name} after recovery: owed DONEs {owed_back:?}, live {owed_live:?}")
            })?;
        }
        Ok(())
    }

    fn core_settings(&self) -> CoreSettings {
        settings(self.core.shard_count(), self.model.release_on_disconnect)
    }

    /// The gauges INFO reports are kept as keys change, not computed: they must equal both a
    /// fresh count over the core's keys and the model's.
    fn check_gauges(&self) -> Check {
        let kept = self.core.gauges();
        let recounted = self.core.recount_gauges();
        ensure(kept == recounted, || format!("gauges kept {kept:?}, recounted {recounted:?}"))?;
        let keys = self.model.keys.iter().filter(|k| k.exists());
        let model = Gauges {
            keys: keys.clone().count() as u64,
            held_keys: keys.clone().filter(|k| k.holder.is_some()).count() as u64,
            waiters: keys.clone().map(|k| k.queue.len() as u64).sum(),
            blocked_waiters: keys.flat_map(|k| &k.queue).filter(|w| !w.blockers.is_empty()).count() as u64,
        };
        ensure(kept == model, || format!("gauges {kept:?}, model {model:?}"))
    }

    fn compare_info(&mut self, key: usize, info: Option<KeyInfo>) -> Check {
        let now = self.now;
        let k = self.model.keys[key].clone();
        let Some(info) = info else {
            return ensure(!k.exists(), || format!("core forgot the key, model has {k:?}"));
        };
        ensure(k.exists(), || format!("core still has {info:?}, model forgot the key"))?;
        let state = match (&k.holder, &k.completion) {
            (Some(_), _) => LockStateName::Held,
            (None, Some(_)) => LockStateName::Done,
            (None, None) => LockStateName::Free,
        };
        ensure(info.state == state, || format!("state {:?}, model {state:?}", info.state))?;
        match (&info.holder, &k.holder) {
            (None, None) => {}
            (Some(got), Some(want)) => {
                ensure(owner_index(&got.owner) == Some(want.owner), || {
                    format!("holder {}, model {}", text(&got.owner), OWNERS[want.owner])
                })?;
                self.model.learn(want.grant, got.token)?;
                ensure(got.lease_remaining_ms == want.deadline - now, || {
                    format!("lease left {}, model {}", got.lease_remaining_ms, want.deadline - now)
                })?;
            }
            (got, want) => return Err(format!("holder {got:?}, model {want:?}")),
        }
        let queue: Vec<Option<usize>> = info.queue.iter().map(|o| owner_index(o)).collect();
        let want_queue: Vec<Option<usize>> = k.queue.iter().map(|w| Some(w.owner)).collect();
        ensure(queue == want_queue, || format!("queue {queue:?}, model {want_queue:?}"))?;
        ensure(info.waiters == k.queue.len(), || format!("waiters {}, model {}", info.waiters, k.queue.len()))?;
        let blocked = k.queue.iter().filter(|w| !w.blockers.is_empty()).count();
        ensure(info.blocked == blocked, || format!("blocked {}, model {blocked}", info.blocked))?;
        match (&info.completion, &k.completion) {
            (None, None) => {}
            (Some((got, left)), Some((want, until))) => {
                same_completion(got, want)?;
                ensure(*left == until - now, || format!("keep left {left}, model {}", until - now))?;
            }
            (got, want) => return Err(format!("completion {got:?}, model {want:?}")),
        }
        ensure(info.last_failure.as_deref() == k.last_failure.as_deref(), || {
            format!(
                "last failure {:?}, model {:?}",
                info.last_failure.as_deref().map(text),
                k.last_failure.as_deref().map(text)
            )
        })
    }
}

/// The journal of a harness's core: every batch of changes, in the order the core made them.
#[derive(Default)]
struct Journal(Mutex<Vec<Vec<Change>>>);

impl Journal {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn since(&self, start: usize) -> Vec<Vec<Change>> {
        self.0.lock().unwrap()[start..].to_vec()
    }
}

impl ChangeSink for Journal {
    fn wall_ms_at_zero(&self) -> u64 {
        0
    }

    /// Keeps the batches as a recovery reads them back: decoded from the bytes the core encoded.
    /// Positioned by their count, as the journal positions its records.
    fn record(&self, changes: &mut ChangeEncoder) -> Option<u64> {
        let clock = WallClock { wall_ms_at_zero: 0, now_ms: 0, max_ahead_ms: u64::MAX };
        let mut batches = self.0.lock().unwrap();
        let mut position = None;
        for part in changes.parts() {
            batches.push(decode_changes(part, clock).expect("the core's own encoding decodes"));
            position = Some(batches.len() as u64);
        }
        position
    }
}

/// LOCK.INFO of a key rebuilt from the journal against the live one: the same, except that
/// nobody is blocked any more and a holder's lease restarted (so it is never shorter).
fn same_after_recovery(live: Option<KeyInfo>, back: Option<KeyInfo>) -> Check {
    let (Some(live), Some(back)) = (&live, &back) else {
        return ensure(live.is_none() && back.is_none(), || format!("recovered {back:?}, live {live:?}"));
    };
    ensure(back.state == live.state, || format!("state {:?}, live {:?}", back.state, live.state))?;
    match (&back.holder, &live.holder) {
        (None, None) => {}
        (Some(got), Some(want)) => ensure(
            got.owner == want.owner && got.token == want.token && got.lease_remaining_ms >= want.lease_remaining_ms,
            || format!("holder {got:?}, live {want:?}"),
        )?,
        (got, want) => return Err(format!("holder {got:?}, live {want:?}")),
    }
    ensure(back.queue == live.queue && back.waiters == live.waiters && back.blocked == 0, || {
        format!("line {:?} ({} blocked), live {:?}", back.queue, back.blocked, live.queue)
    })?;
    ensure(back.completion == live.completion, || {
        format!("completion {:?}, live {:?}", back.completion, live.completion)
    })?;
    ensure(back.last_failure == live.last_failure, || {
        format!("last failure {:?}, live {:?}", back.last_failure, live.last_failure)
    })
}

/// What LOCK.INFO listing at most `listed` owners answers, given the whole answer.
fn listing(mut info: KeyInfo, listed: usize) -> KeyInfo {
    info.queue.truncate(listed);
    info
}

fn same_completion(got: &baton::core::Completion, want: &MCompletion) -> Check {
    ensure(owner_index(&got.finisher) == Some(want.finisher) && got.result.as_deref() == want.result.as_deref(), || {
        format!(
            "DONE by {} result {:?}, model: by {} result {:?}",
            text(&got.finisher),
            got.result.as_deref().map(text),
            OWNERS[want.finisher],
            want.result.as_deref().map(text)
        )
    })
}

/// Runs `ops`; on the first disagreement returns the log of the run so far.
fn run(
    shards: usize,
    release_on_disconnect: bool,
    seed: u64,
    shared_owners: bool,
    ops: &[Op],
) -> Result<Stats, String> {
    let mut harness = Harness::new(shards, release_on_disconnect, seed, shared_owners);
    for (i, op) in ops.iter().enumerate() {
        let result = harness.apply(op).and_then(|()| harness.check_all());
        if let Err(error) = result {
            let tail = harness.log.iter().rev().take(40).rev().cloned().collect::<Vec<_>>().join("\n  ");
            return Err(format!(
                "step {i} ({op:?}) at t={}: {error}\n shards={shards} release_on_disconnect={release_on_disconnect}\n  {tail}",
                harness.now
            ));
        }
    }
    // Whatever is still blocked ends as a disconnect would end it, still checked.
    for slot in 0..SLOTS {
        if let Err(error) = harness.apply(&Op::Disconnect { slot }).and_then(|()| harness.check_all()) {
            let tail = harness.log.iter().rev().take(40).rev().cloned().collect::<Vec<_>>().join("\n  ");
            return Err(format!("closing slot {slot} at the end: {error}\n  {tail}"));
        }
    }
    Ok(Stats { grants: harness.model.grants.len() as u64, steps: ops.len() as u64, counts: harness.model.counts })
}

struct Stats {
    grants: u64,
    steps: u64,
    counts: Counters,
}

fn proptest_config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("BATON_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    }
}

/// A generated case: shard count, release-on-disconnect, token seed and the operations.
#[derive(Debug, Clone)]
struct Case {
    shards: usize,
    release_on_disconnect: bool,
    seed: u64,
    ops: Vec<Op>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(1usize), Just(4usize)],
        any::<bool>(),
        1u64..1 << 40,
        prop::collection::vec(op_strategy(), 1..150),
    )
        .prop_map(|(shards, release_on_disconnect, seed, ops)| Case { shards, release_on_disconnect, seed, ops })
}

fn check(case: &Case, shared_owners: bool) -> Result<(), TestCaseError> {
    run(case.shards, case.release_on_disconnect, case.seed, shared_owners, &case.ops)
        .map(drop)
        .map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(proptest_config(1000))]

    #[test]
    fn one_connection_per_owner(case in case_strategy()) {
        check(&case, false)?;
    }

    #[test]
    fn owners_across_connections(case in case_strategy()) {
        check(&case, true)?;
    }
}

/// A long deterministic run of many random sequences, to report how much the model covered.
#[test]
fn model_figures() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(op_strategy(), 100..150);
    let sequences: u64 = std::env::var("BATON_MODEL_FIGURES").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let mut totals = Stats { grants: 0, steps: 0, counts: Counters::default() };
    for case in 0..sequences {
        let ops = strategy.new_tree(&mut runner).expect("strategy").current();
        let stats = run(if case % 2 == 0 { 1 } else { 4 }, case % 3 != 0, 1 + case * 1_000_003, false, &ops)
            .unwrap_or_else(|report| panic!("{report}"));
        totals.grants += stats.grants;
        totals.steps += stats.steps;
        totals.counts.add(&stats.counts);
    }
    println!("model: {sequences} sequences, {} steps, {} grants, {:#?}", totals.steps, totals.grants, totals.counts);
}

// ---------------------------------------------------------------------------------------------
// Disagreements found by the generators above, kept as plain tests.

fn core_with(shards: usize, release_on_disconnect: bool) -> LockCore {
    LockCore::new(settings(shards, release_on_disconnect), 1)
}

fn holder_of(core: &LockCore, key: &str, now: u64) -> Option<(String, u64)> {
    core.info(key.as_bytes(), at(now), 0).and_then(|info| info.holder).map(|h| (text(&h.owner), h.token))
}

/// Shrunk from `owners_across_connections`. Owner `a` waits on connection 1; the lock is handed to
/// it while that connection is slow to read; `a`, retrying over connection 2, is told ACQUIRED;
/// then connection 1 closes without having read its answer. The lock must stay with `a` (it was
/// told it holds it); handing it on would make two holders.
#[test]
fn abandoned_wait_does_not_release_a_lock_its_owner_was_told_of_elsewhere() {
    let core = core_with(1, false);
    acquired(core.try_lock(request("k", "b", 1, None), IfHeld::Queue, at(0)));
    let stale = blocked(wait(&core, request("k", "a", 1, Some(51)), at(0)));
    core.expire(at(100)); // b's lease ends: the grant goes into a's unread WAIT on connection 1.
    let token = acquired(core.try_lock(request("k", "a", 2, None), IfHeld::Queue, at(100)));
    core.wait_abandoned(stale, b"k", at(100));
    assert_eq!(holder_of(&core, "k", 100), Some(("a".to_owned(), token)), "a was told ACQUIRED {token}");
}

/// Shrunk from `owners_across_connections`: owner `b` is blocked on connections 2 and 3 (a client
/// that reconnected and waits again); one grant answers both. Connection 2 closes before its task
/// read the answer. The lock must stay: connection 3 (the one the grant is bound to) has the same
/// answer and will reply ACQUIRED.
#[test]
fn abandoning_one_of_two_answered_waits_of_an_owner_keeps_the_lock() {
    let core = core_with(1, false);
    let first = acquired(core.try_lock(request("k", "c", 1, None), IfHeld::Queue, at(0)));
    let old = blocked(wait(&core, request("k", "b", 2, None), at(0)));
    let mut new = blocked(wait(&core, request("k", "b", 3, None), at(0)));
    assert_eq!(core.unlock(b"k", b"c", first, Verdict::Failure { reason: None }, at(0)), UnlockOutcome::HandedOff);
    core.wait_abandoned(old, b"k", at(0));
    let token = match new.try_answer() {
        Some(WaitOutcome::Acquired { token }) => token,
        other => panic!("the WAIT on connection 3 is answered with the grant: {other:?}"),
    };
    assert_eq!(holder_of(&core, "k", 0), Some(("b".to_owned(), token)), "b is told ACQUIRED {token} on connection 3");
}

/// Owner `a` waits on connection 2, which hangs; the client reconnects and waits again on
/// connection 3. One grant answers both WAITs. The holder's connection is the one it "last waited"
/// on (config: `--release-on-disconnect`): closing the hung connection must not release the lock
/// the client holds on connection 3.
#[test]
fn a_grant_to_two_waits_of_one_owner_belongs_to_the_later_connection() {
    let core = core_with(1, true);
    let first = acquired(core.try_lock(request("k", "b", 1, None), IfHeld::Queue, at(0)));
    let mut old = blocked(wait(&core, request("k", "a", 2, None), at(0)));
    let mut new = blocked(wait(&core, request("k", "a", 3, None), at(5)));
    assert_eq!(core.unlock(b"k", b"b", first, Verdict::Failure { reason: None }, at(10)), UnlockOutcome::HandedOff);
    let token = match (old.try_answer(), new.try_answer()) {
        (Some(WaitOutcome::Acquired { token: x }), Some(WaitOutcome::Acquired { token: y })) if x == y => x,
        other => panic!("both WAITs of a are answered with the grant: {other:?}"),
    };
    release_connection(&core, conn(2), [&b"k"[..]], at(20));
    assert_eq!(holder_of(&core, "k", 20), Some(("a".to_owned(), token)), "the live connection 3 holds it");
}

/// The expiry driver can run late (a busy machine, a paused process), and an operation on the key
/// settles it at its own time. A lease that ended at t=100 but is only processed at t=200 hands off
/// at t=200: the owner queued (not blocked) until t=150 has lost its place by then, so nobody gets
/// the lock, and nobody is sent a grant whose lease would already be over.
#[test]
fn a_late_expiry_hands_off_when_it_is_processed() {
    let core = core_with(1, true);
    acquired(core.try_lock(request("k", "a", 1, Some(100)), IfHeld::Queue, at(0)));
    assert_eq!(
        core.try_lock(request("k", "b", 2, Some(150)), IfHeld::Queue, at(0)),
        TryOutcome::Queued { position: 1 }
    );
    core.expire(at(200));
    assert_eq!(holder_of(&core, "k", 200), None, "b's place ran out at t=150, before the hand-off");
}
