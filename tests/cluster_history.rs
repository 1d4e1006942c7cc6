//! History checker across cluster failovers: a 3-node cluster (bus links the test can cut) serves
//! a few keys to clients that lock, work on a fenced resource and unlock, while a nemesis kills,
//! stops and isolates the leader again and again. Every call is recorded with the instant before
//! it was sent and the instant after its reply came; then one pure function, [`check`], reads the
//! whole history against what docs/cluster.md promises:
//!
//! - no two certain holdings of a key overlap;
//! - tokens strictly increase per key in the real-time order of holdings, across failovers: a
//!   holding told before another owner even asked has the smaller token;
//! - an acknowledged holding survives a failover: while it is certainly held, the owner's
//!   re-attach (LOCK.TRY by owner), EXTEND and UNLOCK find it, with the same token;
//! - an acknowledged place in line keeps its FIFO order: an owner told QUEUED, that kept its place
//!   renewed, is granted before anyone who first asked after that QUEUED;
//! - an acknowledged SUCCESS with KEEP is told (DONE, with its owner and result) to everyone who
//!   asks within the keep time, and nobody writes to the resource meanwhile;
//! - the fenced resource (per key: the highest token it accepted; a lower one is refused) never
//!   accepts a stale token, and refuses a write only once the writer's holding may have ended.
//!
//! A holding is *certain* from its first ACQUIRED reply until the earliest moment it may have
//! ended: a lease after the send of its last acknowledged grant or EXTEND (the server starts the
//! lease no earlier), the send of its UNLOCK, or a connection the client gave up on (the leader
//! may have released it on that disconnect). Later evidence stretches it: an ACQUIRED with the
//! same token on a re-attach proves the holding lived at least until that re-attach was sent.
//!
//! Failovers make some calls *may have happened*: a connection that dies or times out before the
//! reply leaves the client not knowing whether its command took effect (a deposed leader closes
//! connections whose changes may be lost; a killed one just vanishes). Such a call is recorded as
//! [`Answer::Lost`] and the checker takes neither side: a grant no reply told counts only once a
//! later ACQUIRED shows it, a place or holding behind a connection the client dropped may be gone,
//! and a lost UNLOCK may or may not have ended the holding. Treating it as either "happened" or
//! "did not happen" would flag correct servers.
//!
//! `BATON_HISTORY_SEED` seeds the clients' and nemesis' choices; `BATON_HISTORY_DUMP=dir` writes
//! the history of a failing run there.

// A test binary has no outside users.
#![allow(unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// Only its reading of the startup line: cluster nodes need ports named in advance.
#[allow(dead_code)]
#[path = "support/baton.rs"]
mod baton_process;
#[allow(dead_code)]
#[path = "support/cluster.rs"]
mod cluster_process;
// Shared with tests/history.rs, whose clients also record grants on connections they closed.
#[allow(dead_code)]
#[path = "support/history_run.rs"]
mod history_run;

use history_run::{Answer, answer};

use baton_testkit::client::Connection;
use baton_testkit::rng::Rng;
use cluster_process::Cluster;

const KEYS: usize = 4;
const CLIENTS: usize = 8;
/// PX of every grant, place and EXTEND: longer than a quick failover, shorter than a slow one, so
/// that some holdings ride through a failover and some run out during one.
const LEASE: Duration = Duration::from_millis(4_000);
/// PX of an episode whose holder stalls past its lease (for `STALL`), so that the lock moves on
/// and the fenced resource refuses the stalled holder's last write.
const STALL_LEASE: Duration = Duration::from_millis(300);
const STALL: Duration = Duration::from_millis(450);
/// Leases end on the server's whole-millisecond clock, so one may end up to 1 ms before its PX has
/// passed since the grant.
const SERVER_CLOCK_GRAIN: Duration = Duration::from_millis(1);
/// KEEP of a SUCCESS that keeps its result.
const KEEP: Duration = Duration::from_millis(800);
/// Longest LOCK.WAIT slice.
const SLICE_MS: u64 = 500;
/// How long a reply may take beyond a WAIT's slice before the client gives up on the connection.
const REPLY_PATIENCE: Duration = Duration::from_secs(3);
/// How long a client keeps retrying one command (by owner) before it gives up on it.
const RETRY_FOR: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The history

#[derive(Debug, Clone, PartialEq)]
enum Op {
    /// LOCK.WAIT or LOCK.TRY with this PX.
    Grant {
        lease: Duration,
    },
    Extend {
        token: u64,
        lease: Duration,
    },
    Unlock {
        token: u64,
        success: bool,
        keep: Option<Duration>,
        result: Option<String>,
    },
}

#[derive(Debug, Clone)]
struct Call {
    owner: String,
    key: usize,
    op: Op,
    send: Instant,
    recv: Instant,
    answer: Answer,
}

/// A write to the fenced resource, made under its lock at `at`.
#[derive(Debug, Clone)]
struct Write {
    owner: String,
    key: usize,
    token: u64,
    at: Instant,
    accepted: bool,
}

#[derive(Debug, Default)]
struct History {
    calls: Vec<Call>,
    writes: Vec<Write>,
}

// ---------------------------------------------------------------------------------------------
// The checker

/// One holding of a key, as the history shows it.
#[derive(Debug)]
struct Holding<'a> {
    owner: &'a str,
    key: usize,
    token: u64,
    /// The owner's first request on the key: no grant to it came before.
    asked: Instant,
    /// Its first ACQUIRED reply.
    told: Instant,
    /// Until when it was certainly held (not after `told` if never certainly).
    until: Instant,
}

impl Holding<'_> {
    fn certain(&self) -> bool {
        self.until > self.told
    }

    fn describe(&self, t0: Instant) -> String {
        format!("{} (token {}) held {:?}..{:?}", self.owner, self.token, self.told - t0, self.until - t0)
    }
}

/// The calls of one owner on one key, in the order they were sent.
fn by_owner(history: &History) -> BTreeMap<(usize, &str), Vec<&Call>> {
    let mut owners: BTreeMap<(usize, &str), Vec<&Call>> = BTreeMap::new();
    for call in &history.calls {
        owners.entry((call.key, &call.owner)).or_default().push(call);
    }
    owners.values_mut().for_each(|calls| calls.sort_by_key(|call| call.send));
    owners
}

/// Instants at which the holding of `token` may have ended by its owner's doing: its UNLOCKs were
/// sent, or it dropped a connection (with release-on-disconnect the leader may have released).
fn may_end(calls: &[&Call], token: u64) -> Vec<Instant> {
    calls
        .iter()
        .filter_map(|call| match (&call.op, &call.answer) {
            (Op::Unlock { token: unlocked, .. }, _) if *unlocked == token => Some(call.send),
            (_, Answer::Lost { dropped: true }) => Some(call.recv),
            _ => None,
        })
        .collect()
}

fn first_unlock_send(calls: &[&Call], token: u64) -> Option<Instant> {
    calls
        .iter()
        .filter(|call| matches!(call.op, Op::Unlock { token: unlocked, .. } if unlocked == token))
        .map(|call| call.send)
        .min()
}

/// Until when the holding of `token` was certainly held, from the calls acknowledged before
/// `upto`: each acknowledged renewal keeps it for a lease from its send, unless its owner may have
/// ended it sooner; each acknowledged call that found it proves it lived when that call was sent.
fn certainly_held_until(calls: &[&Call], token: u64, told: Instant, upto: Instant) -> Instant {
    let ends = may_end(calls, token);
    let first_unlock = first_unlock_send(calls, token);
    let first_end_from = |from: Instant| ends.iter().copied().filter(|&end| end >= from).min();
    let mut until = told;
    for call in calls.iter().filter(|call| call.recv <= upto) {
        let renewal = match (&call.op, &call.answer) {
            (Op::Grant { lease }, Answer::Acquired(got)) if *got == token => Some(*lease),
            (Op::Extend { token: extended, lease }, Answer::Int(1)) if *extended == token => Some(*lease),
            // A retried UNLOCK is answered as the first one was: the holding lived until that
            // first one was sent, not this one.
            (Op::Unlock { token: unlocked, .. }, Answer::Int(_)) if *unlocked == token => {
                until = until.max(first_unlock.unwrap_or(call.send));
                continue;
            }
            _ => continue,
        };
        until = until.max(call.send);
        if let Some(lease) = renewal {
            let lease_end = call.send + lease - SERVER_CLOCK_GRAIN;
            until = until.max(first_end_from(call.send).map_or(lease_end, |end| end.min(lease_end)));
        }
    }
    until
}

fn holdings(history: &History) -> Vec<Holding<'_>> {
    let mut found = Vec::new();
    for ((key, owner), calls) in by_owner(history) {
        let mut told: BTreeMap<u64, Instant> = BTreeMap::new();
        for call in &calls {
            if let Answer::Acquired(token) = call.answer {
                let first = told.entry(token).or_insert(call.recv);
                *first = (*first).min(call.recv);
            }
        }
        let far = calls.iter().map(|call| call.recv).max().unwrap_or_else(Instant::now) + Duration::from_secs(3600);
        for (token, told) in told {
            found.push(Holding {
                owner,
                key,
                token,
                asked: calls[0].send,
                told,
                until: certainly_held_until(&calls, token, told, far),
            });
        }
    }
    found
}

/// A call made while its owner's holding was certainly alive must find it.
fn lost_holdings(history: &History, holdings: &[Holding<'_>], t0: Instant, violations: &mut Vec<String>) {
    let owners = by_owner(history);
    for holding in holdings {
        let calls = &owners[&(holding.key, holding.owner)];
        for call in calls.iter().filter(|call| call.send > holding.told) {
            // Only the evidence from before this call was sent, and no end of the owner's making
            // from before it either.
            let earlier: Vec<&Call> = calls.iter().copied().filter(|other| other.send < call.send).collect();
            let held_until = certainly_held_until(&earlier, holding.token, holding.told, call.send);
            if call.recv >= held_until || call.answer.indeterminate() {
                continue;
            }
            let found = match (&call.op, &call.answer) {
                (Op::Grant { .. }, Answer::Acquired(token)) => *token == holding.token,
                (Op::Extend { token, .. } | Op::Unlock { token, .. }, answer) if *token == holding.token => {
                    matches!(answer, Answer::Int(_))
                }
                (Op::Extend { .. } | Op::Unlock { .. }, _) => true,
                (Op::Grant { .. }, _) => false,
            };
            if !found {
                violations.push(format!(
                    "lost acknowledged holding: {} asked {:?} at {:?}..{:?} and was answered {:?}",
                    holding.describe(t0),
                    call.op,
                    call.send - t0,
                    call.recv - t0,
                    call.answer
                ));
            }
        }
    }
}

fn overlaps_and_token_order(holdings: &[Holding<'_>], t0: Instant, violations: &mut Vec<String>) {
    for (i, a) in holdings.iter().enumerate() {
        for b in holdings[i + 1..].iter().filter(|b| b.key == a.key) {
            if a.token == b.token {
                violations.push(format!("k{}: one token for two owners: {} and {}", a.key, a.owner, b.owner));
            }
            if a.certain() && b.certain() && a.told < b.until && b.told < a.until {
                violations.push(format!("k{}: {} while {}", a.key, a.describe(t0), b.describe(t0)));
            }
            for (first, then) in [(a, b), (b, a)] {
                if first.told < then.asked && first.token >= then.token {
                    violations.push(format!(
                        "k{}: token {} granted after {}: {} first asked at {:?}, after {} was told at {:?}",
                        a.key,
                        then.token,
                        first.token,
                        then.owner,
                        then.asked - t0,
                        first.owner,
                        first.told - t0
                    ));
                }
            }
        }
    }
}

/// An owner told QUEUED that renewed its place in time (each answer from the leader within a place
/// lease of the previous one's send) and never dropped a connection is granted before anyone who
/// first asked after that QUEUED.
fn fifo(history: &History, holdings: &[Holding<'_>], t0: Instant, violations: &mut Vec<String>) -> usize {
    let owners = by_owner(history);
    let mut pairs = 0;
    for first in holdings {
        let calls = &owners[&(first.key, first.owner)];
        let Some(queued) = calls.iter().position(|call| matches!(call.answer, Answer::Queued(_))) else { continue };
        let Some(granted) = calls.iter().position(|call| call.answer == Answer::Acquired(first.token)) else {
            continue;
        };
        if granted < queued {
            continue;
        }
        // Only an answer from the leader renewed the place; a redirected or lost call may not have.
        let renewals: Vec<&Call> =
            calls[queued..=granted].iter().copied().filter(|call| !call.answer.indeterminate()).collect();
        let kept_place = calls[queued..=granted]
            .iter()
            .all(|call| !matches!(call.answer, Answer::Lost { dropped: true } | Answer::Done { .. }))
            && renewals.windows(2).all(|pair| {
                let place_lease = match pair[0].op {
                    Op::Grant { lease } => lease,
                    _ => Duration::ZERO,
                };
                pair[1].recv < pair[0].send + place_lease
            });
        if !kept_place {
            continue;
        }
        let joined = calls[queued].recv;
        for later in holdings.iter().filter(|later| later.key == first.key && later.asked > joined) {
            pairs += 1;
            if later.token < first.token {
                violations.push(format!(
                    "k{}: FIFO: {} was QUEUED at {:?}, yet {} (first asked at {:?}) got the lock before it",
                    first.key,
                    first.describe(t0),
                    joined - t0,
                    later.describe(t0),
                    later.asked - t0
                ));
            }
        }
    }
    pairs
}

fn kept_results(history: &History, t0: Instant, violations: &mut Vec<String>) {
    let owners = by_owner(history);
    for success in &history.calls {
        let (Op::Unlock { token, success: true, keep: Some(keep), result }, Answer::Int(_)) =
            (&success.op, &success.answer)
        else {
            continue;
        };
        // The result is kept from when the first of its UNLOCKs was carried out.
        let first_sent = first_unlock_send(&owners[&(success.key, success.owner.as_str())], *token);
        let window = |at: Instant| success.recv < at && at < first_sent.unwrap_or(success.send) + *keep;
        // An owner still owed the DONE of an earlier SUCCESS is told that one first.
        let told_it = |answer: &Answer| match answer {
            Answer::Done { finisher, result: told } => finisher != &success.owner || told == result,
            _ => false,
        };
        for asked in history.calls.iter().filter(|call| call.key == success.key && window(call.send)) {
            let answered = matches!(asked.op, Op::Grant { .. }) && window(asked.recv) && !asked.answer.indeterminate();
            if answered && !told_it(&asked.answer) {
                violations.push(format!(
                    "k{}: {} asked at {:?} within the KEEP of {}'s SUCCESS (acknowledged at {:?}) and was answered {:?}",
                    success.key,
                    asked.owner,
                    asked.send - t0,
                    success.owner,
                    success.recv - t0,
                    asked.answer
                ));
            }
        }
        for write in
            history.writes.iter().filter(|write| write.key == success.key && write.accepted && window(write.at))
        {
            violations.push(format!(
                "k{}: {} (token {}) worked at {:?}, after {}'s SUCCESS was acknowledged at {:?}",
                write.key,
                write.owner,
                write.token,
                write.at - t0,
                success.owner,
                success.recv - t0
            ));
        }
    }
}

fn fenced_writes(history: &History, holdings: &[Holding<'_>], t0: Instant, violations: &mut Vec<String>) {
    let mut writes: Vec<&Write> = history.writes.iter().collect();
    writes.sort_by_key(|write| write.at);
    let mut highest: HashMap<usize, u64> = HashMap::new();
    for write in writes {
        let seen = highest.get(&write.key).copied().unwrap_or(0);
        if write.accepted && write.token < seen {
            violations.push(format!(
                "k{}: stale write accepted: {} wrote token {} at {:?} after token {seen}",
                write.key,
                write.owner,
                write.token,
                write.at - t0
            ));
        }
        if write.accepted {
            highest.insert(write.key, seen.max(write.token));
        }
        let writer = holdings.iter().find(|h| h.key == write.key && h.token == write.token && h.owner == write.owner);
        if !write.accepted
            && let Some(holding) = writer.filter(|h| h.told <= write.at && write.at < h.until)
        {
            violations.push(format!(
                "k{}: write refused at {:?} while {}",
                write.key,
                write.at - t0,
                holding.describe(t0)
            ));
        }
    }
}

struct Verdicts {
    violations: Vec<String>,
    holdings: usize,
    certain: usize,
    fifo_pairs: usize,
}

fn check(history: &History, t0: Instant) -> Verdicts {
    let holdings = holdings(history);
    let mut violations = Vec::new();
    overlaps_and_token_order(&holdings, t0, &mut violations);
    lost_holdings(history, &holdings, t0, &mut violations);
    let fifo_pairs = fifo(history, &holdings, t0, &mut violations);
    kept_results(history, t0, &mut violations);
    fenced_writes(history, &holdings, t0, &mut violations);
    Verdicts {
        violations,
        holdings: holdings.len(),
        certain: holdings.iter().filter(|h| h.certain()).count(),
        fifo_pairs,
    }
}

fn dump(history: &History, t0: Instant) -> String {
    let mut lines: Vec<(Instant, String)> = history
        .calls
        .iter()
        .map(|c| {
            let line =
                format!("{:?}..{:?} k{} {} {:?} -> {:?}", c.send - t0, c.recv - t0, c.key, c.owner, c.op, c.answer);
            (c.send, line)
        })
        .chain(history.writes.iter().map(|w| {
            (w.at, format!("{:?} k{} {} write token {} accepted {}", w.at - t0, w.key, w.owner, w.token, w.accepted))
        }))
        .collect();
    lines.sort_by_key(|(at, _)| *at);
    lines.into_iter().map(|(_, line)| line + "\n").collect()
}

// ---------------------------------------------------------------------------------------------
// The clients

/// Per key, the highest token it has accepted; a lower one is refused.
#[derive(Default)]
struct Fence {
    highest: HashMap<usize, u64>,
    writes: Vec<Write>,
}

fn fenced_write(fence: &Mutex<Fence>, key: usize, owner: &str, token: u64) {
    let mut fence = fence.lock().expect("fence");
    let highest = fence.highest.entry(key).or_insert(0);
    let accepted = token >= *highest;
    if accepted {
        *highest = token;
    }
    let write = Write { owner: owner.to_owned(), key, token, at: Instant::now(), accepted };
    fence.writes.push(write);
}

fn key_name(key: usize) -> String {
    format!("hist:k{key}")
}

/// A client of its own making: it talks to the node it believes leads, follows -MOVED, waits out
/// -CLUSTERDOWN and moves to the next node when a connection dies or a reply is late.
struct Client {
    nodes: Vec<SocketAddr>,
    target: usize,
    connections: HashMap<usize, Connection>,
    calls: Vec<Call>,
    rng: Rng,
}

impl Client {
    /// One try: the answer, or `None` if no connection could be made (nothing was sent).
    async fn attempt(&mut self, owner: &str, key: usize, op: &Op, args: &[String], limit: Duration) -> Option<Answer> {
        let target = self.target;
        if !self.connections.contains_key(&target) {
            match Connection::connect(self.nodes[target], Duration::from_secs(1)).await {
                Ok(conn) => self.connections.insert(target, conn),
                Err(_) => {
                    self.next_node();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return None;
                }
            };
        }
        let conn = self.connections.get_mut(&target).expect("connected");
        conn.queue(&args.iter().map(String::as_bytes).collect::<Vec<_>>());
        let send = Instant::now();
        let reply = match conn.flush().await {
            Ok(()) => conn.read_within(limit).await,
            Err(error) => Err(error),
        };
        let recv = Instant::now();
        let answer = match reply {
            Ok(Some(reply)) => answer(&reply),
            Ok(None) => Answer::Lost { dropped: true },
            Err(_) => Answer::Lost { dropped: false },
        };
        if let Answer::Lost { .. } = answer {
            self.connections.remove(&target);
            self.next_node();
        }
        self.calls.push(Call { owner: owner.to_owned(), key, op: op.clone(), send, recv, answer: answer.clone() });
        Some(answer)
    }

    fn next_node(&mut self) {
        self.target = (self.target + 1) % self.nodes.len();
    }

    /// Sends the command (again, by owner) until it is answered other than by a redirection or a
    /// lost connection, or `RETRY_FOR` runs out; returns the last answer.
    async fn call(&mut self, owner: &str, key: usize, op: Op, args: Vec<String>, limit: Duration) -> Answer {
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let answer = self.attempt(owner, key, &op, &args, limit).await;
            match &answer {
                Some(Answer::Error(text)) if text.starts_with("MOVED ") => {
                    let leader = text.split(' ').nth(2).and_then(|addr| addr.parse().ok());
                    match leader.and_then(|leader| self.nodes.iter().position(|&node| node == leader)) {
                        Some(target) => self.target = target,
                        None => self.next_node(),
                    }
                }
                Some(Answer::Error(text)) if text.starts_with("CLUSTERDOWN") => {
                    self.next_node();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some(Answer::Lost { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
                Some(_) => return answer.expect("answered"),
                None => {}
            }
            if Instant::now() >= deadline {
                return answer.unwrap_or(Answer::Lost { dropped: false });
            }
        }
    }

    async fn grant(&mut self, owner: &str, key: usize, how: Grant, lease: Duration) -> Answer {
        let op = Op::Grant { lease };
        let px = lease.as_millis().to_string();
        let mut args = match how {
            Grant::Wait => {
                let slice = 100 + self.rng.below(SLICE_MS);
                vec!["LOCK.WAIT".into(), key_name(key), owner.into(), slice.to_string()]
            }
            Grant::Try | Grant::Reattach => vec!["LOCK.TRY".into(), key_name(key), owner.into()],
        };
        args.extend(["PX".into(), px]);
        if how == Grant::Reattach {
            args.push("NOQUEUE".into());
        }
        let limit = Duration::from_millis(SLICE_MS + 100) + REPLY_PATIENCE;
        self.call(owner, key, op, args, limit).await
    }

    /// One episode: a fresh owner asks for a key until it is granted or told DONE, then works on
    /// the fenced resource and unlocks.
    async fn episode(&mut self, client: usize, episode: usize, fence: &Mutex<Fence>) {
        let owner = format!("c{client}.{episode}");
        let key = self.rng.below(KEYS as u64) as usize;
        let stalls = self.rng.percent(10);
        let lease = if stalls { STALL_LEASE } else { LEASE };
        let mut how = if self.rng.percent(30) { Grant::Try } else { Grant::Wait };
        let token = loop {
            match self.grant(&owner, key, how, lease).await {
                Answer::Acquired(token) => break token,
                Answer::Queued(_) | Answer::Nil => how = Grant::Wait,
                _ => return,
            }
        };
        if stalls {
            // Works past its lease without knowing: its last write may come after the next
            // holder's, and its UNLOCK is refused.
            fenced_write(fence, key, &owner, token);
            tokio::time::sleep(STALL).await;
            fenced_write(fence, key, &owner, token);
            self.unlock(&owner, key, token, false).await;
        } else {
            self.hold(&owner, key, token, fence).await;
        }
    }

    async fn hold(&mut self, owner: &str, key: usize, token: u64, fence: &Mutex<Fence>) {
        let calls_before = self.calls.len();
        fenced_write(fence, key, owner, token);
        tokio::time::sleep(Duration::from_millis(5 + self.rng.below(60))).await;
        if self.rng.percent(30) {
            let op = Op::Extend { token, lease: LEASE };
            let args = ["LOCK.EXTEND", &key_name(key), owner, &token.to_string(), &LEASE.as_millis().to_string()]
                .map(String::from)
                .to_vec();
            if self.call(owner, key, op, args, REPLY_PATIENCE).await != Answer::Int(1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.below(60))).await;
        }
        // After a failover (or now and then anyway) the holder re-attaches by owner, as an
        // application that lost its connection does.
        let troubled = self.calls[calls_before..].iter().any(|call| call.answer.indeterminate());
        if troubled || self.rng.percent(20) {
            match self.grant(owner, key, Grant::Reattach, LEASE).await {
                Answer::Acquired(same) if same == token => {}
                // The lease ran out meanwhile and the key was free: a new holding, given back.
                Answer::Acquired(new) => return self.unlock(owner, key, new, false).await,
                _ => return,
            }
        }
        fenced_write(fence, key, owner, token);
        let success = self.rng.percent(50);
        self.unlock(owner, key, token, success).await;
    }

    async fn unlock(&mut self, owner: &str, key: usize, token: u64, success: bool) {
        let keep = (success && self.rng.percent(50)).then_some(KEEP);
        let result = keep.map(|_| format!("made by {owner}"));
        let mut args = ["LOCK.UNLOCK", &key_name(key), owner, &token.to_string()].map(String::from).to_vec();
        args.push(if success { "SUCCESS" } else { "FAILURE" }.into());
        if let (Some(keep), Some(result)) = (keep, &result) {
            args.extend(["KEEP".into(), keep.as_millis().to_string(), "RESULT".into(), result.clone()]);
        }
        let op = Op::Unlock { token, success, keep, result };
        self.call(owner, key, op, args, REPLY_PATIENCE).await;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Grant {
    Wait,
    Try,
    Reattach,
}

async fn run_client(
    client: usize,
    nodes: Vec<SocketAddr>,
    seed: u64,
    stop: Arc<AtomicBool>,
    fence: Arc<Mutex<Fence>>,
) -> Vec<Call> {
    let mut rng = Rng::new(seed ^ (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let target = rng.below(nodes.len() as u64) as usize;
    let mut me = Client { nodes, target, connections: HashMap::new(), calls: Vec::new(), rng };
    let mut episode = 0;
    while !stop.load(Ordering::Relaxed) {
        me.episode(client, episode, &fence).await;
        episode += 1;
        // An owner told DONE under a KEEP would otherwise ask again at once, over and over.
        tokio::time::sleep(Duration::from_millis(me.rng.below(30))).await;
    }
    me.calls
}

// ---------------------------------------------------------------------------------------------
// The nemesis

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL the leader; relaunch it on its directory once another leads.
    Kill,
    /// SIGSTOP the leader past the election timeout; SIGCONT once another leads.
    Stop,
    /// Cut every bus link to and from the leader; heal once another leads.
    Isolate,
}

async fn inflict(cluster: &mut Cluster, fault: Fault) {
    let all = cluster.ids();
    let leader = cluster.leader(&all).await;
    let others: Vec<u64> = all.iter().copied().filter(|&id| id != leader).collect();
    match fault {
        Fault::Kill => {
            cluster.kill(leader);
            cluster.leader(&others).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.launch(leader);
        }
        Fault::Stop => {
            cluster.signal(leader, "STOP");
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            cluster.leader(&others).await;
            cluster.signal(leader, "CONT");
        }
        Fault::Isolate => {
            cluster.isolate(leader);
            cluster.leader(&others).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.heal_all();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_across_failovers() {
    let seed = history_run::seed();
    let mut cluster = Cluster::start_linked(3);
    let nodes: Vec<SocketAddr> = cluster.ids().into_iter().map(|id| cluster.node(id).client).collect();
    cluster.leader(&cluster.ids()).await;

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let fence = Arc::new(Mutex::new(Fence::default()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| tokio::spawn(run_client(client, nodes.clone(), seed, stop.clone(), fence.clone())))
        .collect();

    let mut rng = Rng::new(seed);
    let mut faults = vec![Fault::Kill, Fault::Stop, Fault::Isolate, Fault::Kill, Fault::Stop, Fault::Isolate];
    faults.push(faults[rng.below(3) as usize]);
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for &fault in &faults {
        tokio::time::sleep(Duration::from_millis(1_000 + rng.below(1_000))).await;
        inflict(&mut cluster, fault).await;
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);

    let mut history = History::default();
    for client in clients {
        // Every call gives up within RETRY_FOR, and an episode makes a handful of them.
        let calls = tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("a client did not finish its episode")
            .expect("client task");
        history.calls.extend(calls);
    }
    history.writes = std::mem::take(&mut fence.lock().expect("fence").writes);

    let verdicts = check(&history, t0);
    let lost = history.calls.iter().filter(|call| matches!(call.answer, Answer::Lost { .. })).count();
    let redirected = history.calls.iter().filter(|call| call.answer.indeterminate()).count() - lost;
    let refused = history.writes.iter().filter(|write| !write.accepted).count();
    let grants = history.calls.iter().filter(|call| matches!(call.answer, Answer::Acquired(_))).count();
    let done = history.calls.iter().filter(|call| matches!(call.answer, Answer::Done { .. })).count();
    println!(
        "cluster history seed={seed}: faults {faults:?}; {} calls ({lost} without a reply, {redirected} redirected or \
         CLUSTERDOWN), {} grants told, {done} DONEs, {} holdings ({} certain), {} writes ({refused} refused), {} FIFO pairs; in \
         {:?}; {} violations",
        history.calls.len(),
        grants,
        verdicts.holdings,
        verdicts.certain,
        history.writes.len(),
        verdicts.fifo_pairs,
        t0.elapsed(),
        verdicts.violations.len()
    );
    history_run::assert_no_violations(
        &verdicts.violations,
        &format!("seed {seed}"),
        &format!("cluster-history-{seed}.txt"),
        || dump(&history, t0),
    );
    assert!(verdicts.certain > 4 * CLIENTS, "too few holdings to mean anything: {}", verdicts.certain);
    assert!(lost > 0, "no call went without a reply: the faults did not bite");
}

/// The checker must catch what it claims to, and must not flag what may have happened.
#[test]
fn checker_catches_broken_histories() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let call = |owner: &str, send, recv, op: Op, answer| Call {
        owner: owner.into(),
        key: 0,
        op,
        send: ms(send),
        recv: ms(recv),
        answer,
    };
    let grant = Op::Grant { lease: LEASE };
    let failure = |token| Op::Unlock { token, success: false, keep: None, result: None };
    let kept = |token| Op::Unlock { token, success: true, keep: Some(KEEP), result: Some("r".into()) };
    let write = |owner: &str, token, at, accepted| Write { owner: owner.into(), key: 0, token, at: ms(at), accepted };
    let violations = |calls: Vec<Call>, writes: Vec<Write>| check(&History { calls, writes }, t0).violations;
    let caught = |found: Vec<String>, what: &str| found.iter().any(|violation| violation.contains(what));
    let lost = Answer::Lost { dropped: true };
    let closed = Answer::Lost { dropped: false };

    // a holds 10 and hands the lock on to b, which holds 11: clean.
    let a =
        || vec![call("a", 0, 1, grant.clone(), Answer::Acquired(10)), call("a", 20, 21, failure(10), Answer::Int(1))];
    let b_after = || {
        vec![
            call("b", 2, 3, grant.clone(), Answer::Queued(1)),
            call("b", 4, 22, grant.clone(), Answer::Acquired(11)),
            call("b", 40, 41, failure(11), Answer::Int(0)),
        ]
    };
    let clean_writes = || vec![write("a", 10, 5, true), write("a", 10, 15, true), write("b", 11, 30, true)];
    assert_eq!(violations([a(), b_after()].concat(), clean_writes()), Vec::<String>::new());

    // Two holders at once.
    let b_early = vec![call("b", 5, 6, grant.clone(), Answer::Acquired(11))];
    assert!(caught(violations([a(), b_early].concat(), vec![]), "while"));
    // A token that goes back: b asked after a was told 10, and got 9.
    let b_lower = vec![call("b", 30, 31, grant.clone(), Answer::Acquired(9))];
    assert!(caught(violations([a(), b_lower].concat(), vec![]), "granted after"));
    // A stale write accepted.
    let stale = [clean_writes(), vec![write("a", 10, 35, true)]].concat();
    assert!(caught(violations([a(), b_after()].concat(), stale), "stale write accepted"));
    // A write refused while its writer certainly held the lock ...
    let refused = vec![write("x", 12, 1, true), write("a", 10, 5, false)];
    assert!(caught(violations(a(), refused), "write refused"));
    // ... but not once its lease may have run out (the UNLOCK came late, refused).
    let late = vec![
        call("a", 0, 1, grant.clone(), Answer::Acquired(10)),
        call("a", 4_500, 4_501, failure(10), Answer::Error("NOLOCK".into())),
    ];
    assert_eq!(violations(late, vec![write("x", 12, 4_100, true), write("a", 10, 4_400, false)]), Vec::<String>::new());

    // A lost acknowledged holding: the owner re-attaches within its lease and is told BUSY, or
    // a new token.
    for answer in [Answer::Busy, Answer::Acquired(12)] {
        let reattach =
            vec![call("a", 0, 1, grant.clone(), Answer::Acquired(10)), call("a", 1_000, 1_010, grant.clone(), answer)];
        assert!(caught(violations(reattach, vec![]), "lost acknowledged holding"));
    }
    // A connection closed by the server (a deposed leader) releases nothing: still lost ...
    let after_close = vec![
        call("a", 0, 1, grant.clone(), Answer::Acquired(10)),
        call("a", 10, 500, Op::Extend { token: 10, lease: LEASE }, closed.clone()),
        call("a", 1_000, 1_010, grant.clone(), Answer::Busy),
    ];
    assert!(caught(violations(after_close, vec![]), "lost acknowledged holding"));
    // ... but one the client gave up on may have been taken for a disconnect.
    let after_drop = vec![
        call("a", 0, 1, grant.clone(), Answer::Acquired(10)),
        call("a", 10, 500, Op::Extend { token: 10, lease: LEASE }, lost.clone()),
        call("a", 1_000, 1_010, grant.clone(), Answer::Busy),
    ];
    assert_eq!(violations(after_drop, vec![]), Vec::<String>::new());
    // The same token on that re-attach proves the holding lived on: then b overlaps it.
    let proved = vec![
        call("a", 0, 1, grant.clone(), Answer::Acquired(10)),
        call("a", 10, 500, Op::Extend { token: 10, lease: LEASE }, lost.clone()),
        call("a", 1_000, 1_010, grant.clone(), Answer::Acquired(10)),
        call("b", 600, 700, grant.clone(), Answer::Acquired(11)),
    ];
    assert!(caught(violations(proved, vec![]), "while"));

    // May have happened: a's UNLOCK got no reply, b's WAIT neither; the UNLOCK took effect (its
    // retry is told the first answer) and b's grant shows up when b asks again.
    let maybe = vec![
        call("a", 0, 1, grant.clone(), Answer::Acquired(10)),
        call("a", 10, 3_010, failure(10), lost.clone()),
        call("a", 3_100, 3_101, failure(10), Answer::Int(1)),
        call("b", 5, 3_005, grant.clone(), closed),
        call("b", 3_010, 3_011, grant.clone(), Answer::Acquired(11)),
    ];
    assert_eq!(violations(maybe, vec![write("a", 10, 8, true), write("b", 11, 3_020, true)]), Vec::<String>::new());

    // FIFO: b was QUEUED first, c asked after that and got the lock first.
    let fifo = vec![
        call("a", 0, 1, grant.clone(), Answer::Acquired(10)),
        call("a", 40, 41, failure(10), Answer::Int(1)),
        call("b", 2, 3, grant.clone(), Answer::Queued(1)),
        call("b", 4, 60, grant.clone(), Answer::Acquired(12)),
        call("b", 61, 62, failure(12), Answer::Int(0)),
        call("c", 5, 6, grant.clone(), Answer::Queued(1)),
        call("c", 7, 42, grant.clone(), Answer::Acquired(11)),
        call("c", 44, 45, failure(11), Answer::Int(1)),
    ];
    assert!(caught(violations(fifo, vec![]), "FIFO"));

    // A SUCCESS with KEEP: b, asking within the keep time, must be told DONE and must not work.
    let keep = |b_answer| {
        vec![
            call("a", 0, 1, grant.clone(), Answer::Acquired(10)),
            call("a", 10, 11, kept(10), Answer::Int(0)),
            call("b", 100, 101, grant.clone(), b_answer),
        ]
    };
    let told = Answer::Done { finisher: "a".into(), result: Some("r".into()) };
    assert_eq!(violations(keep(told), vec![]), Vec::<String>::new());
    assert!(caught(violations(keep(Answer::Acquired(11)), vec![]), "within the KEEP"));
    // An owner still owed the DONE of an earlier SUCCESS is told that one instead.
    let owed = Answer::Done { finisher: "x".into(), result: None };
    assert_eq!(violations(keep(owed), vec![]), Vec::<String>::new());
    let wrong_result = Answer::Done { finisher: "a".into(), result: None };
    assert!(caught(violations(keep(wrong_result), vec![]), "within the KEEP"));
    let worked = vec![write("a", 10, 5, true), write("b", 11, 150, true)];
    assert!(caught(violations(keep(Answer::Queued(1)), worked), "worked at"));
}
