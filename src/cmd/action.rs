//! What a command asks of its connection once executed. Commands never touch the socket: they
//! return one of these and the connection acts on it.

use std::time::Duration;

use crate::core::WaitTicket;
use crate::reply::Reply;

/// What the connection does after a command.
#[derive(Debug)]
pub(crate) enum Action {
    Reply(Reply),
    /// One reply after the other: SUBSCRIBE confirms each channel on its own, as in Redis.
    Replies(Vec<Reply>),
    /// A LOCK.WAIT that has to wait; None blocks until answered.
    Block {
        ticket: WaitTicket,
        timeout: Option<Duration>,
    },
    /// Send the reply, then close (QUIT).
    Close(Reply),
    /// The lock was just handed to a waiter whose task sits first in this worker's queue: let it
    /// write its ACQUIRED before this reply, since the hand-off is what everyone waits on.
    ReplyAfterHandoff(Reply),
}
