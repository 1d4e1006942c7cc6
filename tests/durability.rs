//! Durability of the journal against the real binary: servers are child processes on loopback,
//! each on a `--dir` of the test's own so that it can be killed (SIGKILL, SIGTERM) and restarted
//! on the same journal; journal files are damaged by hand between runs.
//!
//! - SIGKILL under load, with each `--appendfsync` policy: every acknowledged holding, queue place
//!   (in order), kept result, owed DONE and UNLOCK answer survives; tokens keep growing per key;
//!   no two owners ever hold a key at once by the replies the clients got;
//! - a retried UNLOCK after a kill gets the first answer;
//! - SIGTERM is a clean stop, not a client disconnect;
//! - power loss (everysec): the segment cut back to its synced length plus garbage starts on a
//!   "rebooted" machine whose wall clock reads an hour behind: grants pause for the longest lease
//!   promised (holders re-attach meanwhile), and tokens stay above every token acknowledged
//!   before (the fsynced reservation, not the clock);
//! - damage in the middle of the journal refuses to start (naming file, offset and
//!   `--journal-repair`), and `--journal-repair` starts;
//! - two servers on one directory; compaction bounds the journal; `-LOADING` while a large
//!   journal replays; a full disk answers `-MISCONF` and recovers (needs `mount -t tmpfs`).
//!
//! An operation whose reply was lost in a kill is indeterminate: nothing is asserted about it,
//! but the state it may have left behind is cleaned up before the next round.

// A test binary has no outside users: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/baton.rs"]
mod baton_process;

use baton::core::IfHeld;
use baton_process::start_baton;
use baton_testkit::Resp;
use baton_testkit::args;
use baton_testkit::client::{Connection, Raw};
use baton_testkit::process::ServerProcess;
use baton_testkit::rng::Rng;
use baton_testkit::scratch::ScratchDir;

// ---------------------------------------------------------------------------------------------
// Servers

fn start(dir: &ScratchDir, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--dir", dir.arg()];
    args.extend_from_slice(extra);
    start_baton(&args, "info")
}

/// SIGKILL, and waits until the process is gone (its directory lock with it).
fn kill9(mut server: ServerProcess) -> String {
    server.proc.signal("KILL");
    let _ = server.proc.child.wait();
    server.log_text()
}

/// Waits up to `limit` for the process to exit.
fn wait_exit(server: &mut ServerProcess, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = server.proc.child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs baton with `args` (on a free port) until it exits, at most 20 s: its exit code and
/// stderr. A server that starts instead is killed, and answers None.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["--bind", "127.0.0.1", "--ephemeral-port"])
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start baton");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (code, reader.join().expect("stderr reader"))
}

/// `INFO <section>` as field → value.
async fn info(addr: SocketAddr, section: &str) -> HashMap<String, String> {
    let mut raw = Raw::connect(addr).await;
    let text = raw.cmd(args!["INFO", section]).await.text();
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
        .collect()
}

fn field_u64(info: &HashMap<String, String>, name: &str) -> u64 {
    info.get(name).unwrap_or_else(|| panic!("no {name} in INFO: {info:?}")).parse().expect(name)
}

fn seed() -> u64 {
    match std::env::var("BATON_DURABILITY_SEED") {
        Ok(seed) => seed.parse().expect("BATON_DURABILITY_SEED"),
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as u64,
    }
}

// ---------------------------------------------------------------------------------------------
// Replies

#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Acquired(u64),
    Queued(i64),
    Done(String, Option<String>),
    Busy(String),
    Int(i64),
    Nil,
    Error(String),
    Other(String),
}

fn answer(reply: &Resp) -> Answer {
    match reply {
        Resp::Int(n) => Answer::Int(*n),
        Resp::Error(text) => Answer::Error(text.clone()),
        reply if reply.is_nil() => Answer::Nil,
        Resp::Array(items) => match (items.first().and_then(Resp::opt_text).as_deref(), items.get(1)) {
            (Some("ACQUIRED"), Some(Resp::Int(t))) => Answer::Acquired(*t as u64),
            (Some("QUEUED"), Some(Resp::Int(p))) => Answer::Queued(*p),
            (Some("BUSY"), Some(holder)) => Answer::Busy(holder.text()),
            (Some("DONE"), Some(finisher)) => Answer::Done(finisher.text(), items.get(2).and_then(Resp::opt_text)),
            _ => Answer::Other(format!("{reply:?}")),
        },
        other => Answer::Other(format!("{other:?}")),
    }
}

async fn call(raw: &mut Raw, args: Vec<Vec<u8>>) -> Answer {
    answer(&raw.cmd(args).await)
}

fn acquired(answer: &Answer, what: &str) -> u64 {
    match answer {
        Answer::Acquired(token) => *token,
        other => panic!("{what}: expected ACQUIRED, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. SIGKILL under load

const KEYS: usize = 4;
const CLIENTS: usize = 16;
const ROUNDS: usize = 5;
/// Lease of every workload holding and place: far longer than any episode, so that none lapses.
const LEASE_MS: u64 = 5_000;
const KEEP_MS: u64 = 60_000;
/// Lease used by the controller when it re-sends a call after a restart.
const CHECK_LEASE_MS: u64 = 20_000;
/// The server remembers the answers of the last 4096 UNLOCKs per shard; a retry is only checked
/// when fewer UNLOCKs than this were sent after it in all.
const MEMO_SAFE: u64 = 4_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Try,
    Wait,
    Unlock(u64),
    Cancel,
}

#[derive(Debug, Clone)]
struct Event {
    owner: String,
    key: String,
    kind: Kind,
    px: u64,
    args: Vec<String>,
    sent: Instant,
    reply: Option<(Answer, Instant)>,
}

/// (key, token).
type Holding = (String, u64);
/// (key, when the call that joined the line was sent, when its reply came).
type Place = (String, Instant, Instant);

/// Where a workload client stood when its server died, as far as its acknowledged replies say.
#[derive(Debug, Clone, Default)]
struct Standing {
    /// Its last event is an acknowledged ACQUIRED: (key, token).
    holding: Option<Holding>,
    /// In line by an acknowledged QUEUED (or a timed-out WAIT), not since asked to leave:
    /// (key, when the call that joined was sent, when its reply came).
    queued: Option<Place>,
    /// Acknowledged SUCCESS ... KEEP: (key, result).
    keeps: Vec<(String, String)>,
    /// The last acknowledged UNLOCK: its arguments, answer, and the UNLOCK count when it was
    /// answered.
    last_unlock: Option<(Vec<String>, Answer, u64)>,
}

struct Client {
    index: usize,
    owner: String,
    rng: Rng,
    events: Vec<Event>,
    standing: Standing,
    /// `standing`'s holding and place before the last call was sent: what stands if that call
    /// never reached the server.
    before_last_call: (Option<Holding>, Option<Place>),
    keep_episodes: usize,
    unlocks: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn contended_key(i: usize) -> String {
    format!("load:{i}")
}

impl Client {
    /// Sends one call and records it; an I/O error (the server died) ends the round for this
    /// client, its call left indeterminate.
    async fn call(
        &mut self,
        conn: &mut Connection,
        kind: Kind,
        key: &str,
        px: u64,
        args: Vec<String>,
    ) -> std::io::Result<Answer> {
        let bytes: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        conn.queue(&bytes);
        let sent = Instant::now();
        if matches!(kind, Kind::Unlock(_)) {
            self.unlocks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.events.push(Event {
            owner: self.owner.clone(),
            key: key.to_owned(),
            kind,
            px,
            args: args.clone(),
            sent,
            reply: None,
        });
        // Whatever it held, it is now asking something else (an UNLOCK ends the holding).
        self.before_last_call = (self.standing.holding.take(), self.standing.queued.clone());
        if kind == Kind::Cancel {
            self.standing.queued = None;
        }
        conn.flush().await?;
        let reply = conn.read().await?;
        let received = Instant::now();
        let answer = answer(&reply);
        self.events.last_mut().expect("the event just pushed").reply = Some((answer.clone(), received));
        match (&kind, &answer) {
            (Kind::Try | Kind::Wait, Answer::Acquired(token)) => {
                self.standing.holding = Some((key.to_owned(), *token));
                self.standing.queued = None;
            }
            (Kind::Try, Answer::Queued(_)) | (Kind::Wait, Answer::Nil) => {
                if self.standing.queued.as_ref().is_none_or(|(k, _, _)| k != key) {
                    self.standing.queued = Some((key.to_owned(), sent, received));
                }
            }
            (Kind::Try | Kind::Wait, _) => self.standing.queued = None,
            (Kind::Unlock(_), reply) => {
                let count = self.unlocks.load(std::sync::atomic::Ordering::SeqCst);
                self.standing.last_unlock = Some((args.clone(), reply.clone(), count));
            }
            (Kind::Cancel, _) => {}
        }
        Ok(answer)
    }

    fn lock_call(&self, command: &str, key: &str, extra: &[String]) -> Vec<String> {
        let mut args = vec![command.to_owned(), key.to_owned(), self.owner.clone()];
        args.extend_from_slice(extra);
        args
    }

    async fn try_lock(&mut self, conn: &mut Connection, key: &str, if_held: IfHeld) -> std::io::Result<Answer> {
        let mut extra = vec!["PX".to_owned(), LEASE_MS.to_string()];
        if if_held == IfHeld::NoQueue {
            extra.push("NOQUEUE".to_owned());
        }
        let args = self.lock_call("LOCK.TRY", key, &extra);
        self.call(conn, Kind::Try, key, LEASE_MS, args).await
    }

    async fn sleep_ms(&mut self, max: u64) {
        let ms = self.rng.below(max + 1);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// Where it stood when the server was gone for sure (`dead_at`): a call sent before may or
    /// may not have been carried out (a polling TRY may have taken an owed DONE, an UNLOCK may
    /// have ended the holding), so its holding and place are unknown; a call sent after never
    /// reached the server.
    fn settle(&mut self, dead_at: Instant) {
        let Some(last) = self.events.last() else { return };
        if last.reply.is_some() {
            return;
        }
        if last.sent > dead_at {
            (self.standing.holding, self.standing.queued) = self.before_last_call.clone();
        } else {
            (self.standing.holding, self.standing.queued) = (None, None);
        }
    }

    /// Runs episodes until the connection fails (the server was killed).
    async fn run(mut self, addr: SocketAddr) -> Client {
        let Ok(mut conn) = Connection::connect(addr, Duration::from_secs(10)).await else {
            return self;
        };
        loop {
            if self.episode(&mut conn).await.is_err() {
                return self;
            }
        }
    }

    async fn episode(&mut self, conn: &mut Connection) -> std::io::Result<()> {
        let key = contended_key(self.rng.below(KEYS as u64) as usize);
        match self.rng.below(100) {
            0..10 => self.keep_episode(conn).await,
            10..55 => match self.try_lock(conn, &key, IfHeld::Queue).await? {
                Answer::Acquired(token) => self.hold(conn, &key, token).await,
                Answer::Queued(_) => self.poll(conn, &key).await,
                Answer::Done(..) => Ok(()),
                other => panic!("{}: LOCK.TRY {key} answered {other:?}", self.owner),
            },
            _ => {
                let timeout = 1 + self.rng.below(60);
                let extra = [timeout.to_string(), "PX".to_owned(), LEASE_MS.to_string()];
                let args = self.lock_call("LOCK.WAIT", &key, &extra);
                match self.call(conn, Kind::Wait, &key, LEASE_MS, args).await? {
                    Answer::Acquired(token) => self.hold(conn, &key, token).await,
                    Answer::Done(..) => Ok(()),
                    Answer::Nil if self.rng.percent(50) => self.poll(conn, &key).await,
                    Answer::Nil => self.leave(conn, &key).await,
                    other => panic!("{}: LOCK.WAIT {key} answered {other:?}", self.owner),
                }
            }
        }
    }

    /// Polls its place with LOCK.TRY for a while, then leaves the line.
    async fn poll(&mut self, conn: &mut Connection, key: &str) -> std::io::Result<()> {
        for _ in 0..20 {
            self.sleep_ms(6).await;
            match self.try_lock(conn, key, IfHeld::Queue).await? {
                Answer::Acquired(token) => return self.hold(conn, key, token).await,
                Answer::Done(..) => return Ok(()),
                Answer::Queued(_) => {}
                other => panic!("{}: polling LOCK.TRY {key} answered {other:?}", self.owner),
            }
        }
        self.leave(conn, key).await
    }

    /// LOCK.CANCEL; if it was not in line any more, it may have been handed the lock meanwhile.
    async fn leave(&mut self, conn: &mut Connection, key: &str) -> std::io::Result<()> {
        let args = self.lock_call("LOCK.CANCEL", key, &[]);
        match self.call(conn, Kind::Cancel, key, 0, args).await? {
            Answer::Int(1) => Ok(()),
            Answer::Int(0) => match self.try_lock(conn, key, IfHeld::NoQueue).await? {
                Answer::Acquired(token) => self.hold(conn, key, token).await,
                Answer::Done(..) | Answer::Busy(_) => Ok(()),
                other => panic!("{}: LOCK.TRY {key} NOQUEUE answered {other:?}", self.owner),
            },
            other => panic!("{}: LOCK.CANCEL {key} answered {other:?}", self.owner),
        }
    }

    async fn hold(&mut self, conn: &mut Connection, key: &str, token: u64) -> std::io::Result<()> {
        let hold_ms = if self.rng.percent(30) { 25 } else { 4 };
        self.sleep_ms(hold_ms).await;
        let verdict: Vec<String> = match self.rng.below(100) {
            0..50 => vec!["FAILURE".into()],
            50..90 => vec!["SUCCESS".into(), "RESULT".into(), format!("{}:{token}", self.owner)],
            _ => {
                vec!["SUCCESS".into(), "RESULT".into(), format!("{}:{token}", self.owner), "KEEP".into(), "40".into()]
            }
        };
        let mut extra = vec![token.to_string()];
        extra.extend(verdict);
        let args = self.lock_call("LOCK.UNLOCK", key, &extra);
        match self.call(conn, Kind::Unlock(token), key, 0, args).await? {
            Answer::Int(n) if n >= 0 => Ok(()),
            other => panic!("{}: LOCK.UNLOCK {key} {token} answered {other:?}", self.owner),
        }
    }

    /// A key of its own, held and finished with SUCCESS ... KEEP: the result must survive.
    async fn keep_episode(&mut self, conn: &mut Connection) -> std::io::Result<()> {
        self.keep_episodes += 1;
        let key = format!("keep:{}:{}", self.index, self.keep_episodes);
        let token = match self.try_lock(conn, &key, IfHeld::Queue).await? {
            Answer::Acquired(token) => token,
            other => panic!("{}: LOCK.TRY {key} answered {other:?}", self.owner),
        };
        let result = format!("kept-{key}");
        let extra =
            [token.to_string(), "SUCCESS".into(), "RESULT".into(), result.clone(), "KEEP".into(), KEEP_MS.to_string()];
        let args = self.lock_call("LOCK.UNLOCK", &key, &extra);
        match self.call(conn, Kind::Unlock(token), &key, 0, args).await? {
            Answer::Int(0) => {
                self.standing.keeps.push((key, result));
                Ok(())
            }
            other => panic!("{}: LOCK.UNLOCK {key} KEEP answered {other:?}", self.owner),
        }
    }
}

/// The controller's calls on behalf of an owner after a restart, recorded like the clients'.
struct Controller {
    raw: Raw,
    events: Vec<Event>,
}

impl Controller {
    async fn call(&mut self, owner: &str, key: &str, kind: Kind, px: u64, args: Vec<String>) -> Answer {
        let sent = Instant::now();
        let reply = self.raw.cmd(args.iter().map(|a| a.as_bytes().to_vec()).collect()).await;
        let answer = answer(&reply);
        self.events.push(Event {
            owner: owner.to_owned(),
            key: key.to_owned(),
            kind,
            px,
            args,
            sent,
            reply: Some((answer.clone(), Instant::now())),
        });
        answer
    }

    async fn try_lock(&mut self, owner: &str, key: &str, if_held: IfHeld) -> Answer {
        let mut args =
            vec!["LOCK.TRY".to_owned(), key.to_owned(), owner.to_owned(), "PX".into(), CHECK_LEASE_MS.to_string()];
        if if_held == IfHeld::NoQueue {
            args.push("NOQUEUE".into());
        }
        self.call(owner, key, Kind::Try, CHECK_LEASE_MS, args).await
    }

    async fn unlock_failure(&mut self, owner: &str, key: &str, token: u64) -> Answer {
        let args = vec!["LOCK.UNLOCK".into(), key.to_owned(), owner.to_owned(), token.to_string(), "FAILURE".into()];
        self.call(owner, key, Kind::Unlock(token), 0, args).await
    }

    /// Leaves `owner` neither holding nor queued on `key` (whatever indeterminate calls did).
    async fn clean(&mut self, owner: &str, key: &str) {
        for _ in 0..4 {
            match self.try_lock(owner, key, IfHeld::NoQueue).await {
                Answer::Acquired(token) => {
                    let reply = self.unlock_failure(owner, key, token).await;
                    assert!(matches!(reply, Answer::Int(0 | 1)), "cleanup UNLOCK {key} {owner} {token}: {reply:?}");
                    return;
                }
                Answer::Busy(_) => {
                    let args = vec!["LOCK.CANCEL".into(), key.to_owned(), owner.to_owned()];
                    let reply = self.call(owner, key, Kind::Cancel, 0, args).await;
                    assert!(matches!(reply, Answer::Int(0 | 1)), "cleanup CANCEL {key} {owner}: {reply:?}");
                    return;
                }
                // An owed DONE is paid; a kept result answers DONE until it ends (nobody is in
                // line meanwhile).
                Answer::Done(..) => {}
                other => panic!("cleanup LOCK.TRY {key} {owner} NOQUEUE: {other:?}"),
            }
        }
    }
}

/// A queue built by the controller before a kill: `holder` holds `token`, `order` are in line.
struct FifoProbe {
    key: String,
    holder: String,
    token: u64,
    order: Vec<String>,
    owed_key: String,
    owed: Vec<String>,
    owed_result: String,
}

async fn build_probe(raw: &mut Raw, round: usize, rng: &mut Rng) -> FifoProbe {
    let key = format!("fifo:{round}");
    let holder = format!("fifo-holder-{round}");
    let token = acquired(&call(raw, args!["LOCK.TRY", &key, &holder, "PX", 60_000u64]).await, "probe holder");
    let mut order: Vec<String> = (0..5).map(|i| format!("fifo-{round}-{i}")).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for (position, owner) in order.iter().enumerate() {
        let reply = call(raw, args!["LOCK.TRY", &key, owner, "PX", 60_000u64]).await;
        assert_eq!(reply, Answer::Queued(position as i64 + 1), "probe {owner}");
    }
    let owed_key = format!("owed:{round}");
    let finisher = format!("owed-holder-{round}");
    let owed_token =
        acquired(&call(raw, args!["LOCK.TRY", &owed_key, &finisher, "PX", 60_000u64]).await, "owed holder");
    let owed: Vec<String> = (0..2).map(|i| format!("owed-{round}-{i}")).collect();
    for owner in &owed {
        assert!(matches!(call(raw, args!["LOCK.TRY", &owed_key, owner, "PX", 60_000u64]).await, Answer::Queued(_)));
    }
    let owed_result = format!("owed-result-{round}");
    let reply =
        call(raw, args!["LOCK.UNLOCK", &owed_key, &finisher, owed_token, "SUCCESS", "RESULT", &owed_result]).await;
    assert_eq!(reply, Answer::Int(2), "SUCCESS owed to both queued owners");
    FifoProbe { key, holder, token, order, owed_key, owed, owed_result }
}

async fn check_probe(raw: &mut Raw, probe: &FifoProbe) {
    let key = &probe.key;
    let reply = call(raw, args!["LOCK.TRY", key, &probe.holder, "PX", 60_000u64]).await;
    assert_eq!(reply, Answer::Acquired(probe.token), "{key}: the probe's holder keeps its token");
    // Asked in another order than they joined: positions are the joining order.
    let mut asked: Vec<(usize, &String)> = probe.order.iter().enumerate().collect();
    asked.sort_by(|a, b| a.1.cmp(b.1));
    for (position, owner) in asked {
        let reply = call(raw, args!["LOCK.TRY", key, owner, "PX", 60_000u64]).await;
        assert_eq!(reply, Answer::Queued(position as i64 + 1), "{key}: {owner}'s place in line survives, in order");
    }
    let finisher = probe.owed_key.replace("owed:", "owed-holder-");
    let done = Answer::Done(finisher, Some(probe.owed_result.clone()));
    assert_eq!(call(raw, args!["LOCK.TRY", &probe.owed_key, &probe.owed[0]]).await, done, "owed DONE (TRY)");
    assert_eq!(
        call(raw, args!["LOCK.WAIT", &probe.owed_key, &probe.owed[1], 2_000u64]).await,
        done,
        "owed DONE (WAIT)"
    );
    // Wind the probe down: the first in line takes over with a larger token.
    for owner in &probe.order[1..] {
        assert_eq!(call(raw, args!["LOCK.CANCEL", key, owner]).await, Answer::Int(1));
    }
    assert_eq!(call(raw, args!["LOCK.UNLOCK", key, &probe.holder, probe.token, "FAILURE"]).await, Answer::Int(1));
    let next = acquired(&call(raw, args!["LOCK.TRY", key, &probe.order[0]]).await, "probe hand-off");
    assert!(next > probe.token, "{key}: hand-off token {next} after {}", probe.token);
    assert_eq!(call(raw, args!["LOCK.UNLOCK", key, &probe.order[0], next, "FAILURE"]).await, Answer::Int(0));
}

/// The checks after a restart that need the clients' standing at the kill.
async fn check_after_restart(
    ctl: &mut Controller,
    clients: &[Client],
    unlocks_sent: u64,
    kill_at: Instant,
    stats: &mut Stats,
) {
    // (iii) Every acknowledged live holding survives, with its token.
    for client in clients {
        if let Some((key, token)) = &client.standing.holding {
            let started = client
                .events
                .iter()
                .rev()
                .find(|e| matches!(e.reply, Some((Answer::Acquired(t), _)) if t == *token))
                .expect("the ACQUIRED")
                .sent;
            if started + Duration::from_millis(LEASE_MS) < kill_at + Duration::from_millis(500) {
                continue;
            }
            let reply = ctl.try_lock(&client.owner, key, IfHeld::Queue).await;
            assert_eq!(
                reply,
                Answer::Acquired(*token),
                "{}: its holding of {key} (token {token}) survives the kill",
                client.owner
            );
            stats.holdings += 1;
        }
    }
    // (v) Places in line keep their order.
    for k in 0..KEYS {
        let key = contended_key(k);
        let queued: Vec<(&Client, Instant, Instant)> = clients
            .iter()
            .filter_map(|c| match &c.standing.queued {
                Some((q, sent, received)) if *q == key => Some((c, *sent, *received)),
                _ => None,
            })
            .collect();
        let mut replies = Vec::new();
        for (client, sent, received) in &queued {
            let reply = ctl.try_lock(&client.owner, &key, IfHeld::Queue).await;
            replies.push((client.owner.clone(), *sent, *received, reply));
        }
        for a in &replies {
            for b in &replies {
                // a certainly joined before b; a still in line after the restart means b is too,
                // behind it.
                if a.2 < b.1
                    && let Answer::Queued(pa) = a.3
                {
                    let history = |owner: &str| -> Vec<String> {
                        let client = clients.iter().find(|c| c.owner == owner).expect("client");
                        let on_key = client.events.iter().filter(|e| e.key == key).collect::<Vec<_>>();
                        on_key[on_key.len().saturating_sub(12)..]
                            .iter()
                            .map(|e| format!("{:?} -> {:?}", e.args, e.reply.as_ref().map(|r| &r.0)))
                            .collect()
                    };
                    assert!(
                        matches!(b.3, Answer::Queued(pb) if pb > pa),
                        "{key}: {} joined before {} but after the restart {} answered {:?} and {} {:?}\n{}: {:#?}\n{}: {:#?}",
                        a.0,
                        b.0,
                        a.0,
                        a.3,
                        b.0,
                        b.3,
                        a.0,
                        history(&a.0),
                        b.0,
                        history(&b.0)
                    );
                    stats.fifo_pairs += 1;
                }
            }
        }
        stats.places += replies.iter().filter(|r| matches!(r.3, Answer::Queued(_))).count();
    }
    // (iv) Kept results.
    for client in clients {
        for (key, result) in &client.standing.keeps {
            let reply = ctl.try_lock("keep-checker", key, IfHeld::NoQueue).await;
            assert_eq!(
                reply,
                Answer::Done(client.owner.clone(), Some(result.clone())),
                "{key}: the kept result survives"
            );
            stats.keeps += 1;
        }
    }
    // Retried UNLOCKs get their first answer.
    for client in clients {
        if let Some((args, first, count)) = &client.standing.last_unlock
            && unlocks_sent - count < MEMO_SAFE
        {
            let token: u64 = args[3].parse().expect("token");
            let reply = ctl.call(&client.owner, &args[1], Kind::Unlock(token), 0, args.clone()).await;
            assert_eq!(&reply, first, "{}: retried {args:?} after the restart", client.owner);
            stats.unlock_retries += 1;
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    acknowledged: usize,
    indeterminate: usize,
    grants: usize,
    holdings: usize,
    places: usize,
    fifo_pairs: usize,
    keeps: usize,
    unlock_retries: usize,
}

/// (i) tokens and (ii) mutual exclusion, over the whole history.
fn check_history(events: &[Event], kills: &[Instant]) {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for event in events {
        by_key.entry(&event.key).or_default().push(event);
    }
    for (key, events) in by_key {
        // A token belongs to one owner.
        let mut owners: HashMap<u64, &str> = HashMap::new();
        let mut grants: Vec<(&Event, u64, Instant)> = Vec::new();
        for event in &events {
            if let Some((Answer::Acquired(token), received)) = &event.reply {
                let owner = *owners.entry(*token).or_insert(&event.owner);
                assert_eq!(owner, event.owner, "{key}: token {token} answered to {owner} and to {}", event.owner);
                grants.push((event, *token, *received));
            }
        }
        // Tokens grow in real time: a grant asked for after another was answered has a token at
        // least as large (equal: the same holding renewed).
        let mut by_received = grants.clone();
        by_received.sort_by_key(|g| g.2);
        let mut by_sent = grants.clone();
        by_sent.sort_by_key(|g| g.0.sent);
        let (mut i, mut top): (usize, Option<(u64, &Event)>) = (0, None);
        for (event, token, _) in &by_sent {
            while i < by_received.len() && by_received[i].2 < event.sent {
                if top.is_none_or(|(t, _)| by_received[i].1 > t) {
                    top = Some((by_received[i].1, by_received[i].0));
                }
                i += 1;
            }
            if let Some((t, before)) = top {
                assert!(
                    *token >= t,
                    "{key}: {} was granted {token} (asked {:?}) after {} had been answered {t}",
                    event.owner,
                    event.args,
                    before.owner
                );
            }
        }
        // (i) after each restart, new grants are above every token acknowledged before the kill.
        for kill in kills {
            let before = grants.iter().filter(|g| g.2 < *kill).map(|g| g.1).max();
            if let Some(before) = before {
                for (event, token, _) in grants.iter().filter(|g| g.0.sent > *kill) {
                    let renewed = grants.iter().any(|g| g.1 == *token && g.2 < *kill);
                    assert!(
                        renewed || *token > before,
                        "{key}: {} granted {token} after a restart, not above {before}",
                        event.owner
                    );
                }
            }
        }
        // (ii) holdings by acknowledged replies never overlap: each runs from its ACQUIRED reply
        // to its UNLOCK being sent, or to its lease end (counted from the call, which is early).
        let mut unlocks: HashMap<(&str, u64), Vec<Instant>> = HashMap::new();
        for event in &events {
            if let Kind::Unlock(token) = event.kind {
                unlocks.entry((&event.owner, token)).or_default().push(event.sent);
            }
        }
        let mut holdings: Vec<(Instant, Instant, u64, &str)> = grants
            .iter()
            .map(|(event, token, received)| {
                let lease_end = event.sent + Duration::from_millis(event.px);
                let unlock = unlocks
                    .get(&(event.owner.as_str(), *token))
                    .into_iter()
                    .flatten()
                    .filter(|sent| **sent >= *received)
                    .min()
                    .copied();
                (*received, unlock.map_or(lease_end, |u| u.min(lease_end)), *token, event.owner.as_str())
            })
            .collect();
        holdings.sort();
        for (i, a) in holdings.iter().enumerate() {
            for b in holdings[i + 1..].iter().take_while(|b| b.0 < a.1) {
                assert!(a.2 == b.2, "{key}: {} held {} while {} held {} ({:?} and {:?})", a.3, a.2, b.3, b.2, a, b);
            }
        }
    }
}

async fn kill_under_load(policy: &str) {
    let seed = seed();
    println!("appendfsync {policy}: seed {seed} (BATON_DURABILITY_SEED replays the choices)");
    let mut rng = Rng::new(seed);
    let dir = ScratchDir::new("durability-load");
    let flags = ["--appendfsync", policy];
    let unlocks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|index| Client {
            index,
            owner: format!("c{index}"),
            rng: Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            events: Vec::new(),
            standing: Standing::default(),
            before_last_call: (None, None),
            keep_episodes: 0,
            unlocks: std::sync::Arc::clone(&unlocks),
        })
        .collect();
    let mut server = start(&dir, &flags);
    let mut controller_events: Vec<Event> = Vec::new();
    let mut kills = Vec::new();
    let mut stats = Stats::default();
    let began = Instant::now();
    for round in 0..ROUNDS {
        let addr = server.addr;
        let mut probe_con = Raw::connect(addr).await;
        let probe = build_probe(&mut probe_con, round, &mut rng).await;
        let tasks: Vec<_> = clients
            .drain(..)
            .map(|mut client| {
                client.standing = Standing::default();
                tokio::spawn(client.run(addr))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200 + rng.below(500))).await;
        let log = kill9(server);
        // Reaped: nothing sent from now on reaches it.
        let kill_at = Instant::now();
        kills.push(kill_at);
        for task in tasks {
            let mut client = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .unwrap_or_else(|_| panic!("a client did not notice the kill; server log:\n{log}"))
                .expect("a workload client panicked (see above)");
            client.settle(kill_at);
            clients.push(client);
        }
        drop(probe_con);
        let unlocks_sent = unlocks.load(std::sync::atomic::Ordering::SeqCst);

        server = start(&dir, &flags);
        let mut ctl = Controller { raw: Raw::connect(server.addr).await, events: Vec::new() };
        check_after_restart(&mut ctl, &clients, unlocks_sent, kill_at, &mut stats).await;
        check_probe(&mut ctl.raw, &probe).await;
        // Clean up whatever indeterminate calls left, so the next round starts from free keys.
        for client in &clients {
            for k in 0..KEYS {
                ctl.clean(&client.owner, &contended_key(k)).await;
            }
        }
        for k in 0..KEYS {
            let state = ctl.raw.cmd(args!["LOCK.INFO", contended_key(k)]).await;
            assert!(
                !state.field("state").bulk_is("held"),
                "{}: still held after the cleanup: {state:?}",
                contended_key(k)
            );
            assert_eq!(state.field("waiters"), Resp::Int(0), "{}: {state:?}", contended_key(k));
        }
        controller_events.append(&mut ctl.events);
    }
    drop(server);
    let mut events: Vec<Event> = controller_events;
    for client in &mut clients {
        events.append(&mut client.events);
    }
    for event in &events {
        match &event.reply {
            Some((Answer::Acquired(_), _)) => {
                stats.grants += 1;
                stats.acknowledged += 1;
            }
            Some(_) => stats.acknowledged += 1,
            None => stats.indeterminate += 1,
        }
    }
    check_history(&events, &kills);
    println!("appendfsync {policy}: {ROUNDS} kills in {:?}: {stats:?}", began.elapsed());
    assert!(stats.grants > 100, "the workload made progress: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_under_load_always() {
    kill_under_load("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_under_load_everysec() {
    kill_under_load("everysec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_under_load_no() {
    kill_under_load("no").await;
}

// ---------------------------------------------------------------------------------------------
// 2. A retried UNLOCK after a kill

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_unlock_after_a_kill_gets_the_first_answer() {
    let dir = ScratchDir::new("durability-unlock");
    let server = start(&dir, &[]);
    let mut raw = Raw::connect(server.addr).await;
    // FAILURE with one in line (1), FAILURE with nobody (0), SUCCESS told to two (2).
    let t1 = acquired(&call(&mut raw, args!["LOCK.TRY", "u:handoff", "a"]).await, "a");
    assert_eq!(call(&mut raw, args!["LOCK.TRY", "u:handoff", "b"]).await, Answer::Queued(1));
    let t2 = acquired(&call(&mut raw, args!["LOCK.TRY", "u:free", "a"]).await, "a");
    let t3 = acquired(&call(&mut raw, args!["LOCK.TRY", "u:done", "a"]).await, "a");
    assert_eq!(call(&mut raw, args!["LOCK.TRY", "u:done", "b"]).await, Answer::Queued(1));
    assert_eq!(call(&mut raw, args!["LOCK.TRY", "u:done", "c"]).await, Answer::Queued(2));
    let unlocks = [
        (args!["LOCK.UNLOCK", "u:handoff", "a", t1, "FAILURE"], Answer::Int(1)),
        (args!["LOCK.UNLOCK", "u:free", "a", t2, "FAILURE", "REASON", "gone"], Answer::Int(0)),
        (args!["LOCK.UNLOCK", "u:done", "a", t3, "SUCCESS", "RESULT", "r"], Answer::Int(2)),
    ];
    for (unlock, expected) in &unlocks {
        assert_eq!(&call(&mut raw, unlock.clone()).await, expected);
    }
    kill9(server);
    let server = start(&dir, &[]);
    let mut raw = Raw::connect(server.addr).await;
    for (unlock, expected) in &unlocks {
        assert_eq!(&call(&mut raw, unlock.clone()).await, expected, "retried after the restart");
    }
    // The retries changed nothing: b holds u:handoff with a new token, u:free is free.
    let info = raw.cmd(args!["LOCK.INFO", "u:handoff"]).await;
    assert_eq!(info.field("holder").opt_text().as_deref(), Some("b"));
    assert!(info.field("token").int() as u64 > t1);
    assert!(raw.cmd(args!["LOCK.INFO", "u:free"]).await.field("state").bulk_is("free"));
    // A guess with another token is still refused.
    let reply = call(&mut raw, args!["LOCK.UNLOCK", "u:free", "a", t2 + 1_000_000, "FAILURE"]).await;
    assert!(matches!(&reply, Answer::Error(e) if e.starts_with("NOLOCK")), "{reply:?}");
}

/// A key's queue is bounded by weight (48 MiB of owners): telling it all DONE is one journal
/// record, and a record must be readable back. Owners of 1 KiB queue until -QUEUEFULL (well past
/// the 64 MiB a record may take, without the bound), SUCCESS tells them all DONE, and after a
/// SIGKILL every one of them is still owed its DONE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_told_done_survives_a_kill() {
    const OFFERED: usize = 70_000;
    const BATCH: usize = 1_000;
    let owner = |n: usize| format!("{n:01024}");
    let dir = ScratchDir::new("durability-full-queue");
    let server = start(&dir, &[]);
    let mut conn = Connection::connect(server.addr, Duration::from_secs(30)).await.expect("connect");
    let token = acquired(&answer(&conn.call(&[b"LOCK.TRY", b"big", b"holder"]).await.expect("TRY")), "holder");
    let (mut queued, mut refused) = (0, 0);
    for start in (0..OFFERED).step_by(BATCH) {
        for n in start..start + BATCH {
            conn.queue(&[b"LOCK.TRY", b"big", owner(n).as_bytes(), b"PX", b"600000"]);
        }
        conn.flush().await.expect("flush");
        for n in start..start + BATCH {
            match answer(&conn.read().await.expect("reply")) {
                Answer::Queued(position) => {
                    assert_eq!((position as usize, refused), (n + 1, 0), "in order, and none after a refusal");
                    queued += 1;
                }
                Answer::Error(error) if error.starts_with("QUEUEFULL ") => refused += 1,
                other => panic!("owner {n}: {other:?}"),
            }
        }
    }
    assert!(queued > 40_000 && refused > 0, "{queued} queued, {refused} refused");
    let token = token.to_string();
    let unlock =
        [&b"LOCK.UNLOCK"[..], b"big", b"holder", token.as_bytes(), b"SUCCESS", b"RESULT", b"ok", b"KEEP", b"600000"];
    assert_eq!(answer(&conn.call(&unlock).await.expect("UNLOCK")), Answer::Int(queued as i64));
    drop(conn);
    kill9(server);

    let server = start(&dir, &[]);
    let mut raw = Raw::connect(server.addr).await;
    for n in [0, queued / 2, queued - 1] {
        let deadline = Instant::now() + Duration::from_secs(60);
        let reply = loop {
            match call(&mut raw, args!["LOCK.TRY", "big", owner(n)]).await {
                Answer::Error(error) if error.starts_with("LOADING") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                reply => break reply,
            }
        };
        assert_eq!(reply, Answer::Done("holder".into(), Some("ok".into())), "owner {n} after the restart");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. SIGTERM is a clean stop, not a disconnect

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_not_a_client_disconnect() {
    let dir = ScratchDir::new("durability-term");
    let mut server = start(&dir, &[]);
    let mut holder = Raw::connect(server.addr).await;
    let token = acquired(&call(&mut holder, args!["LOCK.TRY", "t:held", "holder", "PX", 60_000u64]).await, "holder");
    let mut waiter = Raw::connect(server.addr).await;
    assert_eq!(call(&mut waiter, args!["LOCK.TRY", "t:held", "waiter", "PX", 60_000u64]).await, Answer::Queued(1));
    server.proc.signal("TERM");
    let status = wait_exit(&mut server, Duration::from_secs(15)).expect("SIGTERM stops the server");
    assert!(status.success(), "clean stop: {status:?}\n{}", server.log_text());
    drop((holder, waiter));
    let server = start(&dir, &[]);
    let persistence = info(server.addr, "persistence").await;
    assert_eq!(persistence["loading_clean_shutdown"], "1", "{persistence:?}");
    let mut raw = Raw::connect(server.addr).await;
    let state = raw.cmd(args!["LOCK.INFO", "t:held"]).await;
    assert_eq!(state.field("holder").opt_text().as_deref(), Some("holder"), "{state:?}");
    assert_eq!(state.field("token").int() as u64, token);
    assert_eq!(state.field("waiters").int(), 1, "{state:?}");
    assert_eq!(call(&mut raw, args!["LOCK.TRY", "t:held", "holder"]).await, Answer::Acquired(token));
    assert_eq!(call(&mut raw, args!["LOCK.EXTEND", "t:held", "holder", token, 30_000u64]).await, Answer::Int(1));
}

// ---------------------------------------------------------------------------------------------
// 4. Power loss (everysec): the unsynced end of the segment is lost and garbage follows

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_cuts_the_torn_tail_and_tokens_stay_above() {
    let dir = ScratchDir::new("durability-power");
    // Leases capped short, so a future post-crash quarantine would not outlast the test.
    let flags = ["--appendfsync", "everysec", "--max-lease-ms", "10000"];
    let server = start(&dir, &flags);
    let mut raw = Raw::connect(server.addr).await;
    let mut top: HashMap<String, u64> = HashMap::new();
    // Phase A: holdings, then wait until they are fsynced.
    let mut synced_holdings = Vec::new();
    for i in 0..5 {
        let key = format!("p:held:{i}");
        let token = acquired(&call(&mut raw, args!["LOCK.TRY", &key, "a", "PX", 10_000u64]).await, "phase A");
        synced_holdings.push((key.clone(), token));
        top.insert(key, token);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let persistence = loop {
        let persistence = info(server.addr, "persistence").await;
        if field_u64(&persistence, "journal_synced_lsn") >= field_u64(&persistence, "journal_last_lsn") {
            break persistence;
        }
        assert!(Instant::now() < deadline, "everysec never synced: {persistence:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let segment = PathBuf::from(&persistence["journal_current_segment"]);
    let synced = field_u64(&persistence, "journal_current_segment_synced_bytes");
    // Phase B: grants right before the "power loss" (their records may well be cut).
    for round in 0..50 {
        for i in 0..4 {
            let key = format!("p:churn:{i}");
            let token = acquired(&call(&mut raw, args!["LOCK.TRY", &key, "b", "PX", 2_000u64]).await, "phase B");
            assert!(token > top.get(&key).copied().unwrap_or(0));
            top.insert(key.clone(), token);
            assert_eq!(
                call(&mut raw, args!["LOCK.UNLOCK", &key, "b", token, "FAILURE"]).await,
                Answer::Int(0),
                "round {round}"
            );
        }
    }
    kill9(server);
    let length = std::fs::metadata(&segment).expect("segment").len();
    assert!(length >= synced, "{} is {length} bytes, synced {synced}", segment.display());
    let file = std::fs::OpenOptions::new().write(true).open(&segment).expect("open segment");
    file.set_len(synced).expect("truncate to the synced length");
    drop(file);
    let mut file = std::fs::OpenOptions::new().append(true).open(&segment).expect("open segment");
    file.write_all(&Rng::new(7).bytes(300)).expect("garbage");
    drop(file);
    println!("power loss: {} cut from {length} to {synced} bytes, 300 garbage bytes appended", segment.display());

    // The machine "rebooted", and its wall clock now reads an hour behind: only the fsynced
    // token reservation keeps new tokens above the old ones.
    let server = start(&dir, &[&flags[..], &["--boot-id", "other", "--wall-clock-offset-ms", "-3600000"][..]].concat());
    let log = server.log_text();
    assert!(log.contains("cut a torn tail"), "the torn tail is logged:\n{log}");
    let persistence = info(server.addr, "persistence").await;
    assert_eq!(persistence["loading_unclean_reboot"], "1", "{persistence:?}");
    // Grants pause for the longest lease ever promised (10 s) plus 1 s.
    let paused = field_u64(&persistence, "grants_paused_ms");
    assert!((5_000..=11_000).contains(&paused), "grants paused for {paused} ms: {persistence:?}");
    let mut raw = Raw::connect(server.addr).await;
    assert_eq!(
        call(&mut raw, args!["LOCK.TRY", "p:fresh", "c", "NOQUEUE"]).await,
        Answer::Busy(String::new()),
        "a free lock is not granted while grants are paused"
    );
    // Fsynced holdings survive.
    for (key, token) in &synced_holdings {
        assert_eq!(
            call(&mut raw, args!["LOCK.TRY", key, "a", "PX", 10_000u64]).await,
            Answer::Acquired(*token),
            "{key}"
        );
    }
    // New grants are above every token acknowledged before, cut records or not. (Polled: a
    // server may hold grants back after an OS crash.)
    for (key, before) in top.iter().filter(|(key, _)| key.starts_with("p:churn:")) {
        let owner = "after";
        let deadline = Instant::now() + Duration::from_secs(20);
        let token = loop {
            match call(&mut raw, args!["LOCK.TRY", key, owner, "PX", 2_000u64, "NOQUEUE"]).await {
                Answer::Acquired(token) => break token,
                other => assert!(Instant::now() < deadline, "{key}: no grant after the restart: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(token > *before, "{key}: granted {token} after the power loss, not above {before}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Damage in the middle of the journal

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("journal-") && n.ends_with(".seg"))
        })
        .collect();
    files.sort();
    files
}

/// Pipelines `LOCK.TRY <prefix><i> owner` for `count` keys; returns the tokens.
async fn hold_many(addr: SocketAddr, prefix: &str, count: usize, owner: &str) -> (Connection, Vec<u64>) {
    let mut conn = Connection::connect(addr, Duration::from_secs(30)).await.expect("connect");
    let mut tokens = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        for i in chunk {
            let key = format!("{prefix}{i}");
            conn.queue(&[b"LOCK.TRY", key.as_bytes(), owner.as_bytes(), b"PX", b"600000"]);
        }
        conn.flush().await.expect("flush");
        for _ in chunk {
            tokens.push(acquired(&answer(&conn.read().await.expect("reply")), "hold_many"));
        }
    }
    (conn, tokens)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_middle_segment_refuses_to_start_until_repaired() {
    let dir = ScratchDir::new("durability-corrupt");
    // Small enough that 6,000 holds (about 36 bytes of journal each) fill three segments or more.
    let flags = ["--journal-segment-size", "32kb"];
    let mut server = start(&dir, &flags);
    let (conn, tokens) = hold_many(server.addr, "c:", 6_000, "holder").await;
    server.proc.signal("TERM");
    wait_exit(&mut server, Duration::from_secs(15)).expect("stopped");
    drop(conn);
    let files = segments(dir.path());
    assert!(files.len() >= 3, "at least 3 segments: {files:?}");
    let first = &files[0];
    let mut bytes = std::fs::read(first).expect("read segment");
    let flipped = bytes.len() / 2;
    bytes[flipped] ^= 0x5A;
    std::fs::write(first, &bytes).expect("write segment");

    let (code, log) = run_to_exit(&["--dir", dir.arg(), "--journal-segment-size", "32kb"]);
    assert_eq!(code, Some(1), "a corrupt middle segment stops the server:\n{log}");
    let name = first.display().to_string();
    let line = log.lines().find(|line| line.contains(&name)).unwrap_or_else(|| panic!("the log names {name}:\n{log}"));
    assert!(line.contains("--journal-repair"), "the message names --journal-repair: {line}");
    let offset: u64 = line
        .split("corrupt at byte ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("the message gives the offset: {line}"));
    assert!(
        offset <= flipped as u64 && flipped as u64 - offset < 64 * 1024,
        "offset {offset}, flipped byte {flipped}: {line}"
    );

    let server = start(&dir, &[&flags[..], &["--journal-repair"][..]].concat());
    let log = server.log_text();
    assert!(log.contains("--journal-repair cut damaged records"), "{log}");
    let mut raw = Raw::connect(server.addr).await;
    // The records before the damage are kept.
    assert_eq!(call(&mut raw, args!["LOCK.TRY", "c:0", "holder"]).await, Answer::Acquired(tokens[0]));
    println!("corrupt segment: byte {flipped} of {name} flipped, refused at offset {offset}, repaired");
}

// ---------------------------------------------------------------------------------------------
// 6. Two servers, one directory

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_dir_exits() {
    let dir = ScratchDir::new("durability-twice");
    let first = start(&dir, &[]);
    let (code, log) = run_to_exit(&["--dir", dir.arg()]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(dir.arg()), "the error names the directory:\n{log}");
    assert!(!log.contains("ready to accept connections"), "{log}");
    // The first one is unharmed.
    let mut raw = Raw::connect(first.addr).await;
    assert!(matches!(call(&mut raw, args!["LOCK.TRY", "x", "y"]).await, Answer::Acquired(_)));
}

// ---------------------------------------------------------------------------------------------
// 7. Compaction bounds the journal

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_bounds_the_journal() {
    let dir = ScratchDir::new("durability-compact");
    let flags = ["--auto-aof-rewrite-min-size", "256kb", "--journal-segment-size", "64kb"];
    let server = start(&dir, &flags);
    let mut raw = Raw::connect(server.addr).await;
    let held: Vec<(String, u64)> = {
        let mut held = Vec::new();
        for i in 0..3 {
            let key = format!("keep-held:{i}");
            let token = acquired(&call(&mut raw, args!["LOCK.TRY", &key, "steady", "PX", 120_000u64]).await, "held");
            held.push((key, token));
        }
        held
    };
    let mut conn = Connection::connect(server.addr, Duration::from_secs(10)).await.expect("connect");
    let began = Instant::now();
    let (mut max_size, mut snapshots, mut pairs) = (0u64, 0u64, 0u64);
    let mut last_info = Instant::now();
    while began.elapsed() < Duration::from_secs(4) || snapshots == 0 {
        assert!(began.elapsed() < Duration::from_secs(15), "no snapshot within 15 s (max size {max_size})");
        let keys: Vec<String> = (0..200).map(|i| format!("churn:{}", (pairs + i) % 5_000)).collect();
        for key in &keys {
            conn.queue(&[b"LOCK.TRY", key.as_bytes(), b"churner", b"PX", b"10000"]);
        }
        conn.flush().await.expect("flush");
        let mut tokens = Vec::new();
        for _ in &keys {
            tokens.push(acquired(&answer(&conn.read().await.expect("reply")), "churn"));
        }
        for (key, token) in keys.iter().zip(&tokens) {
            let token = token.to_string();
            conn.queue(&[b"LOCK.UNLOCK", key.as_bytes(), b"churner", token.as_bytes(), b"FAILURE"]);
        }
        conn.flush().await.expect("flush");
        for _ in &keys {
            assert_eq!(answer(&conn.read().await.expect("reply")), Answer::Int(0));
        }
        pairs += keys.len() as u64;
        if last_info.elapsed() > Duration::from_millis(100) {
            last_info = Instant::now();
            let persistence = info(server.addr, "persistence").await;
            max_size = max_size.max(field_u64(&persistence, "aof_current_size"));
            snapshots = field_u64(&persistence, "journal_snapshots_written");
        }
    }
    let persistence = info(server.addr, "persistence").await;
    let written = field_u64(&persistence, "journal_bytes_written");
    println!(
        "compaction: {pairs} TRY/UNLOCK pairs in {:?}, {written} journal bytes written, largest journal {max_size} bytes, {snapshots} snapshots",
        began.elapsed()
    );
    assert!(snapshots >= 1);
    assert!(max_size < 16 << 20, "the journal stays bounded: {max_size} bytes");
    assert!(written > 2 * max_size, "more was written ({written}) than is ever kept ({max_size})");
    drop(conn);
    kill9(server);
    let server = start(&dir, &flags);
    let mut raw = Raw::connect(server.addr).await;
    for (key, token) in &held {
        assert_eq!(call(&mut raw, args!["LOCK.TRY", key, "steady"]).await, Answer::Acquired(*token), "{key}");
    }
    for i in (0..5_000).step_by(97) {
        let state = raw.cmd(args!["LOCK.INFO", format!("churn:{i}")]).await;
        assert!(state.field("state").bulk_is("free"), "churn:{i}: {state:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 8. LOADING while a large journal replays

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_answers_loading_or_the_right_data() {
    const HELD: usize = 200_000;
    let dir = ScratchDir::new("durability-loading");
    let server = start(&dir, &[]);
    let (conn, tokens) = hold_many(server.addr, "l:", HELD, "bulk").await;
    kill9(server);
    drop(conn);

    // A fixed port, so that a client can connect before the server says it is ready.
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--dir", dir.arg()])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start baton");
    // Killed when dropped, whatever happens.
    let guard = baton_testkit::process::Proc { child };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut loading_replies, mut data_replies) = (0, 0);
    let mut conn = loop {
        if let Ok(conn) = Connection::connect(addr, Duration::from_secs(10)).await {
            break conn;
        }
        assert!(Instant::now() < deadline, "the server never listened");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    loop {
        assert!(Instant::now() < deadline, "still loading after 30 s");
        let i = (loading_replies + data_replies) * 7919 % HELD;
        let key = format!("l:{i}");
        let reply = conn.call(&[b"LOCK.TRY", key.as_bytes(), b"bulk"]).await.expect("reply");
        match answer(&reply) {
            Answer::Error(e) if e.starts_with("LOADING") => loading_replies += 1,
            Answer::Acquired(token) => {
                assert_eq!(token, tokens[i], "{key}: the holding came back with its token");
                data_replies += 1;
                if data_replies >= 20 {
                    break;
                }
            }
            other => panic!("{key}: during or after loading: {other:?}"),
        }
    }
    let persistence = info(addr, "persistence").await;
    println!(
        "loading: {loading_replies} LOADING replies before the data; took {} µs for {} keys",
        persistence["loading_took_usec"], persistence["loading_loaded_keys"]
    );
    assert_eq!(persistence["loading"], "0");
    assert_eq!(field_u64(&persistence, "loading_loaded_keys"), HELD as u64, "{persistence:?}");
    drop(guard);
}

// ---------------------------------------------------------------------------------------------
// 9. A full disk

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_answers_misconf_and_recovers() {
    let scratch = ScratchDir::new("durability-full");
    let mount = scratch.path().join("mnt");
    std::fs::create_dir_all(&mount).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mount)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        println!("SKIPPED full_disk_answers_misconf_and_recovers: `mount -t tmpfs` is not permitted here (needs root)");
        return;
    }
    let guard = Mounted(mount.clone());
    let dir = mount.join("journal");
    let dir_arg = dir.to_str().expect("utf-8").to_owned();
    let flags = ["--dir", dir_arg.as_str(), "--journal-segment-size", "64kb", "--appendfsync", "always"];
    let server = start_baton(&flags, "info");
    // Kept open to the end: closing it would release f:before.
    let mut holder = Raw::connect(server.addr).await;
    let before = acquired(&call(&mut holder, args!["LOCK.TRY", "f:before", "a", "PX", 60_000u64]).await, "before");
    let mut raw = Raw::connect(server.addr).await;

    // Fill the file system.
    let filler = mount.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.write_all(&[0u8; 512]);
    let _ = file.write_all(&[0u8; 1]);
    drop(file);

    // The first change that cannot be written waits for the disk; meanwhile the next ones are
    // refused with MISCONF and reads keep working.
    let addr = server.addr;
    let stuck = tokio::spawn(async move {
        let mut raw = Raw::connect(addr).await;
        let reply = call(&mut raw, args!["LOCK.TRY", "f:stuck", "s", "PX", 60_000u64]).await;
        (reply, raw)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    loop {
        i += 1;
        let key = format!("f:probe:{i}");
        let reply =
            tokio::time::timeout(Duration::from_secs(2), call(&mut raw, args!["LOCK.TRY", &key, "p", "PX", 60_000u64]))
                .await;
        match reply {
            Ok(Answer::Error(e)) if e.starts_with("MISCONF") => break,
            // Answered (the record fitted): keep going until the disk is really full.
            Ok(Answer::Acquired(_)) => {}
            Ok(other) => panic!("{key}: {other:?}"),
            // A change waiting for the disk; ask on another connection.
            Err(_) => raw = Raw::connect(addr).await,
        }
        assert!(Instant::now() < deadline, "no MISCONF with a full disk");
    }
    assert_eq!(raw.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    let state = raw.cmd(args!["LOCK.INFO", "f:before"]).await;
    assert_eq!(state.field("token").int() as u64, before, "reads work while the disk is full");
    let persistence = info(addr, "persistence").await;
    assert_eq!(persistence["aof_last_write_status"], "err", "{persistence:?}");

    std::fs::remove_file(&filler).expect("free the space");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match call(&mut raw, args!["LOCK.TRY", "f:after", "a", "PX", 60_000u64]).await {
            Answer::Acquired(token) => break token,
            Answer::Error(e) if e.starts_with("MISCONF") => {}
            other => panic!("after freeing space: {other:?}"),
        }
        assert!(Instant::now() < deadline, "still MISCONF 10 s after the space was freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (stuck_reply, _stuck_con) = tokio::time::timeout(Duration::from_secs(10), stuck)
        .await
        .expect("the change that waited for the disk is answered once it is written")
        .expect("task");
    let stuck_token = match stuck_reply {
        Answer::Acquired(token) => Some(token),
        Answer::Error(e) if e.starts_with("MISCONF") => None,
        other => panic!("f:stuck: {other:?}"),
    };
    let first_log = kill9(server);
    drop(holder);
    let server = start_baton(&flags, "info");
    let mut raw = Raw::connect(server.addr).await;
    let state = raw.cmd(args!["LOCK.INFO", "f:before"]).await;
    assert_eq!(
        state.get("token").and_then(|t| t.opt_int()),
        Some(before as i64),
        "f:before, held before the disk filled up, after a restart: {state:?}\nfirst server:\n{first_log}\nrestarted:\n{}",
        server.log_text()
    );
    assert_eq!(call(&mut raw, args!["LOCK.TRY", "f:before", "a"]).await, Answer::Acquired(before));
    assert_eq!(call(&mut raw, args!["LOCK.TRY", "f:after", "a"]).await, Answer::Acquired(after));
    if let Some(token) = stuck_token {
        assert_eq!(call(&mut raw, args!["LOCK.TRY", "f:stuck", "s"]).await, Answer::Acquired(token));
    }
    drop(server);
    drop(guard);
}
