//! One task per client: read requests, execute them in order, write replies in batches.
//!
//! Replies to pipelined requests are written in one go when no further complete request is
//! buffered. A blocked LOCK.WAIT stops execution of the requests behind it (Redis semantics), but
//! the socket keeps being read so that a close is noticed at once and the waiter leaves the queue.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;
use tracing::{debug, info, warn};

use crate::clients::{ClientEntry, Control};
use crate::cmd::lock::LockLimits;
use crate::cmd::table::CommandSpec;
use crate::cmd::{self, Action, Command, Deferred, Waiting};
use crate::codec::{CodecError, Limits, Protocol, Request, RespCodec, render};
use crate::context::Shared;
use crate::core::{
    Answer, AnswerWriter, HandedTo, Letter, OwedDone, RecordedAt, Timestamp, WaitOutcome, WaitTicket, Written,
};
use crate::direct::DirectWriter;
use crate::errors;
use crate::fanout;
use crate::journal::{self, Gather, Lsn};
use crate::outbox::Outbox;
use crate::reply::Reply;
use crate::run_queue::yield_to_queued;
use crate::session::Session;
use crate::text::Escaped;
use crate::write_progress::{Counted, WriteWatch};

type Input = Option<Result<Request, CodecError>>;

/// Room kept for requests read behind a blocked LOCK.WAIT once they have all run.
const KEPT_DEFERRED: usize = 16;

/// Replies buffered before they are written even though more pipelined requests wait.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// What a connection's read and write buffers start with (tokio-util's default is 8 KiB each):
/// most requests and replies are a few dozen bytes, so an idle connection, or one blocked in
/// LOCK.WAIT, keeps only this much (5.7 KB of memory a connection instead of 12.0 KB).
const INITIAL_BUFFER_BYTES: usize = 1024;
/// The read buffer of a connection seen pipelining: a buffer grows by itself only when one
/// frame does not fit, so a client pipelining more than the initial size would otherwise be read
/// that much at a time (two reads for redis-benchmark's -P 16 batches instead of one).
const PIPELINED_READ_BYTES: usize = 16 * 1024;

/// From how many DONEs to write a SUCCESS's connection shares them with a thread on the spare core
/// (see [`Connection::write_dones`]): 256 take a few milliseconds to write, starting a thread
/// tens of microseconds.
const SHARED_FANOUT_MIN: usize = 256;

struct Connection<'a, S> {
    framed: Framed<Counted<S>, RespCodec>,
    session: Session,
    /// Borrowed from [`serve`]'s own handle: a command's copy of it is then a plain reference,
    /// where cloning the `Arc` (and dropping it) wrote a cache line both event loops share.
    shared: &'a Shared,
    /// Requests read while a LOCK.WAIT blocked, to run once it is answered, with their sizes.
    deferred: VecDeque<(Input, usize)>,
    deferred_bytes: usize,
    write_watch: WriteWatch,
    lock_limits: LockLimits,
    /// The journal position the buffered replies depend on: none goes out before it is written.
    unreleased: Lsn,
    /// Whether the read buffer has grown to [`PIPELINED_READ_BYTES`].
    pipelines: bool,
    /// DONEs whose replies, still in the write buffer, paid what their owners were owed.
    unwritten_dones: Vec<UnwrittenDone>,
    /// Lent to this connection's blocked WAITs, for whoever grants them the lock (or tells them
    /// DONE) to write that reply (plain TCP only; see [`crate::direct`]).
    direct_writer: Option<Arc<DirectWriter>>,
}

/// A DONE that paid what its owner was owed, with the count of bytes written to the client by
/// the time its reply is out: a connection that ends before that gives the debt back, and one
/// whose reply went out (if not all that followed) does not, or the owner could be told twice.
struct UnwrittenDone {
    key: Bytes,
    paid: OwedDone,
    written_when_out: u64,
}

/// Why the connection loop ended.
enum Exit {
    ClientClosed,
    Quit,
    Killed,
    Shutdown,
    /// The client stopped reading its replies.
    OutputStalled,
    /// What was queued for a subscriber or monitor passed `--pubsub-output-buffer-limit`.
    OutputBufferLimit,
    ProtocolError(String),
    Io(std::io::Error),
    /// Replies were waiting for changes this cluster node will never commit: it stopped leading.
    /// They are not sent; the client retries on the new leader.
    Deposed,
}

impl From<CodecError> for Exit {
    fn from(error: CodecError) -> Exit {
        match error {
            CodecError::Io(error) => Exit::Io(error),
            CodecError::Protocol(message) => Exit::ProtocolError(message.into_owned()),
        }
    }
}

pub(crate) async fn serve<S>(
    socket: S,
    shared: Arc<Shared>,
    entry: Arc<ClientEntry>,
    direct_writer: Option<Arc<DirectWriter>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (addr, id) = (entry.addr, entry.id);
    debug!(id, %addr, "client connected");
    let mut connection = Connection::new(socket, &shared, entry, direct_writer);
    let exit = connection.run().await;
    if !matches!(exit, Exit::OutputStalled | Exit::OutputBufferLimit | Exit::Deposed) {
        let _ = connection.flush().await;
    }
    connection.give_back_unwritten_dones();
    connection.session.stop_listening(&shared);
    connection.session.release_all(&shared).await;
    shared.clients.unregister(id);
    match exit {
        Exit::ClientClosed | Exit::Quit | Exit::Shutdown => {
            debug!(id, %addr, "client disconnected")
        }
        Exit::Killed => debug!(id, %addr, "client killed"),
        Exit::OutputStalled => warn!(id, %addr, "closing connection: client stopped reading its replies"),
        Exit::OutputBufferLimit => {
            shared.stats.output_buffer_limit_disconnections.fetch_add(1, Ordering::Relaxed);
            warn!(
                id,
                %addr,
                "closing connection: messages for it passed --pubsub-output-buffer-limit (a subscriber or monitor reading too slowly)"
            )
        }
        Exit::ProtocolError(message) => {
            // Some protocol errors quote the offending byte, which may be a line break.
            warn!(id, %addr, error = %Escaped::log(message.as_bytes()), "closing connection after protocol error")
        }
        Exit::Io(error) => debug!(id, %addr, %error, "connection error"),
        Exit::Deposed => {
            debug!(id, %addr, "closing connection: its replies wait for changes this node, no longer leading, will not commit")
        }
    }
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Connection<'a, S> {
    /// Not in [`serve`]: the parts a connection is built from, borrowed there while it is built,
    /// would keep their room in its future (that of every connection's task) after they moved.
    fn new(
        socket: S,
        shared: &'a Shared,
        entry: Arc<ClientEntry>,
        direct_writer: Option<Arc<DirectWriter>>,
    ) -> Connection<'a, S> {
        let config = &shared.config;
        let limits = Limits {
            max_args: config.max_args,
            max_bulk_bytes: config.max_bulk_bytes,
            max_inline_bytes: config.max_inline_bytes,
            max_buffer_bytes: config.max_query_buffer_bytes,
        };
        let (socket, write_watch) = WriteWatch::new(socket, Duration::from_millis(config.output_stall_timeout_ms));
        let session = Session::new(entry, shared);
        let mut codec = RespCodec::new(limits);
        codec.set_authenticated(session.authenticated());
        let mut framed = Framed::with_capacity(socket, codec, INITIAL_BUFFER_BYTES);
        *framed.write_buffer_mut() = BytesMut::with_capacity(INITIAL_BUFFER_BYTES);
        framed.set_backpressure_boundary(WRITE_BATCH_BYTES);
        Connection {
            framed,
            session,
            shared,
            deferred: VecDeque::new(),
            deferred_bytes: 0,
            write_watch,
            lock_limits: LockLimits { max_key_bytes: config.max_key_bytes, max_result_bytes: config.max_result_bytes },
            unreleased: 0,
            pipelines: false,
            unwritten_dones: Vec::new(),
            // A cluster node's replies wait for their commit, which the unlocking connection does
            // not wait for.
            direct_writer: direct_writer.filter(|_| shared.cluster.is_none()),
        }
    }

    async fn run(&mut self) -> Exit {
        loop {
            let input = match self.deferred.pop_front() {
                Some((input, size)) => {
                    self.deferred_bytes -= size;
                    if self.deferred.is_empty() {
                        // A long pipeline behind one WAIT must not keep its queue's table.
                        self.deferred.shrink_to(KEPT_DEFERRED);
                    }
                    input
                }
                // More pipelined input already buffered is decoded before replies are written. With
                // an empty buffer the socket is not tried again here: that read would almost
                // always find nothing, a wasted system call per request.
                None => {
                    let more_buffered = !self.framed.read_buffer().is_empty();
                    if more_buffered && !self.pipelines {
                        self.pipelines = true;
                        self.framed.read_buffer_mut().reserve(PIPELINED_READ_BYTES);
                    }
                    match more_buffered.then(|| self.framed.next().now_or_never()).flatten() {
                        Some(input) => input,
                        None => match self.next_input_after_flush().await {
                            Ok(input) => input,
                            Err(exit) => return exit,
                        },
                    }
                }
            };
            let request = match input {
                None => return Exit::ClientClosed,
                Some(Err(CodecError::Io(error))) => return Exit::Io(error),
                Some(Err(CodecError::Protocol(message))) => {
                    let _ = self.framed.feed((Reply::error(message.clone()), self.session.protocol())).await;
                    return Exit::ProtocolError(message.into_owned());
                }
                Some(Ok(request)) => request,
            };
            if let Err(exit) = self.handle(request).await {
                return exit;
            }
        }
    }

    /// Nothing more is buffered: send what we have, then wait for input or an order.
    async fn next_input_after_flush(&mut self) -> Result<Input, Exit> {
        self.flush().await?;
        self.reclaim_read_room();
        // A shutdown order may have been consumed by a blocked WAIT this connection just ended.
        if self.shared.shutdown.is_cancelled() {
            return Err(Exit::Shutdown);
        }
        let entry = Arc::clone(&self.session.entry);
        loop {
            tokio::select! {
                input = self.framed.next() => return Ok(input),
                control = entry.next_control() => match control {
                    Control::Kill => return Err(Exit::Killed),
                    Control::Shutdown => return Err(Exit::Shutdown),
                    // Not blocked: nothing to end.
                    Control::Unblock { .. } => {}
                },
                () = entry.outbox.ready(), if self.session.receives_pushes() => {
                    self.deliver_pushes().await?;
                    self.flush().await?;
                }
            }
        }
    }

    /// Every request read so far is consumed: the buffer's free tail is moved back to its front
    /// (no copy, no allocation while no argument of an earlier request is still alive). The
    /// buffer would otherwise be refilled only once full, so a tail shorter than the next
    /// request split it over two reads: with 48-byte requests and a 1 KiB buffer, one request in
    /// 21 cost an extra recvfrom(2) and a partial parse.
    fn reclaim_read_room(&mut self) {
        let buffer = self.framed.read_buffer_mut();
        let room = if self.pipelines { PIPELINED_READ_BYTES } else { INITIAL_BUFFER_BYTES };
        if buffer.is_empty() && buffer.capacity() < room / 2 {
            buffer.reserve(room);
        }
    }

    /// Writes what was queued for this subscriber or monitor (see [`crate::outbox`]).
    ///
    /// Boxed, as only subscribers and monitors come here: inline, the loop and its write would
    /// be part of the future of every connection's task.
    fn deliver_pushes(&mut self) -> Pin<Box<impl Future<Output = Result<(), Exit>> + '_>> {
        Box::pin(async move {
            loop {
                let pushes = self.session.entry.outbox.take(WRITE_BATCH_BYTES).map_err(|_| Exit::OutputBufferLimit)?;
                if pushes.is_empty() {
                    return Ok(());
                }
                for push in pushes {
                    self.send(push).await?;
                }
            }
        })
    }

    /// Queues a reply. Below [`WRITE_BATCH_BYTES`] buffered this completes without I/O; beyond it
    /// the buffer is written first, and a client that reads nothing for the stall timeout is
    /// disconnected instead of holding the task forever.
    async fn send(&mut self, reply: Reply) -> Result<(), Exit> {
        if self.framed.write_buffer().len() < WRITE_BATCH_BYTES {
            return self.framed.feed((reply, self.session.protocol())).await.map_err(Exit::from);
        }
        self.await_durable(Gather::WithOthers).await?;
        // Past the backpressure boundary, feeding writes out the whole buffer before taking the reply.
        let feed = self.framed.feed((reply, self.session.protocol()));
        write_slowly(&self.write_watch, &self.session.entry.outbox, feed).await?;
        let written = self.write_watch.written();
        self.unwritten_dones.retain(|done| done.written_when_out > written);
        Ok(())
    }

    /// Sends a reply that paid the DONE `paid` of `key`; the debt is given back unless it is written.
    async fn send_paying(&mut self, reply: Reply, key: Bytes, paid: OwedDone) -> Result<(), Exit> {
        match self.send(reply).await {
            Ok(()) => {
                self.keep_until_written(key, paid);
                Ok(())
            }
            Err(exit) => {
                self.shared.core.done_unwritten(&key, paid, self.shared.clock.now());
                Err(exit)
            }
        }
    }

    /// Keeps `paid` until the reply just buffered, which paid it, is out.
    fn keep_until_written(&mut self, key: Bytes, paid: OwedDone) {
        let written_when_out = self.write_watch.written() + self.framed.write_buffer().len() as u64;
        self.unwritten_dones.push(UnwrittenDone { key, paid, written_when_out });
    }

    /// Writes out the buffered replies; a timer is armed only if the socket cannot take them now.
    async fn flush(&mut self) -> Result<(), Exit> {
        self.await_durable(Gather::WithOthers).await?;
        let mut flush = SinkExt::<(Reply, Protocol)>::flush(&mut self.framed);
        let flushed = match (&mut flush).now_or_never() {
            Some(result) => result.map_err(Exit::from),
            None => write_slowly(&self.write_watch, &self.session.entry.outbox, flush).await,
        };
        if flushed.is_ok() && !self.unwritten_dones.is_empty() {
            // Not kept for the next one: an owner is told DONE once a round, and the connection
            // may idle (or block in a WAIT) for long.
            self.unwritten_dones = Vec::new();
        }
        flushed
    }

    /// The connection ends with replies unwritten: the DONEs among them are owed again.
    fn give_back_unwritten_dones(&mut self) {
        let (now, written) = (self.shared.clock.now(), self.write_watch.written());
        for done in self.unwritten_dones.drain(..) {
            if done.written_when_out > written {
                self.shared.core.done_unwritten(&done.key, done.paid, now);
            }
        }
    }

    /// Holds the buffered replies back until the changes they report are in the journal, or
    /// committed by the cluster.
    async fn await_durable(&mut self, gather: Gather) -> Result<(), Exit> {
        if let Some(persistence) = &self.shared.persistence
            && !persistence.is_released(self.unreleased)
        {
            persistence.released(self.unreleased, gather).await;
        }
        if let Some(cluster) = &self.shared.cluster
            && !cluster.is_committed(self.unreleased)
        {
            return cluster.committed(self.unreleased).await.map_err(|_| Exit::Deposed);
        }
        Ok(())
    }

    /// A blocked WAIT's answer reports the changes of the step that sent it: where the journal
    /// says where they are, the reply waits for them alone (see [`RecordedAt`]).
    fn depends_on_answer(&mut self, recorded_at: Option<RecordedAt>) {
        match recorded_at.and_then(|recorded_at| recorded_at.position()) {
            Some(position) if self.shared.cluster.is_none() => self.unreleased = self.unreleased.max(position),
            _ => self.depends_on_durable(),
        }
    }

    /// A reply about to be buffered reports the changes made so far (its own among them).
    fn depends_on_durable(&mut self) {
        if let Some(persistence) = &self.shared.persistence {
            self.unreleased = persistence.position();
        }
        if let Some(cluster) = &self.shared.cluster {
            self.unreleased = cluster.position();
        }
    }

    /// Runs one request. The checks and the command itself are plain functions, and each way
    /// of answering its own async fn: a local that lives across two awaits of one future is
    /// kept beside every other such local for the whole life of the connection's task, and
    /// this future is part of every connection's task.
    async fn handle(&mut self, request: Request) -> Result<(), Exit> {
        let action = match self.admit(&request.args) {
            Ok(spec) => {
                // Messages published before this command ran go out before its reply, as in Redis.
                if self.session.receives_pushes() {
                    self.deliver_pushes().await?;
                }
                self.execute(spec, request)
            }
            Err(reply) => Err(reply),
        };
        match action {
            Ok(Action::Reply(reply)) | Err(reply) => self.send(reply).await,
            Ok(Action::PaysDone { reply, key, paid }) => self.send_paying(reply, key, paid).await,
            Ok(Action::Replies(replies)) => self.send_each(replies).await,
            Ok(Action::ReplyAfterHandoff { reply, handed_to, handed_at }) => {
                self.reply_after_handoff(reply, handed_to, handed_at).await
            }
            Ok(Action::Close(reply)) => {
                self.send(reply).await?;
                Err(Exit::Quit)
            }
            Ok(Action::Shutdown) => {
                // The replies before it go out; the shutdown then closes this connection too.
                self.flush().await?;
                let entry = &self.session.entry;
                info!(id = entry.id, addr = %entry.addr, "SHUTDOWN received: stopping the server");
                self.shared.shutdown.cancel();
                Err(Exit::Shutdown)
            }
            Ok(Action::Later(reply)) => self.send_when_ready(reply).await,
            Ok(Action::Block { waiting, ticket, timeout }) => self.wait_and_answer(waiting, ticket, timeout).await,
        }
    }

    /// Whether the command may run here and now: the reply that refuses it if not.
    fn admit(&mut self, args: &[Bytes]) -> Result<&'static CommandSpec, Reply> {
        let shared = self.shared;
        shared.stats.total_commands_processed.fetch_add(1, Ordering::Relaxed);
        let spec = cmd::resolve(args)?;
        let recent = shared.clients.recent_instant();
        self.session.entry.update(|state| {
            state.last_command = Some(spec.command_name());
            state.last_active = recent;
        });
        cmd::authorize(spec, args, &self.session, shared)?;
        if self.session.in_subscribed_context() && !cmd::allowed_while_subscribed(spec) {
            return Err(Reply::error(errors::subscribed_context(&spec.full_name())));
        }
        if let Some(persistence) = &shared.persistence {
            if persistence.loading() && !spec.flags.contains(&"loading") {
                return Err(Reply::error(errors::LOADING));
            }
            if spec.is_write()
                && let Some(failure) = persistence.write_failure()
            {
                return Err(Reply::error(errors::misconf(&failure)));
            }
        }
        // In a cluster only the leader has the locks; the others send clients to it, as a Redis
        // replica sends them to its master. Reads too: a replica's state lags.
        if let Some(cluster) = &shared.cluster
            && spec.first_key > 0
            && cluster.serving_term() == 0
        {
            let key = args.get(spec.first_key as usize).map_or(&[][..], |key| &key[..]);
            return Err(Reply::from(cluster.redirect(key)));
        }
        Ok(spec)
    }

    /// Parses the command and applies it; what to answer.
    fn execute(&mut self, spec: &'static CommandSpec, request: Request) -> Result<Action, Reply> {
        let shared = self.shared;
        let monitor_line = if shared.monitors.active() {
            cmd::pubsub::monitor_line(spec, &request.args, self.session.entry.addr)
        } else {
            None
        };
        let action = Command::parse(spec, request.args, self.lock_limits)
            .map(|command| command.execute(&mut self.session, shared));
        // After the command ran, as Redis feeds its monitors: a RESET from a monitor is not its own.
        if let Some(line) = monitor_line {
            shared.monitors.feed(line);
        }
        let action = action?;
        // A cluster leader's reads wait too: what they saw may not be committed yet. A WAIT that
        // blocks has no reply yet: the replies before it need not wait for its place in line,
        // and its answer waits for the step that sends it, which comes later.
        let blocks = matches!(action, Action::Block { .. });
        if (spec.is_write() && !blocks) || (spec.first_key > 0 && shared.cluster.is_some()) {
            self.depends_on_durable();
        }
        self.framed.codec_mut().set_authenticated(self.session.authenticated());
        Ok(action)
    }

    /// SUBSCRIBE confirms each channel with a reply of its own.
    async fn send_each(&mut self, replies: Vec<Reply>) -> Result<(), Exit> {
        for reply in replies {
            self.send(reply).await?;
        }
        Ok(())
    }

    /// A reply that takes a while (a membership change waiting for its commit).
    async fn send_when_ready(&mut self, reply: Deferred) -> Result<(), Exit> {
        let reply = tokio::select! {
            reply = reply.0 => reply,
            // A membership change goes on without its reply; the server does not wait.
            () = self.shared.shutdown.cancelled() => return Err(Exit::Shutdown),
        };
        self.send(reply).await
    }

    /// An UNLOCK that handed the lock to blocked WAITs, or told them DONE: their replies go out
    /// first.
    async fn reply_after_handoff(
        &mut self,
        reply: Reply,
        handed_to: HandedTo,
        handed_at: Timestamp,
    ) -> Result<(), Exit> {
        let shared = self.shared;
        // The grants report this UNLOCK's change: written once it is.
        self.await_durable(Gather::No).await?;
        // Hand-off latency as the waiter's task measures it: until the reply is ready.
        let latency = shared.clock.now().duration_since(handed_at);
        let written_whole = handed_to.write_directly();
        (0..written_whole).for_each(|_| shared.metrics.record_handoff(latency));
        shared.stats.handoffs_written_by_unlocker.fetch_add(written_whole as u64, Ordering::Relaxed);
        let dones_written = self.write_dones(&handed_to);
        shared.stats.dones_written_by_unlocker.fetch_add(dones_written as u64, Ordering::Relaxed);
        // Woken only now (see `Mailbox::post_for_direct_write`), the waiters' tasks find their
        // grants written, or write them: those on this loop before this reply, once it yields.
        let handed = handed_to.count();
        drop(handed_to);
        if written_whole < handed {
            yield_to_queued().await;
        }
        self.send(reply).await
    }

    /// Writes the DONEs a SUCCESS left for this connection; how many were written whole.
    ///
    /// Each is a payment under the key's shard lock and a `send(2)` on its waiter's socket, so
    /// telling 10,000 waiters kept one loop busy for about 100 ms while a core no loop uses stood
    /// idle: with a long line and a spare core, a thread there writes them too, the two taking a
    /// few at a time until none is left (see `LockCore::write_dones_directly`). Split in fixed
    /// halves, the loop, which the scheduler favoured, finished its half well before the thread
    /// did, and a core then idled (docs/benchmarks-history.md, *A spare core for the fan-out*).
    /// The thread is scoped: this loop waits for it, and wakes the WAITs from its own thread once
    /// every DONE is out. Without a thread (none could be started), this loop writes them all.
    fn write_dones(&self, handed_to: &HandedTo) -> usize {
        let (core, now) = (&self.shared.core, self.shared.clock.now());
        if handed_to.dones_to_write() < SHARED_FANOUT_MIN || !self.shared.spare_core {
            return core.write_dones_directly(handed_to, now);
        }
        let written = std::thread::scope(|scope| {
            let helper = std::thread::Builder::new().name("baton-fanout".to_owned()).spawn_scoped(scope, || {
                journal::appending_for_a_waiting_loop(|| core.write_dones_directly(handed_to, now))
            });
            core.write_dones_directly(handed_to, now) + helper.map_or(0, |helper| helper.join().unwrap_or(0))
        });
        journal::owe_flush_on_this_loop();
        written
    }

    /// A LOCK.WAIT that blocked: waits for its answer, then writes it.
    ///
    /// Not an `async fn`: one moves its arguments into its body, and its future then holds
    /// each twice (rust-lang/rust#62958); this future is part of every connection's task.
    #[expect(clippy::manual_async_fn, reason = "an async fn would hold its arguments twice")]
    fn wait_and_answer(
        &mut self,
        mut waiting: Waiting,
        ticket: WaitTicket,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<(), Exit>> + '_ {
        async move {
            let end = self.block(&mut waiting, ticket, timeout).await?;
            self.write_answer(&waiting, end).await
        }
    }

    /// Writes a blocked WAIT's answer, unless the connection that handed it the lock did. Not an
    /// `async fn`, for the reason [`Self::wait_and_answer`] gives; `end`'s fields are used in
    /// place for the same reason.
    #[expect(clippy::manual_async_fn, reason = "an async fn would hold its arguments twice")]
    fn write_answer<'w>(
        &'w mut self,
        waiting: &'w Waiting,
        end: WaitEnd,
    ) -> impl Future<Output = Result<(), Exit>> + 'w {
        async move {
            let shared = self.shared;
            let key = &waiting.key;
            // The answer was sent under the key's shard lock, before that operation's changes
            // went to the journal (still under the lock): passing through the lock makes sure
            // they are there to wait for, and says where.
            shared.core.barrier(key);
            self.depends_on_answer(end.recorded_at);
            self.await_durable(Gather::No).await?;
            // Hand-off latency: from the grant to its reply being ready to write, journal
            // included. Taken before the write, so that a client that has read its grant
            // finds it counted in INFO; by the unlocking connection for a grant it wrote.
            if let Some(granted_at) = end.granted_at
                && end.written != Written::Whole
            {
                shared.metrics.record_handoff(shared.clock.now().duration_since(granted_at));
            }
            // The waiter's answer goes out at once, whatever else is buffered, unless the
            // connection that handed the lock over (or told the DONE) wrote it. A DONE is paid
            // once buffered, before the client can read it (see `LockCore::pay_done`), unless
            // that connection paid it to write it.
            let written = match end.written {
                Written::Nothing => self.send(end.reply).await,
                Written::Part(bytes) => match render(&end.reply, self.session.protocol()) {
                    Ok(rendered) => self.send(Reply::Rendered(rendered.slice(bytes..))).await,
                    Err(error) => Err(Exit::from(error)),
                },
                Written::Whole => Ok(()),
            };
            let written = match written {
                Ok(()) => {
                    let paid = match end.paid {
                        Some(paid) => Some(paid),
                        None if end.written == Written::Whole => None,
                        None => end
                            .done
                            .and_then(|token| shared.core.pay_done(key, &waiting.owner, token, shared.clock.now())),
                    };
                    if let Some(paid) = paid {
                        self.keep_until_written(waiting.key.clone(), paid);
                    }
                    self.flush().await
                }
                Err(exit) => {
                    if let Some(paid) = end.paid {
                        shared.core.done_unwritten(key, paid, shared.clock.now());
                    }
                    Err(exit)
                }
            };
            // The client never read its grant: the core passes the lock on (or to another
            // connection of the owner that was sent it), saying why.
            if written.is_err()
                && end.written != Written::Whole
                && let Some(token) = end.token
            {
                shared.core.grant_undelivered(key, token, self.session.id(), shared.clock.now());
            }
            written
        }
    }

    /// Waits for a blocked LOCK.WAIT's answer while watching the socket, the timeout, shutdown
    /// and CLIENT KILL / UNBLOCK. Every way out that is not an answer hands the ticket back to
    /// the core, which settles any race with a grant under the shard lock.
    ///
    /// `waiting` holds the WAIT's key and owner as sliced from the read buffer. Input read
    /// meanwhile may move the connection to a new buffer, so they are copied at the first request
    /// read then, not to keep the old one alive.
    async fn block(
        &mut self,
        waiting: &mut Waiting,
        ticket: WaitTicket,
        timeout: Option<Duration>,
    ) -> Result<WaitEnd, Exit> {
        let shared = self.shared;
        let entry = Arc::clone(&self.session.entry);
        // Blocked as far as CLIENT UNBLOCK and CLIENT LIST can tell since the WAIT ran (see
        // `LockCommand::execute`), while the replies before it are still being written (after
        // the journal): an UNBLOCK meanwhile is waiting in the control channel when the loop
        // below starts.
        shared.stats.blocked_clients.fetch_add(1, Ordering::Relaxed);
        if let Err(exit) = self.flush().await {
            entry.update(|state| state.blocked_on = None);
            shared.stats.blocked_clients.fetch_sub(1, Ordering::Relaxed);
            shared.core.wait_abandoned(ticket, &waiting.key, shared.clock.now());
            return Err(exit);
        }
        // Everything before the WAIT is written, and nothing is while it waits, unless pushes.
        if let Some(writer) = &self.direct_writer
            && !self.session.receives_pushes()
        {
            ticket.allow_direct(Arc::clone(writer) as Arc<dyn AnswerWriter>);
        }
        let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
        let leading_term = shared.cluster.as_ref().map(|cluster| cluster.serving_term());
        let mut detached = false;

        enum Wake {
            Letter(Letter),
            TimedOut,
            Input(Input),
            Control(Control),
            Pushes,
        }
        let outcome = loop {
            // A client that has gone, or been killed, is looked at before an answer that arrived
            // meanwhile: that grant was never delivered, and handing the ticket back lets the
            // core pass the lock on (or to another connection of the owner) in one step. Taken
            // as delivered, it would be released later as if the holder had disconnected.
            let wake = tokio::select! {
                biased;
                input = self.framed.next() => Wake::Input(input),
                control = entry.next_control() => Wake::Control(control),
                letter = ticket.letter() => Wake::Letter(letter),
                () = sleep_until(deadline) => Wake::TimedOut,
                // A RESP3 subscriber (or a monitor) hears its messages while it waits.
                () = entry.outbox.ready(), if self.session.receives_pushes() => Wake::Pushes,
            };
            let now = shared.clock.now();
            match wake {
                Wake::Pushes => {
                    let delivered = match self.deliver_pushes().await {
                        Ok(()) => self.flush().await,
                        Err(exit) => Err(exit),
                    };
                    if let Err(exit) = delivered {
                        shared.core.wait_abandoned(ticket, &waiting.key, now);
                        break Err(exit);
                    }
                }
                Wake::Letter(Letter::Answer(got)) => break Ok(answer(got, self.session.protocol())),
                // The node stopped leading and forgot its locks: the client re-sends the WAIT to
                // the new leader, where its place was replicated.
                Wake::Letter(Letter::Withdrawn)
                    if let Some(cluster) = &shared.cluster
                        && Some(cluster.serving_term()) != leading_term =>
                {
                    break Ok(WaitEnd::reply(Reply::from(cluster.redirect(&waiting.key))));
                }
                // The owner was cancelled out of the queue (LOCK.CANCEL): it ends like a timeout.
                Wake::Letter(Letter::Withdrawn) => break Ok(WaitEnd::reply(Reply::NilArray)),
                Wake::TimedOut | Wake::Control(Control::Unblock { error: false }) => {
                    break Ok(shared
                        .core
                        .wait_timed_out(ticket, &waiting.key, now)
                        .map_or(WaitEnd::reply(Reply::NilArray), |got| answer(got, self.session.protocol())));
                }
                Wake::Control(Control::Unblock { error: true }) => {
                    let unblocked = WaitEnd::reply(Reply::error(errors::UNBLOCKED));
                    break Ok(shared
                        .core
                        .wait_timed_out(ticket, &waiting.key, now)
                        .map_or(unblocked, |got| answer(got, self.session.protocol())));
                }
                Wake::Control(Control::Kill) => {
                    shared.core.wait_abandoned(ticket, &waiting.key, now);
                    break Err(Exit::Killed);
                }
                // Requests pipelined behind the WAIT are not run: the connection closes. The owner
                // keeps its place: the server is going away, not the client (a journal keeps it
                // for the next start).
                Wake::Control(Control::Shutdown) => {
                    shared.core.wait_stopped_by_shutdown(ticket, &waiting.key, now);
                    let _ = self.framed.feed((Reply::error(errors::SHUTTING_DOWN), self.session.protocol())).await;
                    break Err(Exit::Shutdown);
                }
                Wake::Input(Some(Ok(request))) => {
                    if !detached {
                        waiting.detach();
                        entry.update(|state| state.blocked_on = Some(waiting.key.clone()));
                        detached = true;
                    }
                    // Kept for a while, so it must not pin the read buffer it was sliced from:
                    // then what is counted is what it holds.
                    let request = request.detach();
                    let size = request.detached_size() + std::mem::size_of::<(Input, usize)>();
                    self.deferred_bytes += size;
                    if self.deferred_bytes > shared.config.max_query_buffer_bytes {
                        shared.core.wait_abandoned(ticket, &waiting.key, now);
                        let _ =
                            self.framed.feed((Reply::error(errors::PROTO_QUERY_BUFFER), self.session.protocol())).await;
                        break Err(Exit::ProtocolError(errors::PROTO_QUERY_BUFFER.to_owned()));
                    }
                    self.deferred.push_back((Some(Ok(request)), size));
                }
                // Closed, broken, or garbage: the waiter leaves the queue. Garbage is answered with
                // the protocol error (the wait itself gets no reply) and the connection closes.
                Wake::Input(input) => {
                    shared.core.wait_abandoned(ticket, &waiting.key, now);
                    match input {
                        Some(Err(CodecError::Protocol(message))) => {
                            let _ = self.framed.feed((Reply::error(message.clone()), self.session.protocol())).await;
                            break Err(Exit::ProtocolError(message.into_owned()));
                        }
                        Some(Err(CodecError::Io(error))) => break Err(Exit::Io(error)),
                        _ => break Err(Exit::ClientClosed),
                    }
                }
            }
        };
        entry.update(|state| state.blocked_on = None);
        shared.stats.blocked_clients.fetch_sub(1, Ordering::Relaxed);
        outcome
    }
}

/// A write the socket could not take at once: the client is cut off if it stops reading for the
/// stall timeout, or as soon as what is queued for it (a subscriber, a monitor) passes its
/// output-buffer limit meanwhile.
///
/// Boxed, as it is rare: inline, its timer and watches (300 bytes) were part of every future
/// that writes (sending, flushing, a blocked WAIT's), and so of every connection's task.
fn write_slowly<'a>(
    watch: &'a WriteWatch,
    outbox: &'a Outbox,
    write: impl Future<Output = Result<(), CodecError>> + 'a,
) -> Pin<Box<impl Future<Output = Result<(), Exit>> + 'a>> {
    Box::pin(async move {
        tokio::select! {
            written = watch.run(write) => written.map_err(|_| Exit::OutputStalled)?.map_err(Exit::from),
            () = outbox.overflowed() => Err(Exit::OutputBufferLimit),
        }
    })
}

/// How a blocked WAIT ended: its reply, with the token when it grants the lock, and when the
/// core sent that grant (if it came through the mailbox: hand-off latency counts from there).
struct WaitEnd {
    reply: Reply,
    token: Option<u64>,
    granted_at: Option<Timestamp>,
    /// The token of the completion a DONE reports: the core owes the owner that DONE until it
    /// is about to be written.
    done: Option<u64>,
    /// Where the changes of the step that sent the answer were recorded.
    recorded_at: Option<RecordedAt>,
    /// How much of the reply the connection that handed the lock over wrote (see [`crate::direct`]).
    written: Written,
    /// The DONE that connection paid but did not write whole: kept until the rest is written.
    paid: Option<OwedDone>,
}

impl WaitEnd {
    fn reply(reply: Reply) -> WaitEnd {
        WaitEnd {
            reply,
            token: None,
            granted_at: None,
            done: None,
            recorded_at: None,
            written: Written::Nothing,
            paid: None,
        }
    }
}

/// A blocked WAIT's answer, whether it woke the WAIT or was found when its timeout or an UNBLOCK
/// raced it: either way a grant's hand-off latency counts from when the core sent it. `protocol`
/// is the one the reply will be sent in: a DONE is rendered for it here, once for every waiter
/// this thread tells (see [`crate::fanout`]).
fn answer(Answer { outcome, sent_at, recorded_at, written, paid }: Answer, protocol: Protocol) -> WaitEnd {
    let recorded_at = Some(recorded_at);
    match outcome {
        WaitOutcome::Acquired { token } => WaitEnd {
            reply: Reply::from(outcome),
            token: Some(token),
            granted_at: Some(sent_at),
            done: None,
            recorded_at,
            written,
            paid,
        },
        WaitOutcome::Done(completion) => {
            let done = Some(completion.token);
            let reply = fanout::done(completion, protocol);
            WaitEnd { reply, token: None, granted_at: None, done, recorded_at, written, paid }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grant found when the WAIT's timeout raced it is a hand-off like one that woke the WAIT:
    /// both come through `answer`, which keeps when the core sent it.
    #[test]
    fn a_grant_keeps_when_it_was_sent_and_a_done_has_no_hand_off() {
        let sent_at = Timestamp::from_ms(42);
        let granted =
            answer(Answer::new(WaitOutcome::Acquired { token: 9 }, sent_at, Default::default()), Protocol::Resp2);
        assert_eq!((granted.token, granted.granted_at), (Some(9), Some(sent_at)));
        assert_eq!(granted.reply, Reply::from(WaitOutcome::Acquired { token: 9 }));

        let completion = Arc::new(crate::core::Completion { token: 9, finisher: Arc::from(&b"a"[..]), result: None });
        let told = answer(Answer::new(WaitOutcome::Done(completion), sent_at, Default::default()), Protocol::Resp2);
        assert_eq!((told.token, told.granted_at), (None, None));
        assert!(matches!(told.reply, Reply::Rendered(_)));
    }
}
