//! The leader's side of replication as the connections see it: every batch of changes the live
//! core makes gets a sequence number and is queued for the next Raft entry; a reply waits until
//! the sequence number of the last change it depends on is committed, or learns that it never
//! will be.
//!
//! Changes a node makes while it does not lead (a command that passed the leadership check just
//! before the node stepped down, a connection's release as it closes) still get a number, and
//! that number is lost at once: their replies must not go out, because nothing will replicate
//! them. When the node steps down, everything not yet known committed is lost too. It may in fact
//! commit (the new leader may have the entry), and that is safe in both directions: the client,
//! whose connection is closed rather than answered, retries on the new leader with the same
//! owner, and gets the same token or the same place back if it did commit.

use std::collections::VecDeque;
use std::ops::RangeInclusive;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::core::{ChangeEncoder, ChangeSink, Timestamp};
use crate::journal::{batch_payload, encode_record_of_parts};

/// A Raft entry takes the batches queued meanwhile up to about this size (and always at least
/// one): the log frames an entry as the journal frames a record, and a reader refuses frames
/// over `journal::MAX_PAYLOAD_BYTES`. One batch is bounded far below that (see
/// `journal::MAX_QUEUE_BYTES`).
const ENTRY_BYTES: usize = 8 << 20;

/// Lost ranges kept: each step-down adds one, and a waiter looks at them as soon as it is woken,
/// so only a node that flaps faster than its connections are scheduled could need more.
const LOST_RANGES_KEPT: usize = 64;

/// A reply's change will never be committed by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost;

pub(crate) struct Proposals {
    state: Mutex<State>,
    /// Wakes the proposer when the first batch is queued.
    queued: Notify,
    /// Wakes replies waiting for their changes when some commit or are lost.
    settled: Notify,
    wall_ms_at_zero: u64,
}

struct State {
    leading: bool,
    /// The number the next batch gets; numbers start at 1 so that 0 means "nothing".
    next_seq: u64,
    /// Batches not yet proposed, as framed journal records (the frame's LSN is the number),
    /// gathered into entries of about [`ENTRY_BYTES`] each, with the number of each one's last.
    queued: VecDeque<(Vec<u8>, u64)>,
    /// Every number up to here is either committed or in `lost`.
    settled_through: u64,
    lost: VecDeque<RangeInclusive<u64>>,
}

impl Proposals {
    pub(crate) fn new(wall_ms_at_zero: u64) -> Proposals {
        Proposals {
            state: Mutex::new(State {
                leading: false,
                next_seq: 1,
                queued: VecDeque::new(),
                settled_through: 0,
                lost: VecDeque::new(),
            }),
            queued: Notify::new(),
            settled: Notify::new(),
            wall_ms_at_zero,
        }
    }

    /// From now on batches are queued for proposal.
    pub(crate) fn lead(&self) {
        self.state.lock().leading = true;
    }

    /// Everything recorded and not known committed is lost; batches recorded from now on too.
    pub(crate) fn step_down(&self) {
        let mut state = self.state.lock();
        state.leading = false;
        state.queued.clear();
        let last = state.next_seq - 1;
        state.lose(last);
        drop(state);
        self.settled.notify_waiters();
    }

    /// The number of the last batch recorded: a reply sent now depends on it.
    pub(crate) fn position(&self) -> u64 {
        self.state.lock().next_seq - 1
    }

    /// Some(Ok) once `seq` is committed, Some(Err) if it never will be, None while unknown.
    pub(crate) fn fate(&self, seq: u64) -> Option<Result<(), Lost>> {
        self.state.lock().fate(seq)
    }

    /// Waits for the fate of `seq`.
    pub(crate) async fn settled(&self, seq: u64) -> Result<(), Lost> {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if let Some(fate) = self.fate(seq) {
                return fate;
            }
            settled.await;
        }
    }

    /// Waits for queued batches and takes the first entry's worth: framed records, and the number
    /// of the last.
    pub(crate) async fn next_proposal(&self) -> (Vec<u8>, u64) {
        loop {
            let queued = self.queued.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            {
                let mut state = self.state.lock();
                if let Some(entry) = state.queued.pop_front() {
                    return entry;
                }
            }
            queued.await;
        }
    }

    /// The batches up to `seq` are committed.
    pub(crate) fn committed(&self, seq: u64) {
        let mut state = self.state.lock();
        state.settled_through = state.settled_through.max(seq);
        drop(state);
        self.settled.notify_waiters();
    }
}

impl State {
    fn fate(&self, seq: u64) -> Option<Result<(), Lost>> {
        if self.lost.iter().any(|range| range.contains(&seq)) {
            return Some(Err(Lost));
        }
        (seq <= self.settled_through).then_some(Ok(()))
    }

    /// Every number after `settled_through` up to `last` is lost.
    fn lose(&mut self, last: u64) {
        if last <= self.settled_through {
            return;
        }
        let first = self.settled_through + 1;
        match self.lost.back_mut() {
            Some(range) if *range.end() + 1 == first => *range = *range.start()..=last,
            _ => self.lost.push_back(first..=last),
        }
        if self.lost.len() > LOST_RANGES_KEPT {
            self.lost.pop_front();
        }
        self.settled_through = last;
    }
}

impl ChangeSink for Proposals {
    fn wall_ms_at_zero(&self) -> u64 {
        self.wall_ms_at_zero
    }

    /// A connection waits for the cluster's commit index instead (see `Cluster::position`).
    fn record(&self, changes: &mut ChangeEncoder) -> Option<u64> {
        for part in changes.parts() {
            self.queue(&batch_payload(part));
        }
        None
    }
}

impl Proposals {
    /// Numbers a batch's payload and queues it for the next entry, or loses it at once while
    /// this node does not lead.
    fn queue(&self, payload: &[&[u8]]) {
        let mut state = self.state.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        if state.leading {
            let first = state.queued.is_empty();
            match state.queued.back_mut() {
                Some((entry, through)) if entry.len() < ENTRY_BYTES => {
                    encode_record_of_parts(entry, seq, payload);
                    *through = seq;
                }
                _ => {
                    let mut entry = Vec::new();
                    encode_record_of_parts(&mut entry, seq, payload);
                    state.queued.push_back((entry, seq));
                }
            }
            drop(state);
            if first {
                self.queued.notify_one();
            }
        } else {
            state.lose(seq);
            drop(state);
            self.settled.notify_waiters();
        }
    }
}

/// Milliseconds since the Unix epoch at the moment `clock` read zero.
pub(crate) fn wall_ms_at_zero(now: Timestamp) -> u64 {
    crate::journal::unix_ms().saturating_sub(now.ms())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::ChangeRef;

    fn recorded(proposals: &Proposals) -> u64 {
        proposals.record(&mut ChangeEncoder::new(0, usize::MAX));
        proposals.position()
    }

    #[test]
    fn a_batch_settles_when_committed_and_not_before() {
        let proposals = Arc::new(Proposals::new(0));
        proposals.lead();
        let first = recorded(&proposals);
        let second = recorded(&proposals);
        assert_eq!((first, second), (1, 2));
        assert_eq!(proposals.fate(first), None);
        proposals.committed(first);
        assert_eq!(proposals.fate(first), Some(Ok(())));
        assert_eq!(proposals.fate(second), None);
    }

    #[test]
    fn stepping_down_loses_what_is_not_committed_and_what_comes_after() {
        let proposals = Proposals::new(0);
        proposals.lead();
        let committed = recorded(&proposals);
        proposals.committed(committed);
        let pending = recorded(&proposals);
        proposals.step_down();
        assert_eq!(proposals.fate(committed), Some(Ok(())));
        assert_eq!(proposals.fate(pending), Some(Err(Lost)));
        let after = recorded(&proposals);
        assert_eq!(proposals.fate(after), Some(Err(Lost)), "recorded while not leading");
        // A later term commits later numbers; the lost ones stay lost.
        proposals.lead();
        let next = recorded(&proposals);
        proposals.committed(next);
        assert_eq!(proposals.fate(next), Some(Ok(())));
        assert_eq!(proposals.fate(pending), Some(Err(Lost)));
        assert_eq!(proposals.fate(after), Some(Err(Lost)));
    }

    #[test]
    fn a_late_commit_of_a_lost_batch_changes_nothing() {
        let proposals = Proposals::new(0);
        proposals.lead();
        let pending = recorded(&proposals);
        proposals.step_down();
        proposals.committed(pending);
        assert_eq!(proposals.fate(pending), Some(Err(Lost)));
    }

    #[tokio::test]
    async fn the_proposer_takes_every_queued_batch_at_once() {
        let proposals = Proposals::new(0);
        proposals.lead();
        for _ in 0..3 {
            recorded(&proposals);
        }
        let (framed, through) = proposals.next_proposal().await;
        assert_eq!(through, 3);
        assert!(!framed.is_empty());
        proposals.step_down();
        recorded(&proposals);
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(20), proposals.next_proposal()).await;
        assert!(nothing.is_err(), "nothing is proposed while not leading");
    }

    #[tokio::test]
    async fn a_backlog_is_proposed_in_entries_of_bounded_size() {
        let proposals = Proposals::new(0);
        proposals.lead();
        let owner: Arc<[u8]> = Arc::from(vec![b'o'; 1 << 20]);
        for token in 1..=20 {
            let mut changes = ChangeEncoder::new(0, usize::MAX);
            changes.push(ChangeRef::Hold { key: b"k", owner: &owner, token, lease_ms: 1 });
            proposals.record(&mut changes);
        }
        let mut through = 0;
        let mut entries = 0;
        while through < 20 {
            let (framed, last) = proposals.next_proposal().await;
            assert!(last > through, "in order");
            assert!(framed.len() <= ENTRY_BYTES + (2 << 20), "an entry of {} bytes", framed.len());
            (through, entries) = (last, entries + 1);
        }
        assert!(entries >= 2, "20 MiB in {entries} entries");
    }

    #[tokio::test]
    async fn waiters_wake_on_commit_and_on_loss() {
        let proposals = Arc::new(Proposals::new(0));
        proposals.lead();
        let committed = recorded(&proposals);
        let lost = recorded(&proposals);
        let waiting = {
            let proposals = Arc::clone(&proposals);
            tokio::spawn(async move { (proposals.settled(committed).await, proposals.settled(lost).await) })
        };
        tokio::task::yield_now().await;
        proposals.committed(committed);
        proposals.step_down();
        assert_eq!(waiting.await.unwrap(), (Ok(()), Err(Lost)));
    }
}
