//! History checker: many concurrent clients contend for a few keys on a real server; every call
//! and answer is recorded with monotonic timestamps (taken before the request is sent and after
//! its reply arrived), then the whole history is checked against the lock's guarantees:
//!
//! - mutual exclusion: on a key, no two holding intervals overlap (a holding runs from the
//!   ACQUIRED reply to the moment its UNLOCK is sent, so a hand-off delivered after the old
//!   holder's UNLOCK was sent is fine);
//! - tokens strictly increase per key, in the real-time order of the holdings;
//! - FIFO: of two owners that both end up granted, the one that certainly joined the line first
//!   (its QUEUED reply, or its WAIT's reply for a first WAIT, came before the other's first request
//!   was sent) gets the smaller token;
//! - a FAILURE hands the lock on (reply 1) or frees it (reply 0) only when nobody is certainly in
//!   line; a SUCCESS leaves nobody in line who joined before it: every such owner answers DONE with
//!   the finisher's result, never a grant;
//! - every DONE names a real SUCCESS, with its result, which happened before it;
//! - every WAIT is answered exactly once: a nil not before its timeout, any answer within the
//!   timeout plus slack; every UNLOCK by a holder works (the lock is never lost);
//! - leases are measured from the reply: now and then a holder stalls past its (short) lease, so
//!   the lock moves on without it. Its holding counts from its ACQUIRED reply until its lease
//!   could have ended (the lease runs from the hand-off, which came before the reply; a delivery
//!   slack is allowed), so a grant whose lease had already ended when it was sent overlaps the
//!   next holding and is a violation. The stalled holder's late UNLOCK must be refused;
//! - at the end every key is free with an empty line.
//!
//! "Certainly in line at time T" is proved from the owner's own calls: it joined before T, and
//! later evidence shows it still waiting after T (a grant with a larger token, a DONE from a later
//! SUCCESS, a nil WAIT whose timeout ran out after T, a CANCEL that removed it sent after T).
//!
//! In one episode in six the owner also waits on a second connection, a WAIT there racing the one
//! on its main connection. A grant is told on every connection the owner is blocked on: it is one
//! holding, from its first ACQUIRED reply on any of them, and one round's replies must all agree.
//! A DONE takes the owner out of line, so a WAIT the server ran after it began a new round: a DONE
//! beside a grant, or beside a DONE of another SUCCESS, ends the round and the other reply is the
//! next round's. A nil beside a DONE may belong to either round, so it goes with the next one, where
//! it proves nothing (a round that begins with it counts as joined only once a later reply came).
//! With disconnects the second connection is sometimes closed mid-wait: once CLIENT LIST showed it
//! blocked in its WAIT, as soon as the main WAIT is granted or told DONE. A WAIT that blocked
//! cannot have renewed a lock the owner already held, so a grant told on the main connection must
//! stay with the owner when the second connection closes (even when the lock was bound to the
//! second, the newest to block), and its UNLOCK must work. What the closed connection was told
//! goes unread, and it may have been a DONE from a SUCCESS the server ran before the main WAIT
//! (which then began a new round): the round ends unheard there, and the main WAIT's answer is
//! the next round's.
//!
//! Runs with 1 shard and with 64 shards. `BATON_HISTORY_SCALE=n` multiplies the episodes per
//! client (default 1: a few seconds); `BATON_HISTORY_SEED` seeds the clients' choices (the
//! interleaving is the machine's). To investigate a violation: `BATON_HISTORY_DUMP=dir` writes
//! every round and holding of a failing run there, and `BATON_HISTORY_LOG=1` logs the server's
//! grants, DONEs and releases to stderr (each run's keys are named after its shard count).

// A test binary has no outside users: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

// Shared with tests/cluster_history.rs, whose clients also record lost calls.
#[allow(dead_code)]
#[path = "support/history_run.rs"]
mod history_run;

use history_run::{Answer, answer};

use baton::config::Config;
use baton::server::RunningServer;
use baton_testkit::Resp;
use baton_testkit::client::Connection;
use baton_testkit::redis_crate::{query, result_to_resp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::aio::MultiplexedConnection;
use tokio::sync::oneshot;

const KEYS: usize = 3;
const CLIENTS: usize = 32;
const EPISODES_PER_CLIENT: usize = 100;
/// PX of every TRY/WAIT: long enough that no place and no holding lapses during a run.
const LEASE_MS: u64 = 20_000;
/// PX with disconnects: a place an owner leaves behind when it gives up a round without a CANCEL
/// (one another of its connections renewed last) is kept for its lease and may even be granted
/// the lock; it must not stall a key long.
const DISCONNECT_LEASE_MS: u64 = 2_000;
/// How late an answer may be on a loaded CI machine before we call the WAIT unanswered.
const SLACK: Duration = Duration::from_secs(5);
/// PX of an episode whose holder stalls past its lease (it UNLOCKs 100 ms after).
const STALL_LEASE_MS: u64 = 600;
/// Leases end on the server's whole-millisecond clock, so one may end up to 1 ms before PX has
/// passed since the grant.
const SERVER_CLOCK_GRAIN: Duration = Duration::from_millis(1);
/// Share of episodes in which the owner also waits on a second connection.
const TWO_CONNECTIONS: f64 = 1.0 / 6.0;
/// How often the lookout asks whether a second connection is blocked yet.
const LOOK_AGAIN: Duration = Duration::from_micros(200);

/// Each run has keys of its own (named after its shard count), so that the logs of runs that share
/// a process tell them apart.
fn key_name(run: usize, key: usize) -> String {
    format!("hist{run}:k{key}")
}

fn owner_name(client: usize) -> String {
    format!("c{client}")
}

// ---------------------------------------------------------------------------------------------
// What the clients record

#[derive(Debug, Clone)]
struct Call {
    what: String,
    send: Instant,
    recv: Instant,
    answer: Answer,
    /// For a WAIT: its timeout.
    timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
enum End {
    Acquired {
        token: u64,
    },
    Done {
        finisher: String,
        result: Option<String>,
    },
    /// Gave up: CANCEL removed it from the line (sent at `send`).
    Cancelled {
        send: Instant,
    },
    /// Not in line and not told anything (NOQUEUE after a CANCEL that found nothing).
    Vanished,
    /// It closed the connection of its WAIT: while the WAIT was blocked, or just after it timed
    /// out (the nil read late, then the close), which takes the place that WAIT renewed last.
    Abandoned,
    /// Its answer went to a second connection that was closed before it was read: the owner may
    /// have been told DONE there, at a moment nobody saw.
    Unheard,
}

/// One round of an owner on a key: from joining the line (or its first request) to how it ended.
#[derive(Debug, Clone)]
struct Episode {
    client: usize,
    key: usize,
    /// Send time of its first request and the receive time of the reply that proved it in line.
    join_lower: Instant,
    join_upper: Instant,
    calls: Vec<Call>,
    end: End,
}

/// A holding as its owner ended it. When it began is read from the episodes: the owner's first
/// ACQUIRED reply with its token.
#[derive(Debug, Clone)]
struct Holding {
    client: usize,
    owner: String,
    key: usize,
    token: u64,
    /// UNLOCK sent / answered.
    end: Instant,
    unlock_recv: Instant,
    success: bool,
    keep: bool,
    reply: Answer,
    /// Ended by closing the connection instead of an UNLOCK (then `end` is when it closed).
    dropped: bool,
    /// The holder sat on the lock past its lease: its UNLOCK came too late to count.
    stalled: bool,
    lease: Duration,
}

/// How often the two-connection paths were taken, to show that a run exercised them.
#[derive(Default)]
struct TwoConnectionTally {
    /// WAITs sent on both connections at once.
    pairs: usize,
    /// Rounds a DONE ended while the other connection's WAIT began the next one.
    splits: usize,
    /// Second connections closed mid-wait, once the main WAIT had ended the round.
    closed: usize,
    /// Of those, the ones closed once the main connection had been granted the lock, which the
    /// owner must then keep.
    closed_after_grant: usize,
}

#[derive(Default)]
struct ClientLog {
    episodes: Vec<Episode>,
    holdings: Vec<Holding>,
    tally: TwoConnectionTally,
    /// WAITs on a connection of their own whose nil was read (the client late) before the close.
    closed_after_nil: usize,
}

/// A WAIT on a connection of its own that the owner closed before it was answered, or just after
/// it was answered nil: either way the owner left the line with it.
struct Abandoned {
    closed: Instant,
    /// The WAIT, when its nil was read before the close.
    nil: Option<Call>,
}

async fn timed_call(con: &mut MultiplexedConnection, args: &[String], timeout: Option<Duration>) -> Call {
    let send = Instant::now();
    let reply = query(con, args).await;
    let recv = Instant::now();
    Call { what: args.join(" "), send, recv, answer: answer(&result_to_resp(reply)), timeout }
}

/// Whether connection `id` is blocked in a LOCK.WAIT right now, as CLIENT LIST shows it (the
/// server marks it only once the WAIT has joined the line).
async fn blocked_in_wait(lookout: &mut MultiplexedConnection, id: i64) -> bool {
    let line = result_to_resp(query(lookout, &["CLIENT", "LIST", "ID", &id.to_string()]).await).text();
    line.split_whitespace().any(|field| field == "flags=b")
}

/// Which of two concurrent WAITs of one owner ended its round with a DONE, leaving the other to
/// the next round; `None` when both belong to one round.
///
/// A grant makes the owner the holder until it unlocks, so a WAIT the server ran after it is
/// granted the same; a DONE takes the owner out of line, so a WAIT run after it begins a new
/// round. Two replies that disagree are therefore a DONE first and the other one later: of two
/// DONEs, the one from the earlier SUCCESS (smaller token). A nil beside a DONE may have come
/// before or after it, so it too is left to the next round, where it proves nothing.
fn round_ended_by(pair: [&Answer; 2]) -> Option<usize> {
    let done = |answer: &Answer| match answer {
        Answer::Done { result, .. } => Some(result_token(result)),
        _ => None,
    };
    match pair.map(done) {
        [Some(_), Some(_)] if pair[0] == pair[1] => None,
        [Some(first), Some(second)] => Some(usize::from(second < first)),
        [Some(_), None] => Some(0),
        [None, Some(_)] => Some(1),
        [None, None] => None,
    }
}

/// The owner's calls since it joined the line, or since it may have.
struct Round {
    join_lower: Instant,
    /// The first reply that proved it in line (or answered it). Unset while the round began with
    /// a nil that may belong to the round before.
    join_upper: Option<Instant>,
    calls: Vec<Call>,
}

impl Round {
    fn starting_with(call: Call) -> Round {
        let join_upper = (call.answer != Answer::Nil).then_some(call.recv);
        Round { join_lower: call.send, join_upper, calls: vec![call] }
    }

    fn push(&mut self, call: Call) {
        self.join_upper.get_or_insert(call.recv);
        self.calls.push(call);
    }
}

/// How a round ended, as the episode goes on from it.
enum RoundEnd {
    /// Granted over a connection that is still open: the owner works and unlocks.
    Holds(u64),
    /// Granted over a connection it then closed: the holding (logged already) ended there.
    Dropped(u64),
    /// Any other way; `next` is the owner's next round, begun by a WAIT of this one.
    Over { end: End, next: Option<Round> },
}

/// The owner's second connection, on which it waits at the same time as on its main one.
struct SecondConnection {
    conn: Connection,
    /// Its CLIENT ID, to find it in CLIENT LIST.
    id: i64,
}

impl SecondConnection {
    async fn open(addr: std::net::SocketAddr) -> SecondConnection {
        let mut conn = Connection::connect(addr, SLACK).await.expect("connect");
        let id = conn.call(&[b"CLIENT", b"ID"]).await.expect("CLIENT ID").int();
        SecondConnection { conn, id }
    }

    /// Sends a WAIT after `lag` and reads its reply: the connection and the call, or `None` if
    /// the connection was closed first.
    ///
    /// With `close`, once `lookout` has seen the connection blocked in the WAIT, it is closed as
    /// soon as `main_ended` says that the main WAIT was granted or told DONE (its own reply, if
    /// one came meanwhile, goes unrecorded): both WAITs then ran before the close. A reply that
    /// comes before the connection was seen blocked is read like any other.
    async fn wait(
        mut self,
        args: &[String],
        timeout: Duration,
        lag: Duration,
        close: bool,
        mut main_ended: oneshot::Receiver<bool>,
        lookout: &mut MultiplexedConnection,
    ) -> Option<(SecondConnection, Call)> {
        tokio::time::sleep(lag).await;
        let what = format!("{} (second connection)", args.join(" "));
        let send = Instant::now();
        self.conn.queue(&args.iter().map(String::as_bytes).collect::<Vec<_>>());
        self.conn.flush().await.expect("write");
        let mut reply = None;
        let mut seen_blocked = false;
        while close && reply.is_none() && !seen_blocked {
            seen_blocked = blocked_in_wait(lookout, self.id).await;
            if !seen_blocked {
                reply = self.conn.read_within(LOOK_AGAIN).await.expect("read").map(|reply| (reply, Instant::now()));
            }
        }
        if seen_blocked {
            loop {
                tokio::select! {
                    ended = &mut main_ended => {
                        if ended == Ok(true) {
                            return None;
                        }
                        break;
                    }
                    read = self.conn.read_within(timeout + SLACK), if reply.is_none() => {
                        reply = read.expect("read").map(|reply| (reply, Instant::now()));
                    }
                }
            }
        }
        if reply.is_none() {
            reply = self.conn.read_within(timeout + SLACK).await.expect("read").map(|reply| (reply, Instant::now()));
        }
        let (reply, recv) = reply.unwrap_or_else(|| panic!("{what}: no reply within its timeout and {SLACK:?}"));
        let call = Call { what, send, recv, answer: answer(&reply), timeout: Some(timeout) };
        Some((self, call))
    }
}

struct Client {
    id: usize,
    /// Which run (its shard count): names its keys.
    run: usize,
    addr: std::net::SocketAddr,
    /// Bumped whenever a connection of this client is closed mid-wait: a new owner id from then.
    generation: u32,
    /// Now and then a WAIT goes over a connection of its own that is closed before, at or just
    /// after its timeout.
    disconnects: bool,
    con: MultiplexedConnection,
    /// Looks at the second connection from outside while the main one is blocked.
    lookout: MultiplexedConnection,
    /// This episode's holder will stall past its lease (which is then short).
    stalls: bool,
    rng: StdRng,
    log: ClientLog,
}

impl Client {
    fn px(&self) -> u64 {
        match (self.stalls, self.disconnects) {
            (true, _) => STALL_LEASE_MS,
            (false, true) => DISCONNECT_LEASE_MS,
            (false, false) => LEASE_MS,
        }
    }

    async fn call(&mut self, args: &[String], timeout: Option<Duration>) -> Call {
        timed_call(&mut self.con, args, timeout).await
    }

    async fn run(mut self, episodes: usize) -> ClientLog {
        for _ in 0..episodes {
            let key = self.rng.random_range(0..KEYS);
            self.episode(key).await;
        }
        self.log
    }

    /// One attempt at the work on `key`: join the line (TRY, or straight into WAIT), wait with
    /// short timeouts (so timeouts race hand-offs), give up now and then, and when granted do the
    /// "work" and report SUCCESS or FAILURE. The attempt is one round in line, or more when a WAIT
    /// on the second connection began a new one.
    async fn episode(&mut self, key: usize) {
        let k = key_name(self.run, key);
        let owner = format!("{}.{}", owner_name(self.id), self.generation);
        self.stalls = self.rng.random_bool(0.03);
        // A holder that will stall keeps to one connection: its lease is short enough that it might
        // run out before a second WAIT reaches the server, which would then begin a new round.
        let mut second = if !self.stalls && self.rng.random_bool(TWO_CONNECTIONS) {
            Some(SecondConnection::open(self.addr).await)
        } else {
            None
        };
        let opened_second = second.is_some();
        let first = if self.rng.random_bool(0.7) {
            let px = self.px().to_string();
            self.call(&["LOCK.TRY".into(), k.clone(), owner.clone(), "PX".into(), px], None).await
        } else {
            let timeout = Duration::from_millis(self.rng.random_range(1..40));
            match self.wait_or_abandon(key, &owner, timeout).await {
                Ok(call) => call,
                Err(Abandoned { closed, nil }) => {
                    let end = End::Abandoned;
                    // A nil read before the close proves the owner was in line until its timeout.
                    let (join_lower, join_upper) = nil.as_ref().map_or((closed, closed), |call| (call.send, call.recv));
                    self.log.episodes.push(Episode {
                        client: self.id,
                        key,
                        join_lower,
                        join_upper,
                        calls: nil.into_iter().collect(),
                        end,
                    });
                    self.generation += 1;
                    return;
                }
            }
        };
        // Its first reply proves it in line, whatever it says: there is no round before.
        let mut next_round = Some(Round { join_lower: first.send, join_upper: Some(first.recv), calls: vec![first] });
        // After a connection of this owner closed mid-wait, the server may still keep something of
        // it (a place, an owed DONE, a close it has yet to see): a fresh owner id keeps that out
        // of the next episode.
        let mut retire = false;
        let mut holds = None;
        while let Some(mut round) = next_round.take() {
            let end = match self.see_round_through(key, &owner, &mut round, &mut second).await {
                RoundEnd::Holds(token) => {
                    holds = Some(token);
                    End::Acquired { token }
                }
                RoundEnd::Dropped(token) => {
                    retire = true;
                    End::Acquired { token }
                }
                RoundEnd::Over { end, next } => {
                    next_round = next;
                    end
                }
            };
            retire |= matches!(end, End::Abandoned);
            let join_upper = round.join_upper.unwrap_or(round.join_lower);
            let (join_lower, calls) = (round.join_lower, round.calls);
            self.log.episodes.push(Episode { client: self.id, key, join_lower, join_upper, calls, end });
        }
        if retire || opened_second && second.is_none() {
            self.generation += 1;
        }
        if let Some(token) = holds {
            let work = if self.stalls {
                Duration::from_millis(STALL_LEASE_MS + 100)
            } else {
                Duration::from_micros(self.rng.random_range(0..2_000))
            };
            tokio::time::sleep(work).await;
            let success = self.rng.random_bool(0.2);
            let keep = success && self.rng.random_bool(0.3);
            let mut args = vec!["LOCK.UNLOCK".into(), k.clone(), owner.clone(), token.to_string()];
            if success {
                args.extend(["SUCCESS".into(), "RESULT".into(), format!("t{token}")]);
                if keep {
                    args.extend(["KEEP".into(), self.rng.random_range(1..10u64).to_string()]);
                }
            } else {
                args.extend(["FAILURE".into(), "REASON".into(), format!("f{token}")]);
            }
            let unlock = self.call(&args, None).await;
            self.log.holdings.push(Holding {
                client: self.id,
                owner,
                key,
                token,
                end: unlock.send,
                unlock_recv: unlock.recv,
                success,
                keep,
                reply: unlock.answer,
                dropped: false,
                stalled: self.stalls,
                lease: Duration::from_millis(self.px()),
            });
        }
    }

    /// Waits in line until the round ends: a grant, a DONE, or giving up (a CANCEL, and a NOQUEUE
    /// TRY to learn a grant or DONE that raced it). With a second connection, each wait is a WAIT
    /// on both at once.
    async fn see_round_through(
        &mut self,
        key: usize,
        owner: &str,
        round: &mut Round,
        second: &mut Option<SecondConnection>,
    ) -> RoundEnd {
        let k = key_name(self.run, key);
        let px = self.px().to_string();
        let mut answer = round.calls.last().expect("a round starts with a call").answer.clone();
        let mut next_round_call = None;
        let mut nils = 0;
        let give_up_after = self.rng.random_range(2..12);
        loop {
            match answer {
                Answer::Acquired(token) => return RoundEnd::Holds(token),
                Answer::Done { finisher, result } => {
                    let next = next_round_call.map(Round::starting_with);
                    return RoundEnd::Over { end: End::Done { finisher, result }, next };
                }
                Answer::Held { token, closed } => {
                    // Granted over a connection that closed at once: it held the lock until then.
                    self.log.holdings.push(Holding {
                        client: self.id,
                        owner: owner.to_owned(),
                        key,
                        token,
                        end: closed,
                        unlock_recv: closed,
                        success: false,
                        keep: false,
                        reply: Answer::Nil,
                        dropped: true,
                        stalled: false,
                        lease: Duration::from_millis(self.px()),
                    });
                    return RoundEnd::Dropped(token);
                }
                Answer::Queued(_) | Answer::Nil => {}
                Answer::Busy | Answer::Int(_) | Answer::Error(_) | Answer::Lost { .. } => {
                    panic!("client {}: unexpected answer {answer:?} after {:#?}", self.id, round.calls)
                }
            }
            if answer == Answer::Nil {
                nils += 1;
            }
            // A round that began with a nil from either round waits on the main connection alone
            // until a reply proves the owner in line: a CANCEL that found nothing before then
            // would prove nothing.
            let in_line = round.join_upper.is_some();
            if in_line && nils >= give_up_after {
                let cancel = self.call(&["LOCK.CANCEL".into(), k.clone(), owner.to_owned()], None).await;
                let send = cancel.send;
                let removed = cancel.answer == Answer::Int(1);
                round.push(cancel);
                if removed {
                    return RoundEnd::Over { end: End::Cancelled { send }, next: None };
                }
                // Not in line any more: granted (as head, not blocked) or told DONE meanwhile. A
                // NOQUEUE TRY tells which.
                let probe = self
                    .call(
                        &["LOCK.TRY".into(), k.clone(), owner.to_owned(), "PX".into(), px.clone(), "NOQUEUE".into()],
                        None,
                    )
                    .await;
                answer = probe.answer.clone();
                round.push(probe);
                if matches!(answer, Answer::Busy) {
                    return RoundEnd::Over { end: End::Vanished, next: None };
                }
                continue;
            }
            let Some(conn) = second.take_if(|_| in_line) else {
                let timeout = Duration::from_millis(self.rng.random_range(1..40));
                match self.wait_or_abandon(key, owner, timeout).await {
                    Ok(call) => {
                        answer = call.answer.clone();
                        round.push(call);
                    }
                    Err(Abandoned { nil, .. }) => {
                        if let Some(call) = nil {
                            round.push(call);
                        }
                        return RoundEnd::Over { end: End::Abandoned, next: None };
                    }
                }
                continue;
            };
            let (main, waited) = self.wait_on_both(key, owner, conn).await;
            self.log.tally.pairs += 1;
            let other = match waited {
                Some((conn, call)) => {
                    *second = Some(conn);
                    call
                }
                None => {
                    // Closed once the main WAIT was granted or told DONE, with whatever the second
                    // connection was told unread. That may have been a DONE from a SUCCESS before
                    // the main WAIT reached the server, which then began a new round: so the
                    // round ends unheard, and the main WAIT's answer is the next round's. That
                    // round may also be this one still (the second connection told the same), so
                    // it may have begun as early as this one did.
                    self.log.tally.closed += 1;
                    self.log.tally.closed_after_grant += usize::from(main.answer.granted().is_some());
                    let next = Round { join_lower: round.join_lower, join_upper: Some(main.recv), calls: vec![main] };
                    return RoundEnd::Over { end: End::Unheard, next: Some(next) };
                }
            };
            match round_ended_by([&main.answer, &other.answer]) {
                Some(which) => {
                    self.log.tally.splits += 1;
                    let [ended, next] = if which == 0 { [main, other] } else { [other, main] };
                    answer = ended.answer.clone();
                    round.push(ended);
                    next_round_call = Some(next);
                }
                None => {
                    // One round: a grant on either connection stands for it.
                    answer = if other.answer.granted().is_some() { &other } else { &main }.answer.clone();
                    round.push(main);
                    round.push(other);
                }
            }
        }
    }

    /// A WAIT on the main connection and, at the same time, one by the same owner on the second
    /// connection, which lags by up to 1.5 ms so that either may reach the server first. With
    /// disconnects the second connection is closed when the main WAIT ends the round (see
    /// [`SecondConnection::wait`]), and the WAITs are longer, so that the round often ends while
    /// both are blocked.
    async fn wait_on_both(
        &mut self,
        key: usize,
        owner: &str,
        second: SecondConnection,
    ) -> (Call, Option<(SecondConnection, Call)>) {
        let k = key_name(self.run, key);
        let close = self.disconnects;
        let timeouts_ms = if close { 20..80 } else { 1..40 };
        let main_timeout = Duration::from_millis(self.rng.random_range(timeouts_ms.clone()));
        let second_timeout = Duration::from_millis(self.rng.random_range(timeouts_ms));
        let lag = Duration::from_micros(self.rng.random_range(0..1_500));
        let main_args = self.wait_args(&k, owner, main_timeout);
        let second_args = self.wait_args(&k, owner, second_timeout);
        let (tell_ended, main_ended) = oneshot::channel();
        let con = &mut self.con;
        let main = async move {
            let call = timed_call(con, &main_args, Some(main_timeout)).await;
            // Unheard once the second WAIT has its reply.
            let _ = tell_ended.send(call.answer.is_final());
            call
        };
        tokio::join!(main, second.wait(&second_args, second_timeout, lag, close, main_ended, &mut self.lookout))
    }

    /// A WAIT, or (in disconnect mode, now and then) a WAIT over a connection of its own that is
    /// closed after a random while: `Err` if no answer had come by then, or if the answer was a
    /// nil (the owner left the line with the connection).
    async fn wait_or_abandon(&mut self, key: usize, owner: &str, timeout: Duration) -> Result<Call, Abandoned> {
        let k = key_name(self.run, key);
        if !self.disconnects || timeout < Duration::from_millis(8) || !self.rng.random_bool(0.1) {
            return Ok(self.wait_call(&k, owner, timeout).await);
        }
        // Closed while certainly still blocked (3 ms before the server's timer can fire), or just
        // after a grant arrived.
        let give_up = Duration::from_micros(self.rng.random_range(0..timeout.as_micros() as u64 - 3_000));
        let args = self.wait_args(&k, owner, timeout);
        let mut conn = Connection::connect(self.addr, SLACK).await.expect("connect");
        let send = Instant::now();
        conn.queue(&args.iter().map(String::as_bytes).collect::<Vec<_>>());
        conn.flush().await.expect("write");
        let reply = conn.read_within(give_up).await;
        let recv = Instant::now();
        let closed = Instant::now();
        drop(conn);
        let what = format!("{} (own connection, closed after {give_up:?})", args.join(" "));
        let answer = match reply {
            Ok(None) => return Err(Abandoned { closed, nil: None }),
            Err(_) => Answer::Error("connection closed".into()),
            // Granted on the connection we are closing: a holding that ends now.
            Ok(Some(reply)) => match answer(&reply) {
                Answer::Acquired(token) => Answer::Held { token, closed },
                // The read may return after `give_up` (a late wake-up finds the reply already
                // there), so the WAIT may have timed out first: not blocked any more, its place
                // was last renewed by this connection, and the close takes it (release on
                // disconnect). The owner has left the line, told nothing.
                Answer::Nil => {
                    self.log.closed_after_nil += 1;
                    let nil = Call { what, send, recv, answer: Answer::Nil, timeout: Some(timeout) };
                    return Err(Abandoned { closed, nil: Some(nil) });
                }
                answer => answer,
            },
        };
        Ok(Call { what, send, recv, answer, timeout: Some(timeout) })
    }

    fn wait_args(&self, key: &str, owner: &str, timeout: Duration) -> [String; 6] {
        [
            "LOCK.WAIT".to_owned(),
            key.to_owned(),
            owner.to_owned(),
            timeout.as_millis().to_string(),
            "PX".to_owned(),
            self.px().to_string(),
        ]
    }

    async fn wait_call(&mut self, key: &str, owner: &str, timeout: Duration) -> Call {
        let args = self.wait_args(key, owner, timeout);
        self.call(&args, Some(timeout)).await
    }
}

// ---------------------------------------------------------------------------------------------
// The checker

struct History {
    episodes: Vec<Episode>,
    holdings: Vec<Holding>,
    /// Connections were closed mid-wait: a grant can then go to a waiter that is gone and pass on
    /// from there, out of sight of the history.
    disconnects: bool,
}

struct Verdicts {
    violations: Vec<String>,
    /// Pairs of grants whose FIFO order was certain, and (waiter, UNLOCK) pairs checked.
    fifo_pairs: usize,
    line_checks: usize,
}

impl Verdicts {
    fn fail(&mut self, text: String) {
        if self.violations.len() < 50 {
            self.violations.push(text);
        }
    }
}

fn result_token(result: &Option<String>) -> Option<u64> {
    result.as_deref()?.strip_prefix('t')?.parse().ok()
}

/// A holding from when its owner learnt of it: its first ACQUIRED reply with the token, on
/// whichever connection told it first (one grant told on several connections is one holding).
struct Span<'a> {
    holding: &'a Holding,
    start: Instant,
    /// When the last call answered with the grant was sent: its lease started no earlier.
    asked: Instant,
}

impl Span<'_> {
    /// Until when the holder certainly had the lock: to its UNLOCK (or close), and no longer than
    /// its lease. The server granted or renewed the lease after each call that was answered with
    /// it was sent, so counting it from the last such send is safe whatever the delivery delay;
    /// a grant whose lease had already ended when it was sent then overlaps the next holding.
    fn held_until(&self) -> Instant {
        self.holding.end.min(self.asked + self.holding.lease - SERVER_CLOCK_GRAIN)
    }
}

/// Evidence that the episode's owner was still in line (never having left since it joined) at
/// some moment after `after`, when the lock's previous holding had token `token`.
fn still_in_line_after(episode: &Episode, after: Instant, token: u64) -> Option<String> {
    match &episode.end {
        End::Acquired { token: granted } if *granted > token => {
            return Some(format!("it was granted later, with token {granted}"));
        }
        End::Done { result, .. } if result_token(result).is_some_and(|t| t > token) => {
            return Some(format!("it was told DONE by the later holding {result:?}"));
        }
        End::Cancelled { send } if *send > after => return Some("its CANCEL, sent later, removed it".into()),
        _ => {}
    }
    episode
        .calls
        .iter()
        .find(|call| call.answer == Answer::Nil && call.timeout.is_some_and(|t| call.send + t > after))
        .map(|call| {
            format!("its WAIT sent {:?} later timed out (nil) after that", call.send.saturating_duration_since(after))
        })
}

fn check(history: &History, start: Instant) -> Verdicts {
    let mut v = Verdicts { violations: Vec::new(), fifo_pairs: 0, line_checks: 0 };
    let at = |t: Instant| format!("{:.3}ms", t.saturating_duration_since(start).as_secs_f64() * 1e3);

    // Every WAIT answered once, in time; a nil never before its timeout.
    for episode in &history.episodes {
        for call in &episode.calls {
            if let Some(timeout) = call.timeout {
                let took = call.recv - call.send;
                if call.answer == Answer::Nil && took < timeout {
                    v.fail(format!("{}: nil after {took:?}, before its timeout {timeout:?}", call.what));
                }
                if took > timeout + SLACK {
                    v.fail(format!("{}: answered after {took:?} (timeout {timeout:?})", call.what));
                }
            }
            if let Answer::Error(e) = &call.answer {
                v.fail(format!("{} at {}: error {e}", call.what, at(call.send)));
            }
            // One round has one outcome, on however many connections it was told.
            let agrees = match (&episode.end, &call.answer) {
                (End::Acquired { token }, Answer::Acquired(told) | Answer::Held { token: told, .. }) => told == token,
                (End::Done { finisher, result }, Answer::Done { finisher: by, result: told }) => {
                    by == finisher && told == result
                }
                (_, answer) => !answer.is_final(),
            };
            if !agrees {
                v.fail(format!(
                    "c{} on k{}: {} answered {:?} in a round that ended {:?}",
                    episode.client, episode.key, call.what, call.answer, episode.end
                ));
            }
        }
        if matches!(episode.end, End::Vanished) {
            v.fail(format!("c{} on k{}: left the line without being told anything", episode.client, episode.key));
        }
    }

    for key in 0..KEYS {
        let holdings: Vec<&Holding> = history.holdings.iter().filter(|h| h.key == key).collect();
        let episodes: Vec<&Episode> = history.episodes.iter().filter(|e| e.key == key).collect();
        let by_token: HashMap<u64, &Holding> = holdings.iter().map(|h| (h.token, *h)).collect();
        // Each owner's first reply that told it of each grant, and its last call answered with it.
        let mut told: HashMap<(usize, u64), (Instant, Instant)> = HashMap::new();
        for e in &episodes {
            for call in &e.calls {
                if let Some(token) = call.answer.granted() {
                    let (first_recv, last_send) = told.entry((e.client, token)).or_insert((call.recv, call.send));
                    *first_recv = (*first_recv).min(call.recv);
                    *last_send = (*last_send).max(call.send);
                }
            }
        }
        let mut spans = Vec::new();
        for h in &holdings {
            match told.get(&(h.client, h.token)) {
                Some(&(start, asked)) => spans.push(Span { holding: h, start, asked }),
                None => v.fail(format!("k{key}: c{} ended token {}, which no reply granted it", h.client, h.token)),
            }
        }
        spans.sort_by_key(|span| span.start);

        // The lock is never lost: every holder's UNLOCK works, but one sent after the lease ended.
        for h in holdings.iter().filter(|h| !h.dropped) {
            let refused = matches!(&h.reply, Answer::Error(e) if e.starts_with("NOTHOLDER") || e.starts_with("NOLOCK"));
            if h.stalled && !refused {
                v.fail(format!(
                    "k{key}: c{} token {} UNLOCK after its lease answered {:?}",
                    h.client, h.token, h.reply
                ));
            }
            if !h.stalled && !matches!(h.reply, Answer::Int(_)) {
                v.fail(format!("k{key}: c{} token {} UNLOCK answered {:?}", h.client, h.token, h.reply));
            }
        }
        // Mutual exclusion and increasing tokens.
        for pair in spans.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.start < a.held_until() {
                v.fail(format!(
                    "k{key}: c{} (token {}) acquired at {} while c{} (token {}) held it until {}",
                    b.holding.client,
                    b.holding.token,
                    at(b.start),
                    a.holding.client,
                    a.holding.token,
                    at(a.held_until())
                ));
            }
            if b.holding.token <= a.holding.token {
                v.fail(format!("k{key}: token {} granted after token {}", b.holding.token, a.holding.token));
            }
        }
        // FIFO: certainly-earlier joiners get smaller tokens.
        let granted: Vec<(&Episode, u64)> = episodes
            .iter()
            .filter_map(|e| match e.end {
                End::Acquired { token } => Some((*e, token)),
                _ => None,
            })
            .collect();
        for (x, tx) in &granted {
            for (y, ty) in &granted {
                if x.join_upper < y.join_lower {
                    v.fifo_pairs += 1;
                }
                if x.join_upper < y.join_lower && tx > ty {
                    v.fail(format!(
                        "k{key}: FIFO: c{} joined by {} but got token {tx}; c{} joined at {} and got {ty} first",
                        x.client,
                        at(x.join_upper),
                        y.client,
                        at(y.join_lower)
                    ));
                }
            }
        }
        // After each UNLOCK, nobody who was certainly in line may remain there, except that a
        // FAILURE answered 1 hands the lock to the head (checked by FIFO above).
        for h in holdings.iter().filter(|h| !h.dropped && !h.stalled) {
            let handed_off = !h.success && h.reply == Answer::Int(1);
            if handed_off && history.disconnects {
                continue;
            }
            if handed_off {
                // Somebody got the next grant, and it had joined before the hand-off.
                let next = granted.iter().filter(|(_, t)| *t > h.token).min_by_key(|(_, t)| *t);
                match next {
                    None => v.fail(format!("k{key}: FAILURE of token {} handed off to nobody", h.token)),
                    Some((e, t)) if e.join_lower > h.unlock_recv => v.fail(format!(
                        "k{key}: FAILURE of token {} handed off (token {t}) to c{}, which joined only after",
                        h.token, e.client
                    )),
                    Some(_) => {}
                }
                continue;
            }
            for e in &episodes {
                if e.join_upper >= h.end {
                    continue;
                }
                v.line_checks += 1;
                if let Some(evidence) = still_in_line_after(e, h.unlock_recv, h.token) {
                    v.fail(format!(
                        "k{key}: c{} was in line (joined by {}) when c{} unlocked token {} with {} (answer {:?}); yet {evidence}",
                        e.client,
                        at(e.join_upper),
                        h.client,
                        h.token,
                        if h.success { "SUCCESS" } else { "FAILURE" },
                        h.reply
                    ));
                }
            }
            if h.success
                && let Answer::Int(told) = h.reply
            {
                let certainly = episodes
                    .iter()
                    .filter(|e| e.join_upper < h.end)
                    .filter(|e| matches!(&e.end, End::Done { result, .. } if result_token(result) == Some(h.token)))
                    .count();
                if (told as usize) < certainly {
                    v.fail(format!(
                        "k{key}: SUCCESS of token {} told {told} waiters, {certainly} were in line",
                        h.token
                    ));
                }
            }
        }
        // Every DONE names a SUCCESS that happened, with its result, and that this owner could
        // have been told about.
        for e in &episodes {
            let End::Done { finisher, result } = &e.end else {
                continue;
            };
            let source = result_token(result).and_then(|t| by_token.get(&t));
            match source {
                None => v.fail(format!("k{key}: c{} told DONE {result:?} by {finisher}: no such SUCCESS", e.client)),
                Some(h) => {
                    if !h.success || h.owner != *finisher {
                        v.fail(format!(
                            "k{key}: c{} told DONE by {finisher} {result:?}, but that holding was {h:?}",
                            e.client
                        ));
                    }
                    if e.calls.iter().any(|call| matches!(call.answer, Answer::Done { .. }) && call.recv < h.end) {
                        v.fail(format!("k{key}: c{} told DONE before the SUCCESS was sent", e.client));
                    }
                    if !h.keep && e.join_lower > h.unlock_recv {
                        v.fail(format!(
                            "k{key}: c{} joined at {}, after the SUCCESS (no KEEP) of token {} was answered, yet was told DONE",
                            e.client,
                            at(e.join_lower),
                            h.token
                        ));
                    }
                }
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Running it

async fn connect(addr: std::net::SocketAddr) -> MultiplexedConnection {
    baton_testkit::redis_crate::connect(&format!("redis://{addr}/"), Duration::from_secs(60)).await.expect("connect")
}

/// Every round and holding as the clients saw them, rounds by join time, in ms since `start`.
fn dump(history: &History, start: Instant) -> String {
    let ms = |t: Instant| t.saturating_duration_since(start).as_secs_f64() * 1e3;
    let mut episodes: Vec<&Episode> = history.episodes.iter().collect();
    episodes.sort_by_key(|e| e.join_lower);
    let mut out = String::new();
    for e in episodes {
        let (client, key, lower, upper) = (e.client, e.key, ms(e.join_lower), ms(e.join_upper));
        out += &format!("round c{client} k{key} joined {lower:.3}..{upper:.3}, ended {:?}\n", e.end);
        for c in &e.calls {
            out += &format!("    {} sent {:.3} answered {:.3}: {:?}\n", c.what, ms(c.send), ms(c.recv), c.answer);
        }
    }
    for h in &history.holdings {
        out += &format!("holding {h:?}, ended {:.3}\n", ms(h.end));
    }
    out
}

async fn run_history(shards: usize, disconnects: bool) {
    // The server's own account (grants, releases, DONEs at debug level) on stderr, to read
    // beside a dump: each run names its keys after its shard count.
    if std::env::var_os("BATON_HISTORY_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("baton=debug").with_writer(std::io::stderr).try_init();
    }
    let scale: usize = std::env::var("BATON_HISTORY_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let seed = history_run::seed();
    let mut config = Config::default_for_tests();
    config.shards = Some(shards);
    let server = RunningServer::start(config).await.expect("server starts");
    let addr = server.addr;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let client = Client {
            id,
            run: shards,
            addr,
            generation: 0,
            disconnects,
            con: connect(addr).await,
            lookout: connect(addr).await,
            stalls: false,
            rng: StdRng::seed_from_u64(seed ^ (id as u64 * 0x9E37_79B9)),
            log: ClientLog::default(),
        };
        tasks.push(tokio::spawn(client.run(EPISODES_PER_CLIENT * scale)));
    }
    let budget = Duration::from_secs(60 * scale as u64);
    let mut history = History { episodes: Vec::new(), holdings: Vec::new(), disconnects };
    let mut two = TwoConnectionTally::default();
    let mut closed_after_nil = 0;
    for task in tasks {
        let log = tokio::time::timeout(budget, task)
            .await
            .unwrap_or_else(|_| {
                panic!("seed {seed}: a client did not finish within {budget:?} (a WAIT never answered?)")
            })
            .expect("client task");
        history.episodes.extend(log.episodes);
        history.holdings.extend(log.holdings);
        closed_after_nil += log.closed_after_nil;
        two.pairs += log.tally.pairs;
        two.splits += log.tally.splits;
        two.closed += log.tally.closed;
        two.closed_after_grant += log.tally.closed_after_grant;
    }
    let elapsed = start.elapsed();

    // Nothing left behind: every key free, nobody in line. With disconnects a place left by a
    // WAIT closed just as it timed out lives on for its queue lease (and may have been granted the
    // lock): give those their lease to lapse.
    let mut con = connect(addr).await;
    let grace = if disconnects { Duration::from_millis(2 * DISCONNECT_LEASE_MS + 2_000) } else { Duration::ZERO };
    let settle_from = Instant::now();
    let mut leftovers = Vec::new();
    loop {
        leftovers.clear();
        for key in 0..KEYS {
            let info = result_to_resp(query(&mut con, &["LOCK.INFO".to_owned(), key_name(shards, key)]).await);
            if !info.field("holder").is_nil() || info.field("waiters") != Resp::Int(0) {
                leftovers.push(format!("k{key}: holder {}, queue {}", info.field("holder"), info.field("queue")));
            }
        }
        if leftovers.is_empty() || settle_from.elapsed() >= grace {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(leftovers.is_empty(), "seed {seed}: left behind at the end: {leftovers:?}");
    let settled_in = settle_from.elapsed();
    drop(con);
    server.stop().await.expect("server stops");

    let verdicts = check(&history, start);
    let calls: usize = history.episodes.iter().map(|e| e.calls.len()).sum::<usize>() + history.holdings.len();
    let waits = history.episodes.iter().flat_map(|e| &e.calls).filter(|c| c.timeout.is_some()).count();
    let timed_out = history.episodes.iter().flat_map(|e| &e.calls).filter(|c| c.answer == Answer::Nil).count();
    let done = history.episodes.iter().filter(|e| matches!(e.end, End::Done { .. })).count();
    let cancelled = history.episodes.iter().filter(|e| matches!(e.end, End::Cancelled { .. })).count();
    let failures = history.holdings.iter().filter(|h| !h.success).count();
    // WAITs answered ACQUIRED at or after their timeout: the grant raced the timeout and won.
    let raced = history
        .episodes
        .iter()
        .flat_map(|e| &e.calls)
        .filter(|c| matches!(c.answer, Answer::Acquired(_)) && c.timeout.is_some_and(|t| c.recv - c.send >= t))
        .count();
    let handoffs = history.holdings.iter().filter(|h| !h.success && h.reply == Answer::Int(1)).count();
    let abandoned = history.episodes.iter().filter(|e| matches!(e.end, End::Abandoned)).count();
    let dropped = history.holdings.iter().filter(|h| h.dropped).count();
    println!(
        "history shards={shards} disconnects={disconnects} seed={seed}: {CLIENTS} clients, {KEYS} keys, {} episodes, {calls} calls ({waits} WAITs, \
         {timed_out} timed out), {} holdings ({failures} FAILURE, {handoffs} handed off), {done} told DONE, \
         {cancelled} cancelled, {abandoned} WAITs abandoned by closing ({closed_after_nil} just after a nil), {dropped} holdings ended by closing, \
         {raced} grants at the timeout; on two connections: {} WAIT pairs, {} rounds split by a DONE, {} second connections \
         closed mid-wait ({} after the main one was granted); end state settled in {settled_in:?}; {} FIFO pairs and {} \
         waiter/UNLOCK pairs checked; in {elapsed:?}; {} violations",
        history.episodes.len(),
        history.holdings.len(),
        two.pairs,
        two.splits,
        two.closed,
        two.closed_after_grant,
        verdicts.fifo_pairs,
        verdicts.line_checks,
        verdicts.violations.len()
    );
    history_run::assert_no_violations(
        &verdicts.violations,
        &format!("seed {seed} (shards {shards})"),
        &format!("history-{shards}-{seed}.txt"),
        || dump(&history, start),
    );
    assert!(history.holdings.len() > CLIENTS, "the workload made too few holdings to mean anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_one_shard() {
    run_history(1, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_sixty_four_shards() {
    run_history(64, false).await;
}

/// Now and then a WAIT runs on a connection of its own that is closed before, at or just after
/// its timeout (sometimes right after a grant arrived): abandoned waiters must never be granted
/// for good, grants that reach a closing connection must pass on, and the lock is never lost. An
/// owner waiting on two connections has the second closed once the main one is answered: a grant
/// told on both stays with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_with_disconnects() {
    run_history(8, true).await;
}

/// The checker must catch what it claims to: feed it broken histories.
#[test]
fn checker_catches_broken_histories() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let caught = |history: &History, what: &str| check(history, t0).violations.iter().any(|v| v.contains(what));
    let history = |episodes, holdings| History { episodes, holdings, disconnects: false };
    let call = |send: u64, recv: u64, answer: Answer| Call {
        what: "x".into(),
        send: ms(send),
        recv: ms(recv),
        answer,
        timeout: None,
    };
    let wait = |send: u64, recv: u64, timeout: u64, answer: Answer| Call {
        timeout: Some(Duration::from_millis(timeout)),
        ..call(send, recv, answer)
    };
    let done = |finisher: usize, token: u64| Answer::Done {
        finisher: owner_name(finisher),
        result: Some(format!("t{token}")),
    };
    let told_done =
        |finisher: usize, token: u64| End::Done { finisher: owner_name(finisher), result: Some(format!("t{token}")) };
    let holding = |client: usize, token, end, success, reply| Holding {
        client,
        owner: owner_name(client),
        key: 0,
        token,
        end: ms(end),
        unlock_recv: ms(end + 1),
        success,
        keep: false,
        reply,
        dropped: false,
        stalled: false,
        lease: Duration::from_millis(LEASE_MS),
    };
    // An owner granted `token` at once, by a TRY answered at `at`.
    let took = |client, token, at: u64| Episode {
        client,
        key: 0,
        join_lower: ms(at),
        join_upper: ms(at),
        calls: vec![call(at, at, Answer::Acquired(token))],
        end: End::Acquired { token },
    };
    // An owner that joined at `join` (QUEUED), then made `calls`, and ended `end`.
    let queued = |client, join: u64, calls: Vec<Call>, end| Episode {
        client,
        key: 0,
        join_lower: ms(join),
        join_upper: ms(join + 1),
        calls: [vec![call(join, join + 1, Answer::Queued(1))], calls].concat(),
        end,
    };
    // ... and was granted `token` at `at`.
    let waited = |client, join: u64, token, at: u64| {
        queued(client, join, vec![wait(join + 1, at, 100, Answer::Acquired(token))], End::Acquired { token })
    };
    // Overlapping holders.
    let overlap = history(
        vec![took(1, 10, 0), took(2, 11, 20)],
        vec![holding(1, 10, 50, false, Answer::Int(0)), holding(2, 11, 60, false, Answer::Int(0))],
    );
    assert!(caught(&overlap, "while"));
    // Tokens going down.
    let down = history(
        vec![took(1, 10, 0), took(2, 9, 20)],
        vec![holding(1, 10, 5, false, Answer::Int(0)), holding(2, 9, 30, false, Answer::Int(0))],
    );
    assert!(caught(&down, "granted after"));
    // FIFO broken: c2 joined first, c3 got the lock first.
    let fifo = history(
        vec![waited(2, 10, 12, 100), waited(3, 20, 11, 50)],
        vec![holding(3, 11, 60, false, Answer::Int(1)), holding(2, 12, 110, false, Answer::Int(0))],
    );
    assert!(caught(&fifo, "FIFO"));
    // A SUCCESS that leaves a waiter in line, which is later granted.
    let after_done = history(
        vec![took(1, 11, 0), waited(2, 10, 12, 100)],
        vec![holding(1, 11, 50, true, Answer::Int(0)), holding(2, 12, 110, false, Answer::Int(0))],
    );
    assert!(caught(&after_done, "was in line"));
    // A FAILURE answered "released" while somebody waited.
    let lost_wakeup = history(
        vec![took(1, 11, 0), waited(2, 10, 12, 100)],
        vec![holding(1, 11, 50, false, Answer::Int(0)), holding(2, 12, 110, false, Answer::Int(0))],
    );
    assert!(caught(&lost_wakeup, "was in line"));
    // A DONE nobody sent.
    let phantom = history(vec![queued(2, 10, vec![wait(11, 20, 100, done(1, 99))], told_done(1, 99))], vec![]);
    assert!(caught(&phantom, "no such SUCCESS"));
    // An owner that left the line without being told anything: its CANCEL found nothing, and
    // its NOQUEUE TRY then saw someone else hold the lock.
    let vanished = history(
        vec![
            took(1, 10, 0),
            queued(2, 10, vec![call(20, 21, Answer::Int(0)), call(22, 23, Answer::Busy)], End::Vanished),
        ],
        vec![holding(1, 10, 50, false, Answer::Int(0))],
    );
    assert!(caught(&vanished, "c2 on k0: left the line without being told anything"));
    // A lost lock.
    let lost = history(vec![took(1, 10, 0)], vec![holding(1, 10, 5, true, Answer::Error("NOTHOLDER".into()))]);
    assert!(caught(&lost, "UNLOCK answered"));
    // A back-dated grant: c1 stalled past its 600 ms lease; c2 was granted 1 ms after c1's own
    // grant, as if c1's lease had ended before it was even sent.
    let stalled = |client, token, end| Holding {
        stalled: true,
        lease: Duration::from_millis(STALL_LEASE_MS),
        reply: Answer::Error("NOTHOLDER".into()),
        ..holding(client, token, end, false, Answer::Nil)
    };
    let back_dated = history(
        vec![took(1, 10, 0), took(2, 11, 1)],
        vec![stalled(1, 10, 750), holding(2, 11, 20, false, Answer::Int(0))],
    );
    assert!(caught(&back_dated, "while"));
    // ... whereas a hand-off once the lease ran out is fine, and the late UNLOCK must be refused.
    let expired = history(
        vec![took(1, 10, 0), took(2, 11, 601)],
        vec![stalled(1, 10, 750), holding(2, 11, 620, false, Answer::Int(0))],
    );
    assert_eq!(check(&expired, t0).violations, Vec::<String>::new());
    let late_unlock_worked =
        history(vec![took(1, 10, 0)], vec![Holding { reply: Answer::Int(0), ..stalled(1, 10, 750) }]);
    assert!(caught(&late_unlock_worked, "after its lease"));
    // And a clean history passes.
    let clean = history(
        vec![took(1, 11, 0), waited(2, 10, 12, 60), waited(3, 20, 13, 80)],
        vec![
            holding(1, 11, 50, false, Answer::Int(1)),
            holding(2, 12, 70, false, Answer::Int(1)),
            holding(3, 13, 90, false, Answer::Int(0)),
        ],
    );
    assert_eq!(check(&clean, t0).violations, Vec::<String>::new());

    // Owners on two connections. c1 hands the lock on at 50 to c2, which waits on both of its
    // connections and is told the grant on both: one holding, from the first ACQUIRED. c2 ends it
    // with SUCCESS at 60. c3 is told DONE on its second connection; its main WAIT, which the
    // server ran after that DONE, began a new round: a nil, then a grant of the free lock.
    let c2_told_on_both = |second_recv| {
        queued(
            2,
            10,
            vec![wait(30, 52, 40, Answer::Acquired(11)), wait(31, second_recv, 40, Answer::Acquired(11))],
            End::Acquired { token: 11 },
        )
    };
    let c3_told_done = |done_recv| queued(3, 12, vec![wait(41, done_recv, 30, done(2, 11))], told_done(2, 11));
    let c3_next_round = Episode {
        client: 3,
        key: 0,
        join_lower: ms(40),
        join_upper: ms(77),
        calls: vec![wait(40, 75, 30, Answer::Nil), wait(76, 77, 30, Answer::Acquired(12))],
        end: End::Acquired { token: 12 },
    };
    let c1_c2_holdings = || vec![holding(1, 10, 50, false, Answer::Int(1)), holding(2, 11, 60, true, Answer::Int(1))];
    let two_connections = |second_recv, done_recv| {
        history(
            vec![took(1, 10, 0), c2_told_on_both(second_recv), c3_told_done(done_recv), c3_next_round.clone()],
            [c1_c2_holdings(), vec![holding(3, 12, 80, false, Answer::Int(0))]].concat(),
        )
    };
    assert_eq!(check(&two_connections(51, 61), t0).violations, Vec::<String>::new());
    // Had c2's second connection been told the grant at 40, c2 held the lock while c1 still did.
    assert!(caught(&two_connections(40, 61), "c2 (token 11) acquired at 40.000ms while c1"));
    // A DONE on a second connection before the SUCCESS was sent.
    assert!(caught(&two_connections(51, 55), "told DONE before the SUCCESS"));
    // Had c3's nil been of its first round (the server kept it in line after the SUCCESS that told
    // it DONE), it would have been in line after that SUCCESS.
    let unsplit = history(
        vec![
            took(1, 10, 0),
            c2_told_on_both(51),
            queued(3, 12, vec![wait(40, 75, 30, Answer::Nil), wait(41, 61, 30, done(2, 11))], told_done(2, 11)),
        ],
        c1_c2_holdings(),
    );
    assert!(caught(&unsplit, "c3 was in line"));
    // One round told two different grants on its two connections.
    let two_grants = history(
        vec![queued(
            2,
            10,
            vec![wait(30, 52, 40, Answer::Acquired(11)), wait(31, 53, 40, Answer::Acquired(12))],
            End::Acquired { token: 11 },
        )],
        vec![holding(2, 11, 60, false, Answer::Int(0))],
    );
    assert!(caught(&two_grants, "in a round that ended"));
    // c2 queued at 10 and waited on both connections; the second, closed once the main WAIT was
    // granted, may have been told DONE by c1's SUCCESS at 50 before the main WAIT ran: that grant
    // is a new round's (which may still have begun at 10), and the first round ended unheard.
    // Recorded as one round, it is caught like any grant after a SUCCESS (`after_done` above).
    let unheard = history(
        vec![
            took(1, 11, 0),
            queued(2, 10, vec![], End::Unheard),
            Episode {
                client: 2,
                key: 0,
                join_lower: ms(10),
                join_upper: ms(70),
                calls: vec![wait(30, 70, 40, Answer::Acquired(12))],
                end: End::Acquired { token: 12 },
            },
        ],
        vec![holding(1, 11, 50, true, Answer::Int(0)), holding(2, 12, 80, false, Answer::Int(0))],
    );
    assert_eq!(check(&unheard, t0).violations, Vec::<String>::new());
}
