//! A grant (or a DONE) written to the waiter's socket by the connection that handed the lock
//! over (or told the DONE).
//!
//! Each connection is served by one event loop. When a LOCK.UNLOCK FAILURE hands the lock to a
//! WAIT blocked on another loop, that loop's thread usually sleeps in `epoll_wait`: woken through
//! an eventfd, on two cores shared with busy clients it often waits behind the unlocking loop and
//! the clients for a core before it can write the ACQUIRED. W3 with one loop, where no hand-off
//! crosses loops, had a p50 of 45 µs against 75 µs with two, and a p99 of 141 µs against 855 µs
//! (docs/benchmarks-history.md, *The hand-off's critical path, traced*). So the unlocking connection
//! writes the grant itself, on the waiter's socket, once the hand-off's record is written: a
//! plain TCP socket takes a non-blocking `send(2)` from any thread.
//!
//! A SUCCESS's DONEs are written the same way, but only to the waiters the unlocking connection's
//! event loop serves: that loop would otherwise poll each waiter's task in turn, which pays and
//! writes its DONE, so the last of 10,000 waiters heard it after all of that for the others
//! (see `LockCore::write_dones_directly`). The DONEs of waiters on other loops are written by
//! their own loops meanwhile, side by side, as before. With a CPU core no loop uses and a long
//! line, a thread there writes the unlocking loop's DONEs with it (`Connection::write_dones`).
//!
//! Only while the waiter's connection has nothing else to write: it has written out every reply
//! before its WAIT, it is not subscribed or monitoring (no pushes while it waits), and it is not
//! a cluster node's (its replies wait for commits). The waiter's task is left asleep meanwhile
//! (woken, it would race this write for the answer, and its loop's wake-up would compete for a
//! core with the client reading the grant); woken once the write was tried, it takes the answer
//! from its mailbox and does the rest (INFO's hand-off latency, the lock's binding to the
//! connection, the requests pipelined behind the WAIT), writing whatever part of the reply the
//! socket did not take at once.
//!
//! The socket takes part of a 40-byte reply only when the client has left a send buffer's worth
//! of replies unread. If that connection then ends with an error of its own (a protocol error,
//! the server stopping), the error follows the partial grant on the wire; the connection closes
//! right after, so the client loses nothing it could have parsed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::thread::ThreadId;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::clients::ClientEntry;
use crate::codec::render;
use crate::core::{AnswerWriter, WaitOutcome, Written};
use crate::fanout;
use crate::reply::Reply;

/// A plain TCP connection whose writing side other tasks can reach: the connection reads and
/// writes it as any stream, and lends [`SharedTcp::direct_writer`] to its blocked WAITs.
pub(crate) struct SharedTcp {
    read: OwnedReadHalf,
    write: Arc<OwnedWriteHalf>,
}

impl SharedTcp {
    pub(crate) fn new(stream: TcpStream) -> SharedTcp {
        let (read, write) = stream.into_split();
        SharedTcp { read, write: Arc::new(write) }
    }

    /// What writes this connection's grants and DONEs from other tasks, rendered in `entry`'s
    /// protocol.
    pub(crate) fn direct_writer(&self, entry: &Arc<ClientEntry>) -> Arc<DirectWriter> {
        Arc::new(DirectWriter {
            socket: Arc::clone(&self.write),
            entry: Arc::clone(entry),
            served_by: std::thread::current().id(),
        })
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

/// Writes through the shared half: readiness as tokio's own stream tracks it, and `send(2)`.
impl AsyncWrite for SharedTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let socket: &TcpStream = self.write.as_ref().as_ref();
        loop {
            ready!(socket.poll_write_ready(cx))?;
            match socket.try_write(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The write side is shut down when the last holder of the half drops it, as tokio's does.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Writes a grant or a DONE to a blocked WAIT's client from another connection's task (see the
/// module).
#[derive(Debug)]
pub(crate) struct DirectWriter {
    socket: Arc<OwnedWriteHalf>,
    /// Whose protocol the reply is rendered in (a WAIT blocks its connection, so no HELLO can
    /// change it meanwhile).
    entry: Arc<ClientEntry>,
    /// The event loop's thread the connection was made on, which serves it from accept to close.
    served_by: ThreadId,
}

impl AnswerWriter for DirectWriter {
    fn write_now(&self, outcome: &WaitOutcome) -> Written {
        let protocol = self.entry.protocol();
        let reply = match outcome {
            // Rendered once for every waiter this thread tells, as the waiters' tasks do.
            WaitOutcome::Done(completion) => match fanout::done(Arc::clone(completion), protocol) {
                Reply::Rendered(bytes) => Ok(bytes),
                reply => render(&reply, protocol),
            },
            WaitOutcome::Acquired { .. } => render(&Reply::from(outcome.clone()), protocol),
        };
        let Ok(reply) = reply else {
            return Written::Nothing;
        };
        let socket: &TcpStream = self.socket.as_ref().as_ref();
        match socket.try_write(&reply) {
            Ok(written) if written == reply.len() => Written::Whole,
            Ok(0) | Err(_) => Written::Nothing,
            Ok(written) => Written::Part(written),
        }
    }

    fn serves_calling_thread(&self) -> bool {
        std::thread::current().id() == self.served_by
    }
}
