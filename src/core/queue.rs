//! The FIFO line of one key: owners waiting for the lock, blocked in LOCK.WAIT or holding a leased
//! place.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use hashbrown::HashSet;
use tokio::sync::oneshot;

use super::ConnId;
use super::clock::Timestamp;
use super::outcome::WaitOutcome;

/// One blocked LOCK.WAIT call.
#[derive(Debug)]
pub(crate) struct Blocker {
    pub(crate) wait_id: u64,
    pub(crate) conn: ConnId,
    pub(crate) sender: oneshot::Sender<WaitOutcome>,
    /// Set when a grant is sent, so the connection can measure hand-off latency.
    pub(crate) granted_at: Arc<OnceLock<Timestamp>>,
}

#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) owner: Arc<[u8]>,
    /// The lease the owner asked for, used when it is granted.
    pub(crate) lease_ms: u64,
    /// When an owner with no blocked WAIT loses its place. Ignored while it is blocked.
    pub(crate) expires_at: u64,
    /// Blocked LOCK.WAIT calls of this owner (normally zero or one), oldest first.
    pub(crate) blockers: Vec<Blocker>,
    /// The connection of the owner's last TRY or WAIT: the one a grant binds to when the owner is
    /// not blocked at hand-off time.
    pub(crate) conn: ConnId,
}

impl Waiter {
    pub(crate) fn is_blocked(&self) -> bool {
        !self.blockers.is_empty()
    }

    /// Whether the owner is still in line at `now`: blocked, or its place's lease not yet over.
    fn is_live(&self, now: u64) -> bool {
        self.is_blocked() || self.expires_at > now
    }

    /// The place's lease restarts (every TRY, and a WAIT that ends without an answer).
    pub(crate) fn lease_place(&mut self, now: u64) {
        self.expires_at = now.saturating_add(self.lease_ms);
    }
}

/// Joining, leaving at the head and checking whether an owner is in line are O(1), so that
/// building a line of thousands of waiters stays linear.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    waiters: VecDeque<Waiter>,
    owners: HashSet<Arc<[u8]>>,
    /// No place of a waiter that is not blocked runs out before this (None: none can). A lower
    /// bound: expiries are only scanned for once it has passed.
    places_expire_at: Option<u64>,
}

impl Queue {
    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.waiters.iter()
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> &mut Waiter {
        &mut self.waiters[index]
    }

    pub(crate) fn position(&self, owner: &[u8]) -> Option<usize> {
        if !self.owners.contains(owner) {
            return None;
        }
        self.waiters.iter().position(|waiter| *waiter.owner == *owner)
    }

    pub(crate) fn push_back(&mut self, waiter: Waiter) -> usize {
        self.owners.insert(Arc::clone(&waiter.owner));
        self.waiters.push_back(waiter);
        self.waiters.len() - 1
    }

    pub(crate) fn pop_front(&mut self) -> Option<Waiter> {
        let waiter = self.waiters.pop_front()?;
        self.owners.remove(&waiter.owner);
        Some(waiter)
    }

    pub(crate) fn remove(&mut self, index: usize) -> Option<Waiter> {
        let waiter = self.waiters.remove(index)?;
        self.owners.remove(&waiter.owner);
        Some(waiter)
    }

    pub(crate) fn take_all(&mut self) -> VecDeque<Waiter> {
        self.owners.clear();
        self.places_expire_at = None;
        std::mem::take(&mut self.waiters)
    }

    /// The next moment a place may run out.
    pub(crate) fn places_expire_at(&self) -> Option<u64> {
        self.places_expire_at
    }

    /// A waiter that is not blocked holds its place until `expires_at`.
    pub(crate) fn place_leased_until(&mut self, expires_at: u64) {
        self.places_expire_at = Some(self.places_expire_at.map_or(expires_at, |at| at.min(expires_at)));
    }

    /// Drops the waiters whose place has run out.
    pub(crate) fn drop_expired(&mut self, now: u64) {
        if self.places_expire_at.is_none_or(|at| at > now) {
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
        self.places_expire_at =
            self.waiters.iter().filter(|waiter| !waiter.is_blocked()).map(|waiter| waiter.expires_at).min();
    }

    /// `conn` closed: the places it last refreshed go, so that an owner who has left is never
    /// granted the lock. An owner still blocked on another connection stays, and a grant made
    /// once it is no longer blocked binds to the connection of its newest WAIT.
    pub(crate) fn drop_places_of(&mut self, conn: ConnId) {
        let owners = &mut self.owners;
        self.waiters.retain_mut(|waiter| {
            if waiter.conn != conn {
                return true;
            }
            if !waiter.is_blocked() {
                owners.remove(&waiter.owner);
                return false;
            }
            if let Some(newest) = waiter.blockers.iter().rev().find(|blocker| blocker.conn != conn) {
                waiter.conn = newest.conn;
            }
            true
        });
    }
}
