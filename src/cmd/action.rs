//! What a command asks of its connection once executed. Commands never touch the socket: they
//! return one of these and the connection acts on it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::core::{Answered, HandedTo, OwedDone, Timestamp, WaitTicket};
use crate::reply::Reply;

/// A reply still to be worked out, away from any lock.
pub(crate) struct Deferred(pub(crate) Pin<Box<dyn Future<Output = Reply> + Send>>);

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Deferred")
    }
}

/// What the connection does after a command.
#[derive(Debug)]
pub(crate) enum Action {
    Reply(Reply),
    /// A DONE that paid what the owner was owed: if it is never written, the debt is given back
    /// (see [`crate::core::Answered`]).
    PaysDone {
        reply: Reply,
        key: Bytes,
        paid: OwedDone,
    },
    /// One reply after the other: SUBSCRIBE confirms each channel on its own, as in Redis.
    Replies(Vec<Reply>),
    /// A LOCK.WAIT that has to wait; None blocks until answered.
    Block {
        waiting: Waiting,
        ticket: WaitTicket,
        timeout: Option<Duration>,
    },
    /// Send the reply, then close (QUIT).
    Close(Reply),
    /// Stop the server as a shutdown signal does (SHUTDOWN). No reply: Redis sends none, and its
    /// clients take the connection closing for success (redis-py raises if a reply comes).
    Shutdown,
    /// A reply that takes a while, such as a membership change waiting for its commit; the
    /// connection sends it when it is ready, after the replies before it.
    Later(Deferred),
    /// The lock was just handed to blocked WAITs: their ACQUIRED goes out before this reply,
    /// since the hand-off is what everyone waits on. The connection writes them itself where it
    /// can (see [`crate::direct`]); otherwise a waiter's task on this event loop sits first in its
    /// queue, and is let run first.
    ReplyAfterHandoff {
        reply: Reply,
        handed_to: HandedTo,
        /// When the core handed the lock over: the hand-off latency of the grants written here.
        handed_at: Timestamp,
    },
}

/// A blocked LOCK.WAIT's key and owner, as the request carried them: slices of the connection's
/// read buffer, which the connection keeps anyway, so that blocking costs no copy of them.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub(crate) key: Bytes,
    pub(crate) owner: Bytes,
}

impl Waiting {
    /// Copies them out of the read buffer, which they would otherwise keep alive once the
    /// connection moves on to a new one.
    pub(crate) fn detach(&mut self) {
        self.key = Bytes::copy_from_slice(&self.key);
        self.owner = Bytes::copy_from_slice(&self.owner);
    }
}

impl Action {
    /// The reply to a TRY or WAIT answered at once.
    pub(crate) fn answered<T>(answered: Answered<T>, key: Bytes) -> Action
    where
        Reply: From<T>,
    {
        let reply = Reply::from(answered.outcome);
        match answered.paid {
            Some(paid) => Action::PaysDone { reply, key, paid },
            None => Action::Reply(reply),
        }
    }
}
