//! Per-connection state that commands read and change: protocol version, its user and whether it
//! has authenticated, name, the locks this connection holds (so its close can release them), and
//! what it listens to (pub/sub channels and patterns, MONITOR).

use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashSet;

use crate::acl::User;
use crate::clients::ClientEntry;
use crate::codec::Protocol;
use crate::context::Shared;
use crate::core::{ConnId, KeyHash, Mailbox};
use crate::pubsub::Kind;

pub(crate) struct Session {
    pub(crate) entry: Arc<ClientEntry>,
    /// Whose permissions apply: the default user until an AUTH or HELLO AUTH succeeds.
    user: Arc<User>,
    /// As in Redis: a new connection is authenticated if the default user needs no password.
    authenticated: bool,
    /// Keys this connection tried, waited for or extended: the locks its close may have to
    /// release. Pruned of keys it is no longer bound to, and of repeats.
    bound: Vec<KeyHash>,
    prune_at: usize,
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    monitoring: bool,
    /// Where the answers of this connection's blocked WAITs are posted, one WAIT at a time.
    mailbox: Arc<Mailbox>,
}

impl Session {
    pub(crate) fn new(entry: Arc<ClientEntry>, shared: &Shared) -> Session {
        let (user, authenticated) = starting_user(shared);
        Session {
            mailbox: Arc::new(Mailbox::new(entry.id)),
            entry,
            user,
            authenticated,
            bound: Vec::new(),
            prune_at: 64,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            monitoring: false,
        }
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

    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }

    /// Remembers that a lock on the key with `hash` may be bound to this connection (it holds it,
    /// or is queued for it): a hash rather than a copy of the key, 8 bytes for each lock held.
    /// The list is pruned as it grows, so a long-lived connection that touches many keys stays
    /// bounded by what it is still bound to. A prune looks every key up in the core, which costs
    /// about what taking the lock did: when it finds most keys still bound (a connection holding
    /// many locks) the next one waits for the list to grow fourfold rather than double, which cut
    /// the prunes' share of pipelined TRYs on new keys from a fifth of the CPU.
    pub(crate) fn note_bound(&mut self, hash: KeyHash, shared: &Shared) {
        // The same key again and again (a connection taking and releasing one lock) is a repeat
        // a prune would drop; the latest is the one most often repeated.
        if self.bound.last() == Some(&hash) {
            return;
        }
        // Most connections are bound to one key at a time: room for one, not the four a vector
        // takes at its first push.
        self.bound.reserve_exact(usize::from(self.bound.is_empty()));
        self.bound.push(hash);
        if self.bound.len() >= self.prune_at {
            let conn = self.id();
            let before = self.bound.len();
            shared.core.retain_bound(conn, &mut self.bound);
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

    fn subscriptions_of(&mut self, kind: Kind) -> &mut HashSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
        }
    }

    /// How many channels and patterns this connection is subscribed to.
    pub(crate) fn subscription_count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// Whether the server may send this connection what it did not ask for: pub/sub messages,
    /// MONITOR lines.
    pub(crate) fn receives_pushes(&self) -> bool {
        self.monitoring || self.subscription_count() > 0
    }

    /// Redis's RESP2 subscribed mode: replies and messages share one stream, so only the pub/sub
    /// commands, PING, QUIT and RESET may run.
    pub(crate) fn in_subscribed_context(&self) -> bool {
        self.subscription_count() > 0 && self.protocol() == Protocol::Resp2
    }

    /// SUBSCRIBE or PSUBSCRIBE `name` (again is no change). Returns the count of subscriptions.
    pub(crate) fn subscribe(&mut self, kind: Kind, name: Bytes, shared: &Shared) -> usize {
        if !self.subscriptions_of(kind).contains(&name) {
            // Open before subscribing, so that no message in between is turned away.
            self.entry.outbox.open();
            shared.pubsub.subscribe(kind, name.clone(), &self.entry);
            self.subscriptions_of(kind).insert(name);
            self.listening_changed();
        }
        self.subscription_count()
    }

    /// UNSUBSCRIBE or PUNSUBSCRIBE `name` (if subscribed). Returns the count of subscriptions.
    pub(crate) fn unsubscribe(&mut self, kind: Kind, name: &[u8], shared: &Shared) -> usize {
        if self.subscriptions_of(kind).remove(name) {
            shared.pubsub.unsubscribe(kind, name, self.id());
            self.listening_changed();
        }
        self.subscription_count()
    }

    /// What UNSUBSCRIBE or PUNSUBSCRIBE with no arguments leaves.
    pub(crate) fn subscriptions(&self, kind: Kind) -> Vec<Bytes> {
        let names = if kind == Kind::Channel { &self.channels } else { &self.patterns };
        names.iter().cloned().collect()
    }

    /// MONITOR.
    pub(crate) fn start_monitoring(&mut self, shared: &Shared) {
        if !self.monitoring {
            self.entry.outbox.open();
            shared.monitors.add(&self.entry);
            self.monitoring = true;
            self.listening_changed();
        }
    }

    /// RESET or close: every subscription ends, and so does MONITOR.
    pub(crate) fn stop_listening(&mut self, shared: &Shared) {
        for kind in [Kind::Channel, Kind::Pattern] {
            for name in std::mem::take(self.subscriptions_of(kind)) {
                shared.pubsub.unsubscribe(kind, &name, self.id());
            }
        }
        if std::mem::take(&mut self.monitoring) {
            shared.monitors.remove(self.id());
        }
        self.listening_changed();
    }

    /// Shows what this connection listens to in CLIENT LIST, and turns away what it no longer does.
    fn listening_changed(&self) {
        if !self.receives_pushes() {
            self.entry.outbox.close();
        }
        self.entry.update(|state| {
            state.subscriptions = self.channels.len();
            state.pattern_subscriptions = self.patterns.len();
            state.monitor = self.monitoring;
        });
    }

    /// RESET: back to a fresh connection's state.
    pub(crate) fn reset(&mut self, shared: &Shared) {
        self.stop_listening(shared);
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
