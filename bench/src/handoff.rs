//! W3: the PING round trip (the floor), then hand-off latency between the waiters of one key:
//! LOCK.WAIT queues against the Redisson-style recipe (SET NX, PUBLISH on release, retry).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_testkit::Resp;
use baton_testkit::client::Connection;
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::{Common, Target};
use crate::client::{self, UNLOCK_LUA, await_waiters, expect_int, expect_ok, load_script, open_many, token_of};
use crate::report::{Better, emit, emit_latencies, note};
use crate::results::System;
use crate::stats::{new_hist, now_ns, quantile_us};
use crate::{Res, fail, join_all};

pub async fn ping_floor(common: &Common, pings: u64) -> Res<()> {
    let mut conn = client::open(common).await?;
    for _ in 0..pings.min(1000) {
        conn.call(&[b"PING"]).await?;
    }
    let mut hist = new_hist();
    for _ in 0..pings {
        let t0 = now_ns();
        conn.call(&[b"PING"]).await?;
        hist.saturating_record(now_ns() - t0);
    }
    let workload = "W3 hand-off: PING round trip, 1 conn (the floor)";
    emit("w3.ping.p50", common.target, quantile_us(&hist, 0.5), Better::Lower, workload, "PING p50 (µs)");
    emit("w3.ping.p99", common.target, quantile_us(&hist, 0.99), Better::Lower, workload, "PING p99 (µs)");
    Ok(())
}

/// The state the participants of a hand-off run share (W3 here, C2 in `cluster_handoff`).
pub struct HandoffShared {
    /// now_ns() when the current holder started sending its unlock.
    pub unlock_sent: AtomicU64,
    count: AtomicU64,
    target_count: u64,
    pub stop: AtomicBool,
    started: u64,
    stopped_at: AtomicU64,
    hist: Mutex<Histogram<u64>>,
    /// Bumped on every acquisition, so an old holder re-waits only once the lock has moved on
    /// (its re-WAIT then never competes with the hand-off being measured, on either server).
    pub generation: watch::Sender<u64>,
}

impl HandoffShared {
    pub fn new(target_count: u64) -> HandoffShared {
        HandoffShared {
            unlock_sent: AtomicU64::new(0),
            count: AtomicU64::new(0),
            target_count,
            stop: AtomicBool::new(false),
            started: now_ns(),
            stopped_at: AtomicU64::new(0),
            hist: Mutex::new(new_hist()),
            generation: watch::channel(0).0,
        }
    }

    /// Waits until somebody else has taken the lock (false: the run stopped meanwhile).
    pub async fn moved_on(&self, mut moved: watch::Receiver<u64>) -> bool {
        loop {
            match tokio::time::timeout(Duration::from_millis(200), moved.changed()).await {
                Ok(_) => return true,
                Err(_) if self.stop.load(Ordering::Acquire) => return false,
                Err(_) => {}
            }
        }
    }

    /// A waiter got the lock at `t1`; returns whether the run is over.
    pub fn acquired(&self, t1: u64) -> bool {
        self.generation.send_modify(|generation| *generation += 1);
        if self.stop.load(Ordering::Acquire) {
            return true;
        }
        let t0 = self.unlock_sent.load(Ordering::Acquire);
        if let Ok(mut hist) = self.hist.lock() {
            hist.saturating_record(t1.saturating_sub(t0));
        }
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 >= self.target_count {
            self.stopped_at.store(t1, Ordering::Release);
            self.stop.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// `<id>.rate` and the `<id>.lat` latencies. A run cut short ends now.
    pub fn emit(&self, id: &str, target: impl Into<System>, workload: &str) {
        let target = target.into();
        let count = self.count.load(Ordering::Acquire);
        let stopped_at = match self.stopped_at.load(Ordering::Acquire) {
            0 => now_ns(),
            at => at,
        };
        let elapsed = stopped_at.saturating_sub(self.started).max(1);
        let hist = self.hist.lock().map(|hist| hist.clone()).unwrap_or_else(|_| new_hist());
        let rate = count as f64 * 1e9 / elapsed as f64;
        emit(&format!("{id}.rate"), target, rate, Better::Higher, workload, "hand-offs/s");
        emit_latencies(&format!("{id}.lat"), target, &hist, workload, "hand-off");
        note(format!("{target}: {count} hand-offs"));
    }
}

fn w3_workload(waiters: usize) -> String {
    format!("W3 hand-off, {waiters} waiters on one key")
}

pub async fn handoff_baton(common: &Common, waiters: usize, handoffs: u64) -> Res<()> {
    let key: &[u8] = b"bench:handoff";
    let mut holder = client::open(common).await?;
    let token = token_of(&holder.call(&[b"LOCK.TRY", key, b"hw0"]).await?)?;
    let mut conns = open_many(common, waiters).await?;
    for (index, conn) in conns.iter_mut().enumerate() {
        let owner = format!("hw{}", index + 1);
        conn.queue(&[b"LOCK.WAIT", key, owner.as_bytes(), b"0"]);
        conn.flush().await?;
    }
    let mut observer = client::open(common).await?;
    await_waiters(&mut observer, Target::Baton, key, waiters, Duration::from_secs(10)).await?;
    let shared = Arc::new(HandoffShared::new(handoffs));
    let mut set = JoinSet::new();
    set.spawn(handoff_baton_participant(holder, "hw0".to_owned(), Some(token), Arc::clone(&shared)));
    for (index, conn) in conns.into_iter().enumerate() {
        set.spawn(handoff_baton_participant(conn, format!("hw{}", index + 1), None, Arc::clone(&shared)));
    }
    join_all(set).await?;
    shared.emit("w3.handoff", Target::Baton, &w3_workload(waiters));
    Ok(())
}

/// Holds (FAILURE-unlocks at once) or waits; a WAIT was already sent when `token` is None.
async fn handoff_baton_participant(
    mut conn: Connection,
    owner: String,
    mut token: Option<u64>,
    shared: Arc<HandoffShared>,
) -> Res<()> {
    let key: &[u8] = b"bench:handoff";
    loop {
        if let Some(held) = token.take() {
            let held = held.to_string();
            if shared.stop.load(Ordering::Acquire) {
                conn.call(&[b"LOCK.UNLOCK", key, owner.as_bytes(), held.as_bytes(), b"SUCCESS"]).await?;
                return Ok(());
            }
            let mut moved = shared.generation.subscribe();
            moved.borrow_and_update();
            shared.unlock_sent.store(now_ns(), Ordering::Release);
            let reply = conn.call(&[b"LOCK.UNLOCK", key, owner.as_bytes(), held.as_bytes(), b"FAILURE"]).await?;
            if !matches!(reply, Resp::Int(0 | 1)) {
                return fail(format!("LOCK.UNLOCK FAILURE answered {reply}"));
            }
            // Like the Redis recipe's old holder: back in line once the lock has moved on.
            let _ = shared.moved_on(moved).await;
            conn.queue(&[b"LOCK.WAIT", key, owner.as_bytes(), b"0"]);
            conn.flush().await?;
        }
        let reply = conn.read().await?;
        let t1 = now_ns();
        match &reply {
            Resp::Array(items) if items.first().is_some_and(|item| item.bulk_is("DONE")) => return Ok(()),
            _ => {
                token = Some(token_of(&reply)?);
                shared.acquired(t1);
            }
        }
    }
}

pub async fn handoff_redis(common: &Common, waiters: usize, handoffs: u64) -> Res<()> {
    let key: &[u8] = b"bench:handoff";
    let channel: &[u8] = b"bench:handoff:released";
    let mut first = client::open(common).await?;
    let sha = load_script(&mut first, UNLOCK_LUA).await?;
    // A key left by an interrupted run would still be held for its lease.
    first.call(&[b"DEL", key]).await?;
    expect_ok(&first.call(&[b"SET", key, b"hw0", b"NX", b"PX", b"30000"]).await?, "SET NX")?;
    let shared = Arc::new(HandoffShared::new(handoffs));
    let mut participants = Vec::new();
    for _ in 0..=waiters {
        let cmd = client::open(common).await?;
        let mut sub = client::open(common).await?;
        let reply = sub.call(&[b"SUBSCRIBE", channel]).await?;
        if !matches!(&reply, Resp::Array(items) if items.first().is_some_and(|item| item.bulk_is("subscribe"))) {
            return fail(format!("SUBSCRIBE answered {reply}"));
        }
        participants.push((cmd, sub));
    }
    drop(first);
    // Every waiter learns the holder before anyone starts, so the first release wakes them all.
    let mut ready = Vec::new();
    for (index, (mut cmd, sub)) in participants.into_iter().enumerate() {
        let owner = format!("hw{index}");
        let state = if index == 0 {
            RedisState::Holding
        } else {
            match cmd.call(&[b"SET", key, owner.as_bytes(), b"NX", b"GET", b"PX", b"30000"]).await? {
                Resp::Bulk(holder) => RedisState::WaitFor(holder),
                other => return fail(format!("SET NX GET answered {other} while the lock is held")),
            }
        };
        ready.push((cmd, sub, owner, state));
    }
    let mut set = JoinSet::new();
    for (cmd, sub, owner, state) in ready {
        let participant = RedisParticipant { cmd, sub, owner, sha: sha.clone(), shared: Arc::clone(&shared) };
        set.spawn(participant.run(state));
    }
    join_all(set).await?;
    shared.emit("w3.handoff", Target::Redis, &w3_workload(waiters));
    Ok(())
}

enum RedisState {
    Holding,
    Try,
    WaitFor(Vec<u8>),
}

/// One client of the Redisson-style recipe: SET NX to take the lock; on failure wait on the
/// lock's channel for the holder's release, then retry.
struct RedisParticipant {
    cmd: Connection,
    sub: Connection,
    owner: String,
    sha: Vec<u8>,
    shared: Arc<HandoffShared>,
}

impl RedisParticipant {
    async fn run(mut self, mut state: RedisState) -> Res<()> {
        let key: &[u8] = b"bench:handoff";
        let channel: &[u8] = b"bench:handoff:released";
        loop {
            state = match state {
                RedisState::Holding => {
                    let stop = self.shared.stop.load(Ordering::Acquire);
                    let mut moved = self.shared.generation.subscribe();
                    moved.borrow_and_update();
                    self.shared.unlock_sent.store(now_ns(), Ordering::Release);
                    let owner = self.owner.as_bytes();
                    let reply = self.cmd.call(&[b"EVALSHA", &self.sha, b"1", key, owner, channel, owner]).await?;
                    expect_int(&reply, 1, "unlock script")?;
                    if stop {
                        return Ok(());
                    }
                    // Re-wait like baton's old holder: behind whoever takes the lock next.
                    if !self.shared.moved_on(moved).await {
                        return Ok(());
                    }
                    RedisState::Try
                }
                RedisState::Try => {
                    let owner = self.owner.as_bytes();
                    match self.cmd.call(&[b"SET", key, owner, b"NX", b"GET", b"PX", b"30000"]).await? {
                        reply if reply.is_nil() => {
                            self.shared.acquired(now_ns());
                            RedisState::Holding
                        }
                        Resp::Bulk(holder) => RedisState::WaitFor(holder),
                        other => return fail(format!("SET NX GET answered {other}")),
                    }
                }
                RedisState::WaitFor(holder) => {
                    loop {
                        let message = self.sub.read().await?;
                        if let Resp::Array(items) = &message
                            && items.len() == 3
                            && items[0].bulk_is("message")
                            && matches!(&items[2], Resp::Bulk(payload) if *payload == holder)
                        {
                            break;
                        }
                    }
                    RedisState::Try
                }
            };
        }
    }
}
