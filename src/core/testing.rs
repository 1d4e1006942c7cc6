//! Helpers for tests that drive the core directly: the crate's unit tests and `tests/model.rs`
//! (which sees only the public API). Not part of the server's interface.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Wake, Waker};

use super::{ConnId, LockCore, LockRequest, Mailbox, Timestamp, TryOutcome, WaitOutcome, WaitStart, WaitTicket};

/// The moment `ms` milliseconds after the clock started.
pub fn at(ms: u64) -> Timestamp {
    Timestamp::from_ms(ms)
}

pub fn conn(id: u64) -> ConnId {
    ConnId::new(id).expect("connection ids start at 1")
}

pub fn request<'a>(key: &'a str, owner: &'a str, conn_id: u64, lease_ms: Option<u64>) -> LockRequest<'a> {
    LockRequest { key: key.as_bytes(), owner: owner.as_bytes(), lease_ms, conn: conn(conn_id) }
}

/// LOCK.WAIT with a mailbox of its own: a test may keep several WAITs of one connection blocked,
/// where a server's connection blocks in one at a time.
pub fn wait(core: &LockCore, request: LockRequest<'_>, now: Timestamp) -> WaitStart {
    core.wait(request, &Arc::new(Mailbox::new(request.conn)), now)
}

/// The token of an ACQUIRED; panics on any other answer.
pub fn acquired(outcome: TryOutcome) -> u64 {
    match outcome {
        TryOutcome::Acquired { token } => token,
        other => panic!("expected ACQUIRED, got {other:?}"),
    }
}

/// The ticket of a WAIT that blocked; panics if it was answered at once.
pub fn blocked(start: WaitStart) -> WaitTicket {
    match start {
        WaitStart::Blocked(ticket) => ticket,
        WaitStart::Ready(answered) => panic!("expected to block, got {:?}", answered.outcome),
        WaitStart::QueueFull => panic!("expected to block, the queue was full"),
    }
}

/// The token of the grant waiting in a blocked WAIT's mailbox, if that is what it holds.
pub fn granted(ticket: &mut WaitTicket) -> Option<u64> {
    match ticket.try_answer() {
        Some(WaitOutcome::Acquired { token }) => Some(token),
        _ => None,
    }
}

/// Releases everything `conn` may be bound to among `keys`, slice after slice without pausing
/// (the server yields between slices; a test has nobody to yield to).
pub fn release_connection<'k>(core: &LockCore, conn: ConnId, keys: impl IntoIterator<Item = &'k [u8]>, now: Timestamp) {
    let mut release = core.release_connection(conn, keys.into_iter().map(|key| core.key_hash(key)));
    while core.release_slice(&mut release, now) {}
}

/// A waker that counts its wakes.
pub fn counting_waker() -> (Arc<AtomicUsize>, Waker) {
    struct Count(Arc<AtomicUsize>);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let wakes = Arc::new(AtomicUsize::new(0));
    (Arc::clone(&wakes), Waker::from(Arc::new(Count(wakes))))
}
