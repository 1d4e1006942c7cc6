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
//! Runs with 1 shard and with 64 shards. `BATON_HISTORY_SCALE=n` multiplies the episodes per
//! client (default 1: a few seconds); `BATON_HISTORY_SEED` replays a run.

// A test binary has no outside users: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use baton::config::Config;
use baton::server::RunningServer;
use baton_testkit::Resp;
use baton_testkit::client::Connection;
use baton_testkit::redis_crate::{query, result_to_resp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::aio::MultiplexedConnection;

const KEYS: usize = 3;
const CLIENTS: usize = 32;
const EPISODES_PER_CLIENT: usize = 100;
/// PX of every TRY/WAIT: long enough that no place and no holding lapses during a run.
const LEASE_MS: u64 = 20_000;
/// PX with disconnects: a WAIT closed just as it timed out leaves a place behind (by design it is
/// kept for the queue lease), which may even be granted the lock; it must not stall a key long.
const DISCONNECT_LEASE_MS: u64 = 2_000;
/// How late an answer may be on a loaded CI machine before we call the WAIT unanswered.
const SLACK: Duration = Duration::from_secs(5);
/// PX of an episode whose holder stalls past its lease (it UNLOCKs 100 ms after).
const STALL_LEASE_MS: u64 = 600;
/// Leases end on the server's whole-millisecond clock, so one may end up to 1 ms before PX has
/// passed since the grant.
const SERVER_CLOCK_GRAIN: Duration = Duration::from_millis(1);

fn key_name(key: usize) -> String {
    format!("hist:k{key}")
}

fn owner_name(client: usize) -> String {
    format!("c{client}")
}

// ---------------------------------------------------------------------------------------------
// What the clients record

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Acquired(u64),
    Queued(i64),
    Busy,
    Done {
        finisher: String,
        result: Option<String>,
    },
    Nil,
    Int(i64),
    Error(String),
    /// ACQUIRED over a connection that the client then closed at `closed`.
    Held {
        token: u64,
        recv: Instant,
        closed: Instant,
    },
}

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
        recv: Instant,
    },
    Done {
        finisher: String,
        result: Option<String>,
        recv: Instant,
    },
    /// Gave up: CANCEL removed it from the line (sent at `send`).
    Cancelled {
        send: Instant,
    },
    /// Not in line and not told anything (NOQUEUE after a CANCEL that found nothing).
    Vanished,
    /// Its connection closed while its WAIT was blocked.
    Abandoned,
}

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

#[derive(Debug, Clone)]
struct Holding {
    client: usize,
    owner: String,
    key: usize,
    token: u64,
    start: Instant,
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
    /// When the call that answered ACQUIRED was sent: its lease started no earlier.
    asked: Instant,
}

impl Holding {
    /// Until when the holder certainly had the lock: to its UNLOCK (or close), and no longer than
    /// its lease. The lease runs from the grant, which came after the call was sent, so counting
    /// it from the send is safe whatever the delivery delay; a grant whose lease had already
    /// ended when it was sent then overlaps the next holding.
    fn held_until(&self) -> Instant {
        self.end.min(self.asked + self.lease - SERVER_CLOCK_GRAIN)
    }
}

#[derive(Default)]
struct ClientLog {
    episodes: Vec<Episode>,
    holdings: Vec<Holding>,
}

/// A reply as the history records it (either client's reply, as `Resp`).
fn answer(reply: &Resp) -> Answer {
    let text = |item: &Resp| match item {
        Resp::Bulk(_) | Resp::Simple(_) => Some(item.text()),
        _ => None,
    };
    match reply {
        Resp::Error(error) => Answer::Error(error.clone()),
        reply if reply.is_nil() => Answer::Nil,
        Resp::Int(n) => Answer::Int(*n),
        Resp::Array(items) => match (items.first().and_then(text).as_deref(), items.get(1)) {
            (Some("ACQUIRED"), Some(Resp::Int(t))) => Answer::Acquired(*t as u64),
            (Some("QUEUED"), Some(Resp::Int(p))) => Answer::Queued(*p),
            (Some("BUSY"), _) => Answer::Busy,
            (Some("DONE"), Some(finisher)) => {
                Answer::Done { finisher: text(finisher).unwrap_or_default(), result: items.get(2).and_then(text) }
            }
            _ => Answer::Error(format!("unexpected reply {items:?}")),
        },
        other => Answer::Error(format!("unexpected reply {other:?}")),
    }
}

struct Client {
    id: usize,
    addr: std::net::SocketAddr,
    /// Bumped whenever a connection of this client is closed mid-wait: a new owner id from then.
    generation: u32,
    /// Now and then a WAIT goes over a connection of its own that is closed before, at or just
    /// after its timeout.
    disconnects: bool,
    con: MultiplexedConnection,
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
        let send = Instant::now();
        let reply = query(&mut self.con, args).await;
        let recv = Instant::now();
        Call { what: args.join(" "), send, recv, answer: answer(&result_to_resp(reply)), timeout }
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
    /// "work" and report SUCCESS or FAILURE.
    async fn episode(&mut self, key: usize) {
        let k = key_name(key);
        let owner = format!("{}.{}", owner_name(self.id), self.generation);
        self.stalls = self.rng.random_bool(0.03);
        let px = self.px().to_string();
        let mut calls = Vec::new();
        let first = if self.rng.random_bool(0.7) {
            self.call(&["LOCK.TRY".into(), k.clone(), owner.clone(), "PX".into(), px.clone()], None).await
        } else {
            let timeout = Duration::from_millis(self.rng.random_range(1..40));
            match self.wait_or_abandon(key, &owner, timeout).await {
                Ok(call) => call,
                Err(at) => {
                    let end = End::Abandoned;
                    self.log.episodes.push(Episode {
                        client: self.id,
                        key,
                        join_lower: at,
                        join_upper: at,
                        calls: vec![],
                        end,
                    });
                    self.generation += 1;
                    return;
                }
            }
        };
        let (join_lower, join_upper) = (first.send, first.recv);
        let mut answer = first.answer.clone();
        calls.push(first);
        let mut nils = 0;
        let give_up_after = self.rng.random_range(2..12);
        let end = loop {
            match answer {
                Answer::Acquired(token) => break End::Acquired { token, recv: calls.last().expect("a call").recv },
                Answer::Done { finisher, result } => {
                    break End::Done { finisher, result, recv: calls.last().expect("a call").recv };
                }
                Answer::Queued(_) | Answer::Nil => {
                    if matches!(answer, Answer::Nil) {
                        nils += 1;
                    }
                    if nils >= give_up_after {
                        let cancel = self.call(&["LOCK.CANCEL".into(), k.clone(), owner.clone()], None).await;
                        let send = cancel.send;
                        let removed = cancel.answer == Answer::Int(1);
                        calls.push(cancel);
                        if removed {
                            break End::Cancelled { send };
                        }
                        // Not in line any more: granted (as head, not blocked) or told DONE
                        // meanwhile. A NOQUEUE TRY tells which.
                        let probe = self
                            .call(
                                &[
                                    "LOCK.TRY".into(),
                                    k.clone(),
                                    owner.clone(),
                                    "PX".into(),
                                    px.clone(),
                                    "NOQUEUE".into(),
                                ],
                                None,
                            )
                            .await;
                        answer = probe.answer.clone();
                        calls.push(probe);
                        if matches!(answer, Answer::Busy) {
                            break End::Vanished;
                        }
                        continue;
                    }
                    let timeout = Duration::from_millis(self.rng.random_range(1..40));
                    match self.wait_or_abandon(key, &owner, timeout).await {
                        Ok(call) => {
                            answer = call.answer.clone();
                            calls.push(call);
                        }
                        Err(_) => break End::Abandoned,
                    }
                }
                Answer::Held { token, recv, closed } => {
                    // Granted over a connection that closed at once: it held the lock until then.
                    let asked = calls.last().expect("a call").send;
                    self.log.holdings.push(Holding {
                        asked,
                        client: self.id,
                        owner: owner.clone(),
                        key,
                        token,
                        start: recv,
                        end: closed,
                        unlock_recv: closed,
                        success: false,
                        keep: false,
                        reply: Answer::Nil,
                        dropped: true,
                        stalled: false,
                        lease: Duration::from_millis(self.px()),
                    });
                    break End::Acquired { token, recv };
                }
                Answer::Busy | Answer::Int(_) | Answer::Error(_) => {
                    panic!("client {}: unexpected answer {answer:?} after {calls:#?}", self.id)
                }
            }
        };
        let acquired = match (&end, calls.last()) {
            (_, Some(Call { answer: Answer::Held { .. }, .. })) => None,
            (End::Acquired { token, recv }, Some(call)) => Some((*token, *recv, call.send)),
            _ => None,
        };
        if matches!(end, End::Abandoned) || acquired.is_none() && matches!(end, End::Acquired { .. }) {
            self.generation += 1;
        }
        self.log.episodes.push(Episode { client: self.id, key, join_lower, join_upper, calls, end });
        if let Some((token, start, asked)) = acquired {
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
                start,
                end: unlock.send,
                unlock_recv: unlock.recv,
                success,
                keep,
                reply: unlock.answer,
                dropped: false,
                stalled: self.stalls,
                lease: Duration::from_millis(self.px()),
                asked,
            });
        }
    }

    /// A WAIT, or (in disconnect mode, now and then) a WAIT over a connection of its own that is
    /// closed after a random while: `Err(when it was closed)` if no answer had come by then.
    async fn wait_or_abandon(&mut self, key: usize, owner: &str, timeout: Duration) -> Result<Call, Instant> {
        let k = key_name(key);
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
        let answer = match reply {
            Ok(None) => return Err(closed),
            Err(_) => Answer::Error("connection closed".into()),
            // Granted on the connection we are closing: a holding that ends now.
            Ok(Some(reply)) => match answer(&reply) {
                Answer::Acquired(token) => Answer::Held { token, recv, closed },
                answer => answer,
            },
        };
        Ok(Call { what: args.join(" "), send, recv, answer, timeout: Some(timeout) })
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

/// Evidence that the episode's owner was still in line (never having left since it joined) at
/// some moment after `after`, when the lock's previous holding had token `token`.
fn still_in_line_after(episode: &Episode, after: Instant, token: u64) -> Option<String> {
    match &episode.end {
        End::Acquired { token: granted, .. } if *granted > token => {
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
        }
        if matches!(episode.end, End::Vanished) {
            v.fail(format!("c{} on k{}: left the line without being told anything", episode.client, episode.key));
        }
    }

    for key in 0..KEYS {
        let mut holdings: Vec<&Holding> = history.holdings.iter().filter(|h| h.key == key).collect();
        holdings.sort_by_key(|h| h.start);
        let episodes: Vec<&Episode> = history.episodes.iter().filter(|e| e.key == key).collect();
        let by_token: HashMap<u64, &Holding> = holdings.iter().map(|h| (h.token, *h)).collect();

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
        for pair in holdings.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.start < a.held_until() {
                v.fail(format!(
                    "k{key}: c{} (token {}) acquired at {} while c{} (token {}) held it until {}",
                    b.client,
                    b.token,
                    at(b.start),
                    a.client,
                    a.token,
                    at(a.held_until())
                ));
            }
            if b.token <= a.token {
                v.fail(format!("k{key}: token {} granted after token {}", b.token, a.token));
            }
        }
        // FIFO: certainly-earlier joiners get smaller tokens.
        let granted: Vec<(&Episode, u64)> = episodes
            .iter()
            .filter_map(|e| match e.end {
                End::Acquired { token, .. } => Some((*e, token)),
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
            let End::Done { finisher, result, recv } = &e.end else {
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
                    if *recv < h.end {
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

async fn run_history(shards: usize, disconnects: bool) {
    let scale: usize = std::env::var("BATON_HISTORY_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let seed: u64 =
        std::env::var("BATON_HISTORY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand::rng().random());
    let mut config = Config::default_for_tests();
    config.shards = Some(shards);
    let server = RunningServer::start(config).await.expect("server starts");
    let addr = server.addr;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let con = connect(addr).await;
        let client = Client {
            id,
            addr,
            generation: 0,
            disconnects,
            con,
            stalls: false,
            rng: StdRng::seed_from_u64(seed ^ (id as u64 * 0x9E37_79B9)),
            log: ClientLog::default(),
        };
        tasks.push(tokio::spawn(client.run(EPISODES_PER_CLIENT * scale)));
    }
    let budget = Duration::from_secs(60 * scale as u64);
    let mut history = History { episodes: Vec::new(), holdings: Vec::new(), disconnects };
    for task in tasks {
        let log = tokio::time::timeout(budget, task)
            .await
            .unwrap_or_else(|_| {
                panic!("seed {seed}: a client did not finish within {budget:?} (a WAIT never answered?)")
            })
            .expect("client task");
        history.episodes.extend(log.episodes);
        history.holdings.extend(log.holdings);
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
            let info = result_to_resp(query(&mut con, &["LOCK.INFO".to_owned(), key_name(key)]).await);
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
         {cancelled} cancelled, {abandoned} WAITs abandoned by closing, {dropped} holdings ended by closing, \
         {raced} grants at the timeout, end state settled in {settled_in:?}; {} FIFO pairs and {} waiter/UNLOCK pairs checked; \
         in {elapsed:?}; {} violations",
        history.episodes.len(),
        history.holdings.len(),
        verdicts.fifo_pairs,
        verdicts.line_checks,
        verdicts.violations.len()
    );
    assert!(
        verdicts.violations.is_empty(),
        "seed {seed} (shards {shards}): {} violations:\n{}",
        verdicts.violations.len(),
        verdicts.violations.join("\n")
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
/// for good, grants that reach a closing connection must pass on, and the lock is never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_with_disconnects() {
    run_history(8, true).await;
}

/// The checker must catch what it claims to: feed it broken histories.
#[test]
fn checker_catches_broken_histories() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let call = |send: u64, recv: u64, answer: Answer| Call {
        what: "x".into(),
        send: ms(send),
        recv: ms(recv),
        answer,
        timeout: None,
    };
    let holding = |client: usize, token, start, end, success, reply| Holding {
        client,
        owner: owner_name(client),
        key: 0,
        token,
        start: ms(start),
        end: ms(end),
        unlock_recv: ms(end + 1),
        success,
        keep: false,
        reply,
        dropped: false,
        stalled: false,
        lease: Duration::from_millis(LEASE_MS),
        asked: ms(start),
    };
    let episode = |client, join: u64, end: End| Episode {
        client,
        key: 0,
        join_lower: ms(join),
        join_upper: ms(join + 1),
        calls: vec![call(join, join + 1, Answer::Queued(1))],
        end,
    };
    let acquired = |token, recv| End::Acquired { token, recv: ms(recv) };
    // Overlapping holders.
    let overlap = History {
        episodes: vec![],
        holdings: vec![holding(1, 10, 0, 50, false, Answer::Int(0)), holding(2, 11, 20, 60, false, Answer::Int(0))],
        disconnects: false,
    };
    assert!(check(&overlap, t0).violations.iter().any(|v| v.contains("while")));
    // Tokens going down.
    let down = History {
        episodes: vec![],
        holdings: vec![holding(1, 10, 0, 5, false, Answer::Int(0)), holding(2, 9, 20, 30, false, Answer::Int(0))],
        disconnects: false,
    };
    assert!(check(&down, t0).violations.iter().any(|v| v.contains("granted after")));
    // FIFO broken: c2 joined first, c3 got the lock first.
    let fifo = History {
        episodes: vec![episode(2, 10, acquired(12, 100)), episode(3, 20, acquired(11, 50))],
        holdings: vec![holding(3, 11, 50, 60, false, Answer::Int(1)), holding(2, 12, 100, 110, false, Answer::Int(0))],
        disconnects: false,
    };
    assert!(check(&fifo, t0).violations.iter().any(|v| v.contains("FIFO")));
    // A SUCCESS that leaves a waiter in line, which is later granted.
    let after_done = History {
        episodes: vec![episode(2, 10, acquired(12, 100))],
        holdings: vec![holding(1, 11, 0, 50, true, Answer::Int(0)), holding(2, 12, 100, 110, false, Answer::Int(0))],
        disconnects: false,
    };
    assert!(check(&after_done, t0).violations.iter().any(|v| v.contains("was in line")));
    // A FAILURE answered "released" while somebody waited.
    let lost_wakeup = History {
        episodes: vec![episode(2, 10, acquired(12, 100))],
        holdings: vec![holding(1, 11, 0, 50, false, Answer::Int(0)), holding(2, 12, 100, 110, false, Answer::Int(0))],
        disconnects: false,
    };
    assert!(check(&lost_wakeup, t0).violations.iter().any(|v| v.contains("was in line")));
    // A DONE nobody sent.
    let phantom = History {
        episodes: vec![episode(2, 10, End::Done { finisher: "c1".into(), result: Some("t99".into()), recv: ms(20) })],
        holdings: vec![],
        disconnects: false,
    };
    assert!(check(&phantom, t0).violations.iter().any(|v| v.contains("no such SUCCESS")));
    // A lost lock.
    let lost = History {
        episodes: vec![],
        holdings: vec![holding(1, 10, 0, 5, true, Answer::Error("NOTHOLDER".into()))],
        disconnects: false,
    };
    assert!(check(&lost, t0).violations.iter().any(|v| v.contains("UNLOCK answered")));
    // A back-dated grant: c1 stalled past its 600 ms lease; c2 was granted 1 ms after c1's own
    // grant, as if c1's lease had ended before it was even sent.
    let stalled = |client, token, start, end| Holding {
        stalled: true,
        lease: Duration::from_millis(STALL_LEASE_MS),
        reply: Answer::Error("NOTHOLDER".into()),
        ..holding(client, token, start, end, false, Answer::Nil)
    };
    let back_dated = History {
        episodes: vec![],
        holdings: vec![stalled(1, 10, 0, 750), holding(2, 11, 1, 20, false, Answer::Int(0))],
        disconnects: false,
    };
    assert!(check(&back_dated, t0).violations.iter().any(|v| v.contains("while")));
    // ... whereas a hand-off once the lease ran out is fine, and the late UNLOCK must be refused.
    let expired = History {
        episodes: vec![],
        holdings: vec![stalled(1, 10, 0, 750), holding(2, 11, 601, 620, false, Answer::Int(0))],
        disconnects: false,
    };
    assert_eq!(check(&expired, t0).violations, Vec::<String>::new());
    let late_unlock_worked = History {
        episodes: vec![],
        holdings: vec![Holding { reply: Answer::Int(0), ..stalled(1, 10, 0, 750) }],
        disconnects: false,
    };
    assert!(check(&late_unlock_worked, t0).violations.iter().any(|v| v.contains("after its lease")));
    // And a clean history passes.
    let clean = History {
        episodes: vec![episode(2, 10, acquired(12, 60)), episode(3, 20, acquired(13, 80))],
        holdings: vec![
            holding(1, 11, 0, 50, false, Answer::Int(1)),
            holding(2, 12, 60, 70, false, Answer::Int(1)),
            holding(3, 13, 80, 90, false, Answer::Int(0)),
        ],
        disconnects: false,
    };
    assert_eq!(check(&clean, t0).violations, Vec::<String>::new());
}
