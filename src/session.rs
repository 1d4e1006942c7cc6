//! Per-connection state that commands read and change: protocol version, authentication, name,
//! and the locks this connection holds (so its close can release them).

use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashSet;

use crate::clients::ClientEntry;
use crate::codec::Protocol;
use crate::core::ConnId;
use crate::server::Shared;

pub struct Session {
    pub entry: Arc<ClientEntry>,
    pub protocol: Protocol,
    pub authenticated: bool,
    /// Keys this connection acquired, waited for or extended; pruned of locks it no longer holds.
    held: HashSet<Bytes>,
    prune_at: usize,
}

impl Session {
    pub fn new(entry: Arc<ClientEntry>, shared: &Shared) -> Session {
        Session {
            entry,
            protocol: Protocol::Resp2,
            authenticated: shared.config.requirepass.is_none(),
            held: HashSet::new(),
            prune_at: 64,
        }
    }

    pub fn id(&self) -> ConnId {
        self.entry.id
    }

    /// Remembers that this connection now holds `key`. The set is pruned as it grows so a
    /// long-lived connection that takes many keys stays bounded by what it still holds.
    pub fn note_held(&mut self, key: &[u8], shared: &Shared) {
        if self.held.contains(key) {
            return;
        }
        self.held.insert(Bytes::copy_from_slice(key));
        if self.held.len() >= self.prune_at {
            let conn = self.id();
            self.held.retain(|key| shared.core.held_by_conn(key, conn));
            self.prune_at = (self.held.len() * 2).max(64);
        }
    }

    /// The connection is closing: locks it still holds fail over (with release-on-disconnect).
    pub fn release_all(&mut self, shared: &Shared) {
        let now = shared.clock.now_ms();
        shared.core.release_connection(self.id(), self.held.iter().map(|key| key.as_ref()), now);
        self.held.clear();
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
