//! Per-connection state that commands read and change: protocol version, authentication, name,
//! and the locks this connection holds (so its close can release them).

use std::sync::Arc;

use hashbrown::HashSet;

use crate::clients::ClientEntry;
use crate::codec::Protocol;
use crate::core::ConnId;
use crate::server::Shared;

pub struct Session {
    pub entry: Arc<ClientEntry>,
    pub protocol: Protocol,
    pub authenticated: bool,
    /// Keys this connection tried, waited for or extended: the locks its close may have to
    /// release. Pruned of keys it is no longer bound to.
    bound: HashSet<Arc<[u8]>>,
    prune_at: usize,
}

impl Session {
    pub fn new(entry: Arc<ClientEntry>, shared: &Shared) -> Session {
        Session {
            entry,
            protocol: Protocol::Resp2,
            authenticated: shared.config.requirepass.is_none(),
            bound: HashSet::new(),
            prune_at: 64,
        }
    }

    pub fn id(&self) -> ConnId {
        self.entry.id
    }

    /// Remembers that a lock on `key` may be bound to this connection (it holds it, or is queued
    /// for it). The set is pruned as it grows, so a long-lived connection that touches many keys
    /// stays bounded by what it is still bound to.
    pub fn note_bound(&mut self, key: &Arc<[u8]>, shared: &Shared) {
        if !self.bound.insert(Arc::clone(key)) {
            return;
        }
        if self.bound.len() >= self.prune_at {
            let conn = self.id();
            self.bound.retain(|key| shared.core.bound_to_conn(key, conn));
            self.prune_at = (self.bound.len() * 2).max(64);
        }
    }

    /// The connection is closing: locks it still holds fail over (with release-on-disconnect),
    /// unless the whole server is stopping, when nobody is left to hand them to.
    pub fn release_all(&mut self, shared: &Shared) {
        if !shared.shutdown.is_cancelled() {
            let now = shared.clock.now();
            shared.core.release_connection(self.id(), self.bound.iter().map(|key| key.as_ref()), now);
        }
        self.bound.clear();
    }

    /// RESET: back to a fresh connection's state.
    pub fn reset(&mut self, shared: &Shared) {
        self.protocol = Protocol::Resp2;
        self.authenticated = shared.config.requirepass.is_none();
        self.entry.update(|state| {
            state.name = None;
            state.resp = 2;
        });
    }
}
