//! W5's FIFO check: answered waits placed in their key's history, compared with the queue order
//! LOCK.INFO showed, and with the order the clients sent in.

use std::collections::{HashMap, HashSet};

use crate::report::note;

/// How a LOCK.WAIT ended, for the FIFO check: granted with a token, or told DONE by the holder
/// with this owner id (resolved to that holder's token afterwards).
#[derive(Clone, Copy)]
pub enum Answer {
    Granted(u64),
    DoneBy(u64),
}

#[derive(Clone, Copy)]
pub struct WaitRecord {
    pub key: u32,
    pub owner: u64,
    pub sent_start: u64,
    pub sent_end: u64,
    pub answer: Answer,
}

pub struct QueueSnapshot {
    pub key: u32,
    /// now_ns() when the reply arrived: the state it shows existed before then.
    pub at: u64,
    pub queue: Vec<u64>,
}

/// Where each answered wait falls in its key's history: a grant at its token, a DONE just after
/// the grant of the holder that succeeded. Within a key these order every answer.
#[derive(Clone, Copy)]
pub struct Epoched {
    pub key: u32,
    pub owner: u64,
    pub sent_start: u64,
    pub sent_end: u64,
    pub epoch: (u64, u8),
}

pub fn resolve_epochs(records: &[WaitRecord], grants: &HashMap<u64, u64>) -> Vec<Epoched> {
    records
        .iter()
        .filter_map(|record| {
            let epoch = match record.answer {
                Answer::Granted(token) => (token, 0),
                Answer::DoneBy(owner) => (*grants.get(&owner)?, 1),
            };
            Some(Epoched {
                key: record.key,
                owner: record.owner,
                sent_start: record.sent_start,
                sent_end: record.sent_end,
                epoch,
            })
        })
        .collect()
}

fn by_key(epochs: &[Epoched]) -> HashMap<u32, Vec<Epoched>> {
    let mut by_key: HashMap<u32, Vec<Epoched>> = HashMap::new();
    for epoched in epochs {
        by_key.entry(epoched.key).or_default().push(*epoched);
    }
    by_key
}

/// The exact FIFO check. A LOCK.INFO snapshot shows the queue in the server's order; the owners
/// in it must be answered in that order (grants in queue order, or DONE together), and no wait
/// sent after the snapshot arrived may be answered before any of them. Returns (distinct waits
/// answered out of order, snapshots checked).
pub fn fifo_against_snapshots(epochs: &[Epoched], snapshots: &[QueueSnapshot]) -> (usize, usize) {
    let mut keys = by_key(epochs);
    let mut suffix_min: HashMap<u32, Vec<(u64, u8)>> = HashMap::new();
    for (key, waits) in keys.iter_mut() {
        waits.sort_unstable_by_key(|wait| wait.sent_start);
        let mut mins = vec![(u64::MAX, u8::MAX); waits.len() + 1];
        for index in (0..waits.len()).rev() {
            mins[index] = mins[index + 1].min(waits[index].epoch);
        }
        suffix_min.insert(*key, mins);
    }
    let owner_epoch: HashMap<u64, (u64, u8)> = epochs.iter().map(|wait| (wait.owner, wait.epoch)).collect();
    let mut out_of_order = HashSet::new();
    let mut checked = 0;
    for snapshot in snapshots {
        let (Some(waits), Some(mins)) = (keys.get(&snapshot.key), suffix_min.get(&snapshot.key)) else {
            continue;
        };
        checked += 1;
        let mut latest: Option<(u64, u8)> = None;
        for owner in &snapshot.queue {
            let Some(epoch) = owner_epoch.get(owner) else {
                continue;
            };
            if latest.is_some_and(|latest| *epoch < latest) {
                out_of_order.insert(*owner);
            }
            latest = latest.max(Some(*epoch));
        }
        let Some(latest) = latest else {
            continue;
        };
        let first_new = waits.partition_point(|wait| wait.sent_start <= snapshot.at);
        if mins[first_new] < latest {
            for wait in &waits[first_new..] {
                if wait.epoch < latest {
                    out_of_order.insert(wait.owner);
                }
            }
        }
    }
    (out_of_order.len(), checked)
}

/// The client-side view: if A's WAIT was fully sent before B's started (by more than a gap), was A
/// answered later than B? Not a FIFO test by itself: on a busy machine the server may read B's
/// socket before A's. Returns (inversions with any gap, with sends ≥ 1 ms apart).
pub fn send_order_inversions(epochs: &[Epoched]) -> (u64, u64) {
    let keys = by_key(epochs);
    let count = |gap: u64| {
        let mut inversions = 0;
        for waits in keys.values() {
            let mut by_start = waits.clone();
            by_start.sort_unstable_by_key(|wait| wait.sent_start);
            let mut by_end = waits.clone();
            by_end.sort_unstable_by_key(|wait| wait.sent_end);
            let mut next = 0;
            let mut latest: Option<(u64, u8)> = None;
            for wait in &by_start {
                while next < by_end.len() && by_end[next].sent_end + gap < wait.sent_start {
                    latest = latest.max(Some(by_end[next].epoch));
                    next += 1;
                }
                if latest.is_some_and(|latest| wait.epoch < latest) {
                    inversions += 1;
                }
            }
        }
        inversions
    };
    if std::env::var_os("BATON_BENCH_DEBUG").is_some() {
        for ms in [2u64, 4, 8, 16, 32] {
            note(format!("send-order inversions with sends >= {ms} ms apart: {}", count(ms * 1_000_000)));
        }
    }
    (count(0), count(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(owner: u64, sent: u64, epoch: (u64, u8)) -> Epoched {
        Epoched { key: 0, owner, sent_start: sent, sent_end: sent + 1, epoch }
    }

    #[test]
    fn snapshot_check_flags_only_real_violations() {
        // Queue [1, 2] seen at t=10; owner 3 sent at t=20.
        let snapshot = QueueSnapshot { key: 0, at: 10, queue: vec![1, 2] };
        let fifo = [wait(1, 1, (100, 0)), wait(2, 2, (101, 0)), wait(3, 20, (102, 0))];
        assert_eq!(fifo_against_snapshots(&fifo, std::slice::from_ref(&snapshot)), (0, 1));
        // DONE together is in order.
        let done = [wait(1, 1, (99, 1)), wait(2, 2, (99, 1)), wait(3, 20, (99, 1))];
        assert_eq!(fifo_against_snapshots(&done, std::slice::from_ref(&snapshot)).0, 0);
        // 2 granted before 1.
        let swapped = [wait(1, 1, (101, 0)), wait(2, 2, (100, 0)), wait(3, 20, (102, 0))];
        assert_eq!(fifo_against_snapshots(&swapped, std::slice::from_ref(&snapshot)).0, 1);
        // The newcomer 3 granted before 2.
        let jumped = [wait(1, 1, (100, 0)), wait(2, 2, (102, 0)), wait(3, 20, (101, 0))];
        assert_eq!(fifo_against_snapshots(&jumped, std::slice::from_ref(&snapshot)).0, 1);
    }

    #[test]
    fn send_order_inversions_need_the_gap() {
        let waits = [wait(1, 0, (101, 0)), wait(2, 500_000, (100, 0)), wait(3, 5_000_000, (99, 1))];
        let (any, spaced) = send_order_inversions(&waits);
        assert_eq!((any, spaced), (2, 1));
    }
}
