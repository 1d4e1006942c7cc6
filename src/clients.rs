//! The table of connected clients behind CLIENT LIST / CLIENT INFO and the INFO clients section.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::codec::Protocol;
use crate::core::ConnId;
use crate::outbox::Outbox;
use crate::text::Escaped;

#[derive(Debug)]
pub(crate) struct ClientEntry {
    pub id: ConnId,
    pub addr: SocketAddr,
    pub local_addr: SocketAddr,
    pub created: Instant,
    state: Mutex<ClientState>,
    /// The one record of the connection's reply protocol: its task encodes with it, CLIENT LIST
    /// shows it. Atomic because the task reads it for every reply.
    resp3: AtomicBool,
    control: Mutex<Option<Control>>,
    /// The connection's task, the one waiter for its orders, registered while it waits: a
    /// waker swapped in with one atomic operation, where a `Notify` would lock its list of
    /// waiters to enqueue and again to leave, around every request the connection waits for.
    control_sent: AtomicWaker,
    /// Pub/sub messages and MONITOR lines for this connection.
    pub(crate) outbox: Outbox,
}

/// Orders from other clients (CLIENT KILL / CLIENT UNBLOCK) to a connection task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Kill,
    /// The server is stopping: answer a blocked LOCK.WAIT with an error and close.
    Shutdown,
    /// End a blocked LOCK.WAIT as if it timed out (`false`) or with an UNBLOCKED error (`true`).
    Unblock {
        error: bool,
    },
}

/// What a connection updates about itself as it runs.
#[derive(Debug, Clone)]
pub(crate) struct ClientState {
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub last_command: Option<CommandName>,
    pub last_active: Instant,
    /// The key of the LOCK.WAIT it is blocked in.
    /// Shares the blocked WAIT's copy of the key rather than making another.
    pub blocked_on: Option<Bytes>,
    /// The user it authenticated as; None for the default user.
    pub user: Option<Arc<str>>,
    /// Channels and patterns it is subscribed to.
    pub subscriptions: usize,
    pub pattern_subscriptions: usize,
    pub monitor: bool,
}

impl ClientState {
    /// CLIENT LIST's `TYPE pubsub`.
    pub(crate) fn is_pubsub(&self) -> bool {
        self.subscriptions + self.pattern_subscriptions > 0
    }

    /// CLIENT LIST's flags, in Redis's order: `O` monitor, `P` pub/sub, `b` blocked, else `N`.
    fn flags(&self) -> String {
        let mut flags = String::new();
        for (set, flag) in [(self.monitor, 'O'), (self.is_pubsub(), 'P'), (self.blocked_on.is_some(), 'b')] {
            if set {
                flags.push(flag);
            }
        }
        if flags.is_empty() {
            flags.push('N');
        }
        flags
    }
}

/// A command's Redis full name as CLIENT LIST's `cmd=` and errors show it: `ping`, `client|list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommandName {
    pub(crate) container: &'static str,
    pub(crate) name: &'static str,
}

impl std::fmt::Display for CommandName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.container.is_empty() { f.write_str(self.name) } else { write!(f, "{}|{}", self.container, self.name) }
    }
}

impl ClientEntry {
    /// A kill wins over a shutdown, and both over a pending unblock.
    pub(crate) fn send_control(&self, control: Control) {
        let rank = |control: &Control| match control {
            Control::Kill => 2,
            Control::Shutdown => 1,
            Control::Unblock { .. } => 0,
        };
        let mut pending = self.control.lock();
        if pending.as_ref().is_none_or(|current| rank(&control) >= rank(current)) {
            *pending = Some(control);
        }
        drop(pending);
        self.control_sent.wake();
    }

    /// Waits for an order from another client. Only the connection's own task may wait.
    pub(crate) fn next_control(&self) -> impl Future<Output = Control> + '_ {
        std::future::poll_fn(|cx| {
            // Registered before looking, so an order sent in between still wakes the task.
            self.control_sent.register(cx.waker());
            self.control.lock().take().map_or(Poll::Pending, Poll::Ready)
        })
    }

    /// Forgets an unblock aimed at a wait that has already ended, keeping a kill.
    pub(crate) fn clear_unblock(&self) {
        let mut pending = self.control.lock();
        if matches!(*pending, Some(Control::Unblock { .. })) {
            *pending = None;
        }
    }

    pub(crate) fn protocol(&self) -> Protocol {
        if self.resp3.load(Ordering::Relaxed) { Protocol::Resp3 } else { Protocol::Resp2 }
    }

    pub(crate) fn set_protocol(&self, protocol: Protocol) {
        self.resp3.store(protocol == Protocol::Resp3, Ordering::Relaxed);
    }

    pub(crate) fn is_blocked(&self) -> bool {
        self.state.lock().blocked_on.is_some()
    }

    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut ClientState) -> R) -> R {
        change(&mut self.state.lock())
    }

    pub(crate) fn snapshot(&self) -> ClientState {
        self.state.lock().clone()
    }

    /// One line in Redis's CLIENT LIST format (fields clients and tools parse), plus `lock=` with the
    /// key a blocked LOCK.WAIT waits on, escaped: keys are binary and may hold spaces or newlines.
    pub(crate) fn info_line(&self, now: Instant) -> String {
        let state = self.snapshot();
        let text =
            |value: &Option<Bytes>| value.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
        let mut line = String::with_capacity(256);
        let _ = write!(
            line,
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db=0 sub={} psub={} ssub=0 multi=-1 \
             qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} \
             user={} redir=-1 resp={} lib-name={} lib-ver={} lock={}",
            self.id,
            self.addr,
            self.local_addr,
            text(&state.name),
            now.saturating_duration_since(self.created).as_secs(),
            now.saturating_duration_since(state.last_active).as_secs(),
            state.flags(),
            state.subscriptions,
            state.pattern_subscriptions,
            state.last_command.map_or_else(|| "NULL".to_owned(), |name| name.to_string()),
            state.user.as_deref().unwrap_or("default"),
            self.protocol().version(),
            text(&state.lib_name),
            text(&state.lib_ver),
            Escaped::field(state.blocked_on.as_deref().unwrap_or_default()),
        );
        line
    }
}

#[derive(Debug, Default)]
pub(crate) struct ClientRegistry {
    last_id: AtomicU64,
    clients: Mutex<HashMap<ConnId, Arc<ClientEntry>>>,
    recent: RecentClock,
}

/// The time as the server's cron last read it, for a client's last activity: CLIENT LIST shows
/// its idle time in whole seconds, and reading the system clock for it on every command cost 1%
/// of the server's CPU under load. Redis caches its clock for the same use.
#[derive(Debug)]
struct RecentClock {
    base: Instant,
    elapsed_ms: AtomicU64,
}

impl Default for RecentClock {
    fn default() -> RecentClock {
        RecentClock { base: Instant::now(), elapsed_ms: AtomicU64::new(0) }
    }
}

impl ClientRegistry {
    /// Called by the cron, ten times a second.
    pub(crate) fn tick_clock(&self) {
        let elapsed_ms = u64::try_from(self.recent.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.recent.elapsed_ms.store(elapsed_ms, Ordering::Relaxed);
    }

    /// The time at the last tick: at most a tick behind.
    pub(crate) fn recent_instant(&self) -> Instant {
        self.recent.base + Duration::from_millis(self.recent.elapsed_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn register(&self, addr: SocketAddr, local_addr: SocketAddr) -> Arc<ClientEntry> {
        let id = self.last_id.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let id = ConnId::new(id).unwrap_or(ConnId::MAX);
        let now = Instant::now();
        let entry = Arc::new(ClientEntry {
            id,
            addr,
            local_addr,
            created: now,
            state: Mutex::new(ClientState {
                name: None,
                lib_name: None,
                lib_ver: None,
                last_command: None,
                last_active: now,
                blocked_on: None,
                user: None,
                subscriptions: 0,
                pattern_subscriptions: 0,
                monitor: false,
            }),
            resp3: AtomicBool::new(false),
            control: Mutex::new(None),
            control_sent: AtomicWaker::new(),
            outbox: Outbox::default(),
        });
        self.clients.lock().insert(id, Arc::clone(&entry));
        entry
    }

    pub(crate) fn unregister(&self, id: ConnId) {
        self.clients.lock().remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        self.clients.lock().len()
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        let id = ConnId::new(id)?;
        self.clients.lock().get(&id).cloned()
    }

    /// Every client, oldest first.
    pub(crate) fn all(&self) -> Vec<Arc<ClientEntry>> {
        let mut clients: Vec<_> = self.clients.lock().values().cloned().collect();
        clients.sort_by_key(|entry| entry.id);
        clients
    }
}
