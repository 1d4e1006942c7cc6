//! What the core answers. The network layer turns these into replies in one place (`reply.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::ConnId;
use super::clock::Timestamp;
use super::events::{self, LockEvent};
use super::mailbox::{AnswerWriter, Letter, Mailbox};
use super::told_done::OwedDone;

/// The record of a SUCCESS, shared by every waiter it is delivered to.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion {
    /// The token of the holding that succeeded: names the completion in the journal.
    pub token: u64,
    pub finisher: Arc<[u8]>,
    pub result: Option<Arc<[u8]>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryOutcome {
    Acquired {
        token: u64,
    },
    /// 1 = next in line.
    Queued {
        position: usize,
    },
    Busy {
        holder: Arc<[u8]>,
    },
    Done(Arc<Completion>),
    /// The owner has no place in the key's queue, and it is full.
    QueueFull,
}

/// What a blocked (or immediately answered) LOCK.WAIT learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitOutcome {
    Acquired { token: u64 },
    Done(Arc<Completion>),
}

/// What a blocked LOCK.WAIT is sent.
#[derive(Debug)]
pub struct Answer {
    pub outcome: WaitOutcome,
    /// When the core sent it: a grant's hand-off latency is measured from there.
    pub sent_at: Timestamp,
    pub recorded_at: RecordedAt,
    /// How much of its reply the connection whose request made it wrote to the waiter's socket
    /// (see `Mailbox::write_directly`).
    pub written: Written,
    /// A DONE that connection paid to write it but did not write whole: whoever writes the rest
    /// keeps it, and gives it back if that write fails (see [`Answered`]).
    pub paid: Option<OwedDone>,
}

impl Answer {
    pub(crate) fn new(outcome: WaitOutcome, sent_at: Timestamp, recorded_at: RecordedAt) -> Answer {
        Answer { outcome, sent_at, recorded_at, written: Written::Nothing, paid: None }
    }
}

/// The blocked WAITs a LOCK.UNLOCK FAILURE handed the lock to (one, or none; more only for an
/// owner blocked on several connections), or those a SUCCESS told DONE whose connections the
/// unlocking connection's thread serves. Its connection writes their replies itself once the
/// UNLOCK is recorded ([`HandedTo::write_directly`], [`super::LockCore::write_dones_directly`]).
#[derive(Debug, Default)]
pub struct HandedTo {
    waits: smallvec::SmallVec<[(Arc<Mailbox>, u64); 1]>,
    /// The key, the completion's token, and each WAIT told DONE with its owner (who pays).
    pub(crate) dones: Option<DonesToWrite>,
    /// The UNLOCK's log lines (a failed release is logged at INFO), written once it is dropped:
    /// formatting one took about 5 µs of a hand-off that is otherwise 6 µs of server time.
    unlogged: Vec<LockEvent>,
}

impl HandedTo {
    /// WAIT `number` of `mailbox` was handed the lock.
    pub(crate) fn push(&mut self, (mailbox, number): (Arc<Mailbox>, u64)) {
        self.waits.push((mailbox, number));
    }

    pub(crate) fn log_later(&mut self, events: Vec<LockEvent>) {
        self.unlogged = events;
    }

    /// Writes each grant to its client where the WAIT allows it (see `Mailbox::write_directly`);
    /// how many were written whole.
    pub fn write_directly(&self) -> usize {
        self.waits.iter().filter(|(mailbox, number)| mailbox.write_directly(*number) == Written::Whole).count()
    }

    pub fn count(&self) -> usize {
        self.waits.len()
    }

    /// Whether a SUCCESS left DONEs for the caller to write.
    pub fn has_dones(&self) -> bool {
        self.dones.is_some()
    }

    /// How many DONEs a SUCCESS left for the caller to write.
    pub fn dones_to_write(&self) -> usize {
        self.dones.as_ref().map_or(0, |dones| dones.waits.len())
    }
}

/// The DONEs of one SUCCESS left for the unlocking connection to write (see [`HandedTo`]).
#[derive(Debug)]
pub(crate) struct DonesToWrite {
    pub(crate) key: Arc<[u8]>,
    /// The completion's.
    pub(crate) token: u64,
    pub(crate) waits: Vec<DoneToWrite>,
    /// The first of `waits` no writer has taken yet: threads writing the same line take them
    /// [`DONES_TAKEN_AT_ONCE`] at a time, so that they finish together however the cores are
    /// shared between them (see `LockCore::write_dones_directly`).
    pub(crate) next: AtomicUsize,
}

/// How many DONEs a writer of a line takes at once: about 0.1 ms of `send(2)`s, so that a writer
/// that ran faster finishes at most that much before the other, and taking them costs nothing.
pub(crate) const DONES_TAKEN_AT_ONCE: usize = 16;

impl DonesToWrite {
    pub(crate) fn new(key: Arc<[u8]>, token: u64, waits: Vec<DoneToWrite>) -> DonesToWrite {
        DonesToWrite { key, token, waits, next: AtomicUsize::new(0) }
    }

    /// The next DONEs no writer has taken yet, for the caller to write.
    pub(crate) fn take_some(&self) -> &[DoneToWrite] {
        let start = self.next.fetch_add(DONES_TAKEN_AT_ONCE, Ordering::Relaxed).min(self.waits.len());
        &self.waits[start..(start + DONES_TAKEN_AT_ONCE).min(self.waits.len())]
    }
}

/// A WAIT told DONE, as the mailbox and number it was posted to, and the owner whose debt its
/// write pays.
pub(crate) type DoneToWrite = (Arc<Mailbox>, u64, Arc<[u8]>);

/// The WAITs' tasks were left asleep for the direct write (`Mailbox::post_for_direct_write`):
/// whether it was tried or not, they learn of their grants and DONEs now, then the log of the
/// UNLOCK.
impl Drop for HandedTo {
    fn drop(&mut self) {
        self.waits.iter().for_each(|(mailbox, _)| mailbox.wake());
        if let Some(dones) = &self.dones {
            dones.waits.iter().for_each(|(mailbox, _, _)| mailbox.wake());
        }
        if !self.unlogged.is_empty() {
            events::emit(std::mem::take(&mut self.unlogged));
        }
    }
}

/// How much of a grant's reply was written to the waiter's socket by the connection that handed
/// the lock over. The waiter's own task writes the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Nothing,
    /// This many bytes of it: the socket took no more at once.
    Part(usize),
    Whole,
}

/// Two answers are alike whatever became of their steps' changes and however they were written.
impl PartialEq for Answer {
    fn eq(&self, other: &Answer) -> bool {
        self.outcome == other.outcome && self.sent_at == other.sent_at
    }
}

impl Eq for Answer {}

/// Where the changes of the step that sent an answer were recorded: known once the step hands
/// them to the journal, still under the shard lock, so a connection that has passed through that
/// lock after its answer came can read it. Its reply then waits for that position alone. Waiting
/// for the journal's last position instead made each of the 10,000 waiters of a fan-out wait
/// for the records every waiter answered before it had appended since (one journal write per
/// two waiters). Shared by every answer of one step; nothing (no allocation) while no changes
/// are recorded.
#[derive(Debug, Clone, Default)]
pub struct RecordedAt(Option<Arc<AtomicU64>>);

impl RecordedAt {
    pub(crate) fn pending() -> RecordedAt {
        RecordedAt(Some(Arc::default()))
    }

    /// None until the step's changes are recorded, and for good where no journal positions them
    /// (no journal, a cluster, a step that changed nothing).
    pub fn position(&self) -> Option<u64> {
        let position = self.0.as_ref()?.load(Ordering::Acquire);
        (position > 0).then_some(position)
    }

    pub(crate) fn set(&self, position: u64) {
        if let Some(cell) = &self.0 {
            cell.store(position, Ordering::Release);
        }
    }
}

/// A blocked LOCK.WAIT. The connection awaits its [`WaitTicket::letter`]; if it stops waiting
/// (timeout, disconnect) it must hand the ticket back to the core, which settles the race with a
/// grant under the shard lock. Dropped, it stops listening: what the core posts afterwards is
/// refused, and the core takes its owner for gone.
#[derive(Debug)]
pub struct WaitTicket {
    /// The owner's place in the key's line when it blocked.
    pub(crate) place: u64,
    /// The mailbox of the connection the WAIT blocks on, and the number the WAIT opened it under.
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) number: u64,
}

impl WaitTicket {
    pub(crate) fn conn(&self) -> ConnId {
        self.mailbox.conn()
    }

    /// This WAIT's blocker in the queue, as the queue tells it apart.
    pub(crate) fn wait(&self) -> (&Mailbox, u64) {
        (&self.mailbox, self.number)
    }

    /// The connection has nothing else to write while this WAIT blocks: `writer` may write its
    /// grant (see `Mailbox::write_directly`).
    pub fn allow_direct(&self, writer: Arc<dyn AnswerWriter>) {
        self.mailbox.allow_direct(self.number, writer);
    }

    /// Waits for the core's answer, or for word that none will come.
    pub async fn letter(&self) -> Letter {
        self.mailbox.letter(self.number).await
    }

    /// What the core has posted to this WAIT, if anything. Taking it ends the wait.
    pub fn take_letter(&mut self) -> Option<Letter> {
        self.mailbox.take(self.number)
    }

    /// The answer already sent to this WAIT, if any.
    pub fn try_answer(&mut self) -> Option<WaitOutcome> {
        match self.take_letter()? {
            Letter::Answer(answer) => Some(answer.outcome),
            Letter::Withdrawn => None,
        }
    }

    /// Whether an answer (a grant or a DONE) waits to be taken.
    pub fn has_answer(&self) -> bool {
        self.mailbox.has_answer(self.number)
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        self.mailbox.close(self.number);
    }
}

/// A TRY's or WAIT's answer. `paid` is the DONE owed to the owner that the answer paid, if it
/// was one: the owner is owed it no more, so a caller that fails to write the answer must give
/// it back with [`super::LockCore::done_unwritten`], or the owner would start a new round
/// instead of learning that the work is done.
#[derive(Debug)]
pub struct Answered<T> {
    pub outcome: T,
    pub paid: Option<OwedDone>,
}

impl<T> Answered<T> {
    pub(crate) fn unpaid(outcome: T) -> Answered<T> {
        Answered { outcome, paid: None }
    }
}

#[derive(Debug)]
pub enum WaitStart {
    Ready(Answered<WaitOutcome>),
    Blocked(WaitTicket),
    /// The owner has no place in the key's queue, and it is full.
    QueueFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockOutcome {
    /// SUCCESS: this many queued owners were told DONE (blocked ones at once, the others on their
    /// next TRY/WAIT).
    Succeeded {
        waiters_told: usize,
    },
    /// FAILURE: the lock went to the head of the queue.
    HandedOff,
    /// FAILURE with nobody waiting: the key is free.
    Released,
    NotLocked,
    NotHolder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendOutcome {
    Extended,
    NotLocked,
    NotHolder,
}

/// How the holder reports the end of its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `keep_ms`: how long the completion is remembered (KEEP); None remembers nothing.
    Success {
        result: Option<Arc<[u8]>>,
        keep_ms: Option<u64>,
    },
    Failure {
        reason: Option<Arc<[u8]>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockStateName {
    #[default]
    Free,
    Held,
    Done,
}

impl LockStateName {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LockStateName::Free => "free",
            LockStateName::Held => "held",
            LockStateName::Done => "done",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderInfo {
    pub owner: Arc<[u8]>,
    pub token: u64,
    pub lease_remaining_ms: u64,
}

/// A snapshot for LOCK.INFO.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyInfo {
    pub state: LockStateName,
    pub holder: Option<HolderInfo>,
    /// Owners in line, head first: at most as many as the caller asked to list.
    pub queue: Vec<Arc<[u8]>>,
    /// How many owners are in line, listed or not.
    pub waiters: usize,
    /// How many of them are blocked in LOCK.WAIT right now.
    pub blocked: usize,
    /// The remembered completion (KEEP) and how long it is kept still.
    pub completion: Option<(Arc<Completion>, u64)>,
    pub last_failure: Option<Arc<[u8]>>,
    /// How long the server grants nothing more (after an OS crash; see
    /// [`crate::core::LockCore::pause_grants_until`]); 0 normally.
    pub grants_paused_ms: u64,
}

/// What the lock table holds right now. Kept up to date as keys change (see `Shard::change`), so
/// reading it costs nothing per key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Keys with any state (held, queued, or remembering a completion).
    pub keys: u64,
    pub held_keys: u64,
    pub waiters: u64,
    pub blocked_waiters: u64,
}

impl Gauges {
    /// A key went from contributing `before` to contributing `after`.
    pub(crate) fn replace(&mut self, before: Gauges, after: Gauges) {
        self.keys = self.keys - before.keys + after.keys;
        self.held_keys = self.held_keys - before.held_keys + after.held_keys;
        self.waiters = self.waiters - before.waiters + after.waiters;
        self.blocked_waiters = self.blocked_waiters - before.blocked_waiters + after.blocked_waiters;
    }

    pub(crate) fn add(&mut self, other: Gauges) {
        self.replace(Gauges::default(), other);
    }
}

/// Counters and gauges for INFO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CoreStats {
    pub(crate) grants: u64,
    pub(crate) handoffs: u64,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) lease_expiries: u64,
    pub(crate) disconnect_releases: u64,
    pub(crate) done_answers: u64,
    pub(crate) keys: u64,
    pub(crate) held_keys: u64,
    pub(crate) waiters: u64,
    pub(crate) blocked_waiters: u64,
}
