//! Per-connection state that commands read and change: protocol version, its user and whether it
//! has authenticated, name, and the locks this connection holds (so its close can release them).

use std::sync::Arc;

use hashbrown::HashSet;

use crate::acl::User;
use crate::clients::ClientEntry;
use crate::codec::Protocol;
use crate::context::Shared;
use crate::core::ConnId;

pub(crate) struct Session {
    pub(crate) entry: Arc<ClientEntry>,
    /// Whose permissions apply: the default user until an AUTH or HELLO AUTH succeeds.
    user: Arc<User>,
    /// As in Redis: a new connection is authenticated if the default user needs no password.
    authenticated: bool,
    /// Keys this connection tried, waited for or extended: the locks its close may have to
    /// release. Pruned of keys it is no longer bound to.
    bound: HashSet<Arc<[u8]>>,
    prune_at: usize,
}

impl Session {
    pub(crate) fn new(entry: Arc<ClientEntry>, shared: &Shared) -> Session {
        let (user, authenticated) = starting_user(shared);
        Session { entry, user, authenticated, bound: HashSet::new(), prune_at: 64 }
    }

    pub(crate) fn user(&self) -> &Arc<User> {
        &self.user
    }

    pub(crate) fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// AUTH or HELLO AUTH succeeded: from now on `user`'s permissions apply.
    pub(crate) fn log_in(&mut self, user: Arc<User>) {
        let shown = (!user.is_default()).then(|| Arc::clone(&user.name));
        self.entry.update(|state| state.user = shown);
        self.user = user;
        self.authenticated = true;
    }

    /// The reply protocol, as HELLO last chose it.
    pub(crate) fn protocol(&self) -> Protocol {
        self.entry.protocol()
    }

    pub(crate) fn id(&self) -> ConnId {
        self.entry.id
    }

    /// Remembers that a lock on `key` may be bound to this connection (it holds it, or is queued
    /// for it). The set is pruned as it grows, so a long-lived connection that touches many keys
    /// stays bounded by what it is still bound to. A prune looks every key up in the core, which
    /// costs about what taking the lock did: when it finds most keys still bound (a connection
    /// holding many locks) the next one waits for the set to grow fourfold rather than double,
    /// which cut the prunes' share of pipelined TRYs on new keys from a fifth of the CPU.
    pub(crate) fn note_bound(&mut self, key: &Arc<[u8]>, shared: &Shared) {
        if !self.bound.insert(Arc::clone(key)) {
            return;
        }
        if self.bound.len() >= self.prune_at {
            let conn = self.id();
            let before = self.bound.len();
            self.bound.retain(|key| shared.core.bound_to_conn(key, conn));
            let growth = if self.bound.len() * 2 > before { 4 } else { 2 };
            self.prune_at = (self.bound.len() * growth).max(64);
        }
    }

    /// The connection is closing: locks it still holds fail over (with release-on-disconnect),
    /// unless the whole server is stopping, when nobody is left to hand them to. Released a slice
    /// at a time, yielding in between, so that closing a connection with a million locks costs
    /// other clients no more than one slice's wait.
    pub(crate) async fn release_all(&mut self, shared: &Shared) {
        let keys = std::mem::take(&mut self.bound);
        if shared.shutdown.is_cancelled() {
            return;
        }
        let mut release = shared.core.release_connection(self.id(), keys);
        while shared.core.release_slice(&mut release, shared.clock.now()) {
            tokio::task::yield_now().await;
        }
    }

    /// RESET: back to a fresh connection's state.
    pub(crate) fn reset(&mut self, shared: &Shared) {
        (self.user, self.authenticated) = starting_user(shared);
        self.entry.update(|state| state.user = None);
        self.entry.set_protocol(Protocol::Resp2);
        self.entry.update(|state| state.name = None);
    }
}

/// Where a new or RESET connection starts: as the default user, authenticated if that user needs
/// no password.
fn starting_user(shared: &Shared) -> (Arc<User>, bool) {
    let user = shared.acl.default_user();
    let authenticated = user.rules.read().needs_no_password();
    (user, authenticated)
}
