//! Many clients fighting over a few keys: never two holders of a key at once, tokens strictly
//! increasing per key in grant order, every WAIT answered exactly once, no errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use parking_lot::Mutex;

const CLIENTS: usize = 32;
const KEYS: usize = 4;
const OPS_PER_CLIENT: usize = 40;
const TIME_BUDGET: Duration = Duration::from_secs(5);

#[derive(Default)]
struct KeyLog {
    /// Tokens in the order the holders saw their grants, recorded while holding.
    grants: Mutex<Vec<(u64, String)>>,
    /// Set while somebody holds the key (by this test's bookkeeping).
    held: AtomicBool,
    /// Results of SUCCESS unlocks, `owner:token`, to check DONE answers against.
    results: Mutex<Vec<String>>,
}

/// Tokens must strictly increase per key in grant order. The one allowed repeat: the same owner
/// acquiring again while it still holds (ACQUIRED with the same token, a renewal), which happens
/// when a client closes its connection while holding and asks again from a new one before the
/// server noticed the close.
fn assert_tokens_increase(key: usize, grants: &[(u64, String)]) {
    for pair in grants.windows(2) {
        let renewal = pair[0] == pair[1];
        assert!(pair[0].0 < pair[1].0 || renewal, "key {key}: token {:?} granted before {:?}", pair[0], pair[1]);
    }
}

#[derive(Default)]
struct Tally {
    waits: AtomicU64,
    acquired: AtomicU64,
    done: AtomicU64,
    timed_out: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    overlaps: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    /// Counts a grant, checks that nobody else holds the key meanwhile, and holds it for `hold`.
    async fn hold(&self, log: &KeyLog, key: &str, owner: &str, token: u64, hold: Duration) {
        self.acquired.fetch_add(1, Ordering::Relaxed);
        self.take(log, key, owner, token, "");
        tokio::time::sleep(hold).await;
        log.held.store(false, Ordering::SeqCst);
    }

    /// A grant found when leaving (not counted as an answered WAIT), released at once.
    fn take_at_exit(&self, log: &KeyLog, key: &str, owner: &str, token: u64) {
        self.take(log, key, owner, token, " at exit");
        log.held.store(false, Ordering::SeqCst);
    }

    /// Marks the key held, recording the grant; nobody else may hold it at the same time.
    fn take(&self, log: &KeyLog, key: &str, owner: &str, token: u64, when: &str) {
        if log.held.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
            self.error(format!("{owner} acquired {key} (token {token}){when} while another holder held it"));
        }
        log.grants.lock().push((token, owner.to_owned()));
    }

    fn error(&self, text: String) {
        self.errors.lock().push(text);
    }
}

async fn client(index: usize, addr: std::net::SocketAddr, logs: Arc<Vec<KeyLog>>, tally: Arc<Tally>) {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
    let mut con = redis_conn(addr).await;
    let key_index = index % KEYS;
    let key = format!("contended-{key_index}");
    let owner = format!("client-{index}");
    let log = &logs[key_index];
    // A quarter of the clients are impatient, so timeouts (and places kept after them) happen.
    let timeout_ms = if index.is_multiple_of(4) { 3 } else { 2000 };
    let started = Instant::now();
    for op in 0..OPS_PER_CLIENT {
        if started.elapsed() > TIME_BUDGET {
            break;
        }
        tally.waits.fetch_add(1, Ordering::Relaxed);
        match query_out(&mut con, args!["LOCK.WAIT", &key, &owner, timeout_ms, "PX", 10_000]).await {
            Out::Acquired(token) => {
                tally.hold(log, &key, &owner, token, Duration::from_micros(200 + rng.below(1500))).await;
                // Mostly FAILURE, so that hand-offs dominate; SUCCESS fans out DONE.
                let success = rng.below(4) == 0;
                let reply = if success {
                    let result = format!("{owner}:{token}");
                    // Recorded before the UNLOCK so that a waiter told DONE can find it.
                    log.results.lock().push(result.clone());
                    query(&mut con, args!["LOCK.UNLOCK", &key, &owner, token, "SUCCESS", "RESULT", result]).await
                } else {
                    query(&mut con, args!["LOCK.UNLOCK", &key, &owner, token, "FAILURE", "REASON", format!("op {op}")])
                        .await
                };
                match reply {
                    Ok(redis::Value::Int(n)) if success && n >= 0 => {
                        tally.successes.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(redis::Value::Int(0 | 1)) if !success => {
                        tally.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    other => tally.error(format!("{owner} UNLOCK {key} {token}: {other:?}")),
                }
            }
            Out::Done { finisher, result } => {
                tally.done.fetch_add(1, Ordering::Relaxed);
                let finisher = String::from_utf8_lossy(&finisher).into_owned();
                let result = result.map(|r| String::from_utf8_lossy(&r).into_owned()).unwrap_or_default();
                if !result.starts_with(&format!("{finisher}:")) || !log.results.lock().contains(&result) {
                    tally.error(format!("{owner} got DONE from {finisher} with unknown result {result:?}"));
                }
                if finisher == owner {
                    tally.error(format!("{owner} was told DONE of its own work"));
                }
            }
            Out::Nil => {
                tally.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            other => tally.error(format!("{owner} WAIT {key}: {other:?}")),
        }
    }
    // Leave cleanly: out of the line, and release a grant that came while not blocked.
    if let Err(error) = query(&mut con, args!["LOCK.CANCEL", &key, &owner]).await {
        tally.error(format!("{owner} CANCEL: {error}"));
    }
    match query_out(&mut con, args!["LOCK.TRY", &key, &owner, "NOQUEUE"]).await {
        Out::Acquired(token) => {
            tally.take_at_exit(log, &key, &owner, token);
            if let Err(error) = query(&mut con, args!["LOCK.UNLOCK", &key, &owner, token, "FAILURE"]).await {
                tally.error(format!("{owner} final UNLOCK: {error}"));
            }
        }
        Out::Busy(_) | Out::Done { .. } => {}
        other => tally.error(format!("{owner} final TRY: {other:?}")),
    }
}

/// Runs `CLIENTS` copies of `client` to the end, then checks what every run must show: no errors,
/// every WAIT answered exactly once, every key granted, tokens increasing per key.
async fn run_clients<F, Fut>(addr: std::net::SocketAddr, client: F) -> Arc<Tally>
where
    F: Fn(usize, std::net::SocketAddr, Arc<Vec<KeyLog>>, Arc<Tally>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let logs: Arc<Vec<KeyLog>> = Arc::new((0..KEYS).map(|_| KeyLog::default()).collect());
    let tally = Arc::new(Tally::default());
    let tasks: Vec<_> =
        (0..CLIENTS).map(|index| tokio::spawn(client(index, addr, Arc::clone(&logs), Arc::clone(&tally)))).collect();
    let all = futures_util::future::join_all(tasks);
    let results = tokio::time::timeout(Duration::from_secs(30), all).await.expect("clients finish in time");
    for result in results {
        result.expect("client task");
    }

    let errors = tally.errors.lock().clone();
    assert!(errors.is_empty(), "{} errors, first ones: {:#?}", errors.len(), &errors[..errors.len().min(10)]);
    let waits = tally.waits.load(Ordering::Relaxed);
    let acquired = tally.acquired.load(Ordering::Relaxed);
    let done = tally.done.load(Ordering::Relaxed);
    let timed_out = tally.timed_out.load(Ordering::Relaxed);
    assert_eq!(waits, acquired + done + timed_out, "every WAIT got exactly one answer");
    eprintln!("waits={waits} acquired={acquired} done={done} timed_out={timed_out}");
    for (index, log) in logs.iter().enumerate() {
        let grants = log.grants.lock().clone();
        assert!(!grants.is_empty(), "key {index} was granted at least once");
        assert_tokens_increase(index, &grants);
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_contending_for_a_few_keys_never_overlap() {
    let server = start().await;
    let tally = run_clients(server.addr, client).await;
    assert_eq!(tally.overlaps.load(Ordering::SeqCst), 0, "two holders of one key at once");
    let acquired = tally.acquired.load(Ordering::Relaxed);
    assert_eq!(acquired, tally.successes.load(Ordering::Relaxed) + tally.failures.load(Ordering::Relaxed));
    assert!(acquired > 0 && tally.waits.load(Ordering::Relaxed) > 0);
    // Everybody left: each key ends free with an empty line.
    let mut ctl = Raw::connect(server.addr).await;
    for index in 0..KEYS {
        let key = format!("contended-{index}");
        let info =
            ctl.wait_info(&key, "the key to settle", |info| info.holder.is_none() && info.queue.is_empty()).await;
        assert_eq!(info.blocked, 0);
    }
    server.stop().await.unwrap();
}

/// Like the test above, but clients also walk away: they close the connection while holding (a
/// FAILURE by disconnect) or while blocked (they must leave the line and never be granted).
async fn chaotic_client(index: usize, addr: std::net::SocketAddr, logs: Arc<Vec<KeyLog>>, tally: Arc<Tally>) {
    let mut rng = Rng::new(0xdead_beef ^ ((index as u64 + 1) * 7919));
    let mut con = Raw::connect(addr).await;
    let key_index = index % KEYS;
    let key = format!("chaos-{key_index}");
    let owner = format!("chaos-client-{index}");
    let log = &logs[key_index];
    let started = Instant::now();
    for _ in 0..OPS_PER_CLIENT {
        if started.elapsed() > TIME_BUDGET {
            break;
        }
        let timeout_ms = if rng.below(4) == 0 { 2 } else { 2000 };
        if rng.below(5) == 0 {
            // Walk away from a WAIT without reading its answer, and come back on a new connection.
            con.send(args!["LOCK.WAIT", &key, &owner, timeout_ms, "PX", 10_000]).await;
            tokio::time::sleep(Duration::from_micros(rng.below(2000))).await;
            con = Raw::connect(addr).await;
            continue;
        }
        tally.waits.fetch_add(1, Ordering::Relaxed);
        match cmd_out(&mut con, args!["LOCK.WAIT", &key, &owner, timeout_ms, "PX", 10_000]).await {
            Out::Acquired(token) => {
                tally.hold(log, &key, &owner, token, Duration::from_micros(100 + rng.below(1000))).await;
                match rng.below(5) {
                    0 => {
                        // Close while holding: the server must treat it as FAILURE.
                        tally.failures.fetch_add(1, Ordering::Relaxed);
                        con = Raw::connect(addr).await;
                    }
                    1 => {
                        let result = format!("{owner}:{token}");
                        log.results.lock().push(result.clone());
                        match con.cmd(args!["LOCK.UNLOCK", &key, &owner, token, "SUCCESS", "RESULT", result]).await {
                            Resp::Int(n) if n >= 0 => {
                                tally.successes.fetch_add(1, Ordering::Relaxed);
                            }
                            other => tally.error(format!("{owner} UNLOCK SUCCESS {token}: {other:?}")),
                        }
                    }
                    _ => match con.cmd(args!["LOCK.UNLOCK", &key, &owner, token, "FAILURE"]).await {
                        Resp::Int(0 | 1) => {
                            tally.failures.fetch_add(1, Ordering::Relaxed);
                        }
                        other => tally.error(format!("{owner} UNLOCK FAILURE {token}: {other:?}")),
                    },
                }
            }
            Out::Done { finisher, result } => {
                tally.done.fetch_add(1, Ordering::Relaxed);
                let result = result.map(|r| String::from_utf8_lossy(&r).into_owned()).unwrap_or_default();
                let finisher = String::from_utf8_lossy(&finisher).into_owned();
                if !result.starts_with(&format!("{finisher}:")) || !log.results.lock().contains(&result) {
                    tally.error(format!("{owner} got DONE from {finisher} with unknown result {result:?}"));
                }
            }
            Out::Nil => {
                tally.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            other => tally.error(format!("{owner} WAIT {key}: {other:?}")),
        }
    }
    con.cmd(args!["LOCK.CANCEL", &key, &owner]).await;
    match cmd_out(&mut con, args!["LOCK.TRY", &key, &owner, "NOQUEUE"]).await {
        Out::Acquired(token) => {
            tally.take_at_exit(log, &key, &owner, token);
            con.cmd(args!["LOCK.UNLOCK", &key, &owner, token, "FAILURE"]).await;
        }
        Out::Busy(_) | Out::Done { .. } => {}
        other => tally.error(format!("{owner} final TRY: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_disconnect_while_holding_or_waiting_never_cause_overlap() {
    let server = start().await;
    run_clients(server.addr, chaotic_client).await;
    let mut ctl = Raw::connect(server.addr).await;
    for index in 0..KEYS {
        let key = format!("chaos-{index}");
        ctl.wait_info(&key, "the key to settle", |info| info.holder.is_none() && info.queue.is_empty()).await;
    }
    server.stop().await.unwrap();
}
