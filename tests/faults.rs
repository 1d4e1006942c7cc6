//! Fault injection against the real binary: the server runs as a child process on a free loopback
//! port, and where a client process has to die or freeze it is a real `redis-cli` process (its
//! connection kept open by a pipe on its stdin) killed with SIGKILL or paused with SIGSTOP.
//! Every child is killed when its guard drops, whatever the test's outcome.
//!
//! Needs `redis-cli` (scripts/install-test-deps.sh installs it).

// A test binary has no outside users: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "support/baton.rs"]
mod baton_process;

use baton_process::start_baton;
use baton_testkit::process::{Proc, ServerProcess};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server keeps time in whole milliseconds, so a lease may end up to 1 ms before a client's
/// clock says it should (and the client's own timestamps add a little).
const MS_ROUNDING: Duration = Duration::from_millis(2);

// ---------------------------------------------------------------------------------------------
// Processes

/// A `redis-cli` process in its line mode: one command per stdin line, one reply per stdout
/// line (arrays one element per line, nil as an empty line, errors as their text).
struct Cli {
    proc: Proc,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Cli {
    fn start(addr: SocketAddr) -> Cli {
        let mut child = Command::new("redis-cli")
            .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli not found: run scripts/install-test-deps.sh");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Cli { proc: Proc { child }, stdin, lines }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to redis-cli");
        self.stdin.flush().expect("flush redis-cli");
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(Duration::from_secs(10)).expect("a reply line from redis-cli")
    }

    /// An error reply: its text (redis-cli follows an error with an empty line in this mode).
    fn error_line(&self) -> String {
        let error = self.line();
        assert_eq!(self.line(), "", "the empty line after the error {error:?}");
        error
    }

    /// Sends LOCK.TRY and returns the token of the ACQUIRED reply.
    fn acquire(&mut self, key: &str, owner: &str, px: Option<u64>) -> u64 {
        let px = px.map(|ms| format!(" PX {ms}")).unwrap_or_default();
        self.send(&format!("LOCK.TRY {key} {owner}{px}"));
        assert_eq!(self.line(), "ACQUIRED");
        self.line().parse().expect("token")
    }
}

// ---------------------------------------------------------------------------------------------
// Clients in this process

async fn connect(addr: SocketAddr) -> MultiplexedConnection {
    baton_testkit::redis_crate::connect(&format!("redis://{addr}/"), Duration::from_secs(30)).await.expect("connect")
}

async fn query(con: &mut MultiplexedConnection, args: &[&str]) -> redis::RedisResult<Value> {
    baton_testkit::redis_crate::query(con, args).await
}

fn acquired_token(value: &redis::RedisResult<Value>) -> Option<u64> {
    match value {
        Ok(Value::Array(items)) => match (items.first(), items.get(1)) {
            (Some(Value::BulkString(tag)), Some(Value::Int(token))) if tag == b"ACQUIRED" => Some(*token as u64),
            _ => None,
        },
        _ => None,
    }
}

/// LOCK.INFO as (field, value) pairs.
async fn info(con: &mut MultiplexedConnection, key: &str) -> Vec<(String, Value)> {
    match query(con, &["LOCK.INFO", key]).await.expect("LOCK.INFO") {
        Value::Array(items) => items
            .chunks(2)
            .map(|pair| match &pair[0] {
                Value::BulkString(name) => (String::from_utf8_lossy(name).into_owned(), pair[1].clone()),
                other => panic!("field name {other:?}"),
            })
            .collect(),
        other => panic!("LOCK.INFO answered {other:?}"),
    }
}

fn field<'a>(info: &'a [(String, Value)], name: &str) -> &'a Value {
    &info.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name} in {info:?}")).1
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

async fn holder(con: &mut MultiplexedConnection, key: &str) -> Option<(String, u64)> {
    let info = info(con, key).await;
    match (field(&info, "holder"), field(&info, "token")) {
        (Value::BulkString(owner), Value::Int(token)) => {
            Some((String::from_utf8_lossy(owner).into_owned(), *token as u64))
        }
        _ => None,
    }
}

/// Polls LOCK.INFO until `blocked` WAITs are blocked on `key`.
async fn until_blocked(con: &mut MultiplexedConnection, key: &str, blocked: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = info(con, key).await;
        if field(&info, "blocked") == &Value::Int(blocked) {
            return;
        }
        assert!(Instant::now() < deadline, "{key}: never {blocked} blocked: {info:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What a WAIT on its own connection came back with. The connection comes back too: dropping
/// it would release a lock it was just granted.
type Waited = (redis::RedisResult<Value>, Instant, MultiplexedConnection);

/// Starts a blocking LOCK.WAIT on its own connection; the handle yields (reply, when it came).
fn spawn_wait(addr: SocketAddr, key: &str, owner: &str, timeout_ms: u64) -> tokio::task::JoinHandle<Waited> {
    let (key, owner) = (key.to_owned(), owner.to_owned());
    tokio::spawn(async move {
        let mut con = connect(addr).await;
        let reply = query(&mut con, &["LOCK.WAIT", &key, &owner, &timeout_ms.to_string()]).await;
        (reply, Instant::now(), con)
    })
}

// ---------------------------------------------------------------------------------------------
// A holder process dies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_hands_the_lock_to_the_blocked_waiter_at_once() {
    let server = start_baton(&[], "info");
    let mut holder_cli = Cli::start(server.addr);
    let token = holder_cli.acquire("fault:kill", "holder", None);
    let mut con = connect(server.addr).await;
    let waiter = spawn_wait(server.addr, "fault:kill", "waiter", 0);
    until_blocked(&mut con, "fault:kill", 1).await;

    let killed_at = Instant::now();
    holder_cli.proc.signal("KILL");
    let (reply, answered_at, _waiter_con) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is answered once the holder process is gone")
        .expect("waiter task");
    let granted = acquired_token(&reply).unwrap_or_else(|| panic!("waiter got {reply:?}"));
    let latency = answered_at - killed_at;
    assert!(granted > token);
    assert!(latency < Duration::from_secs(1), "hand-off took {latency:?}");
    assert_eq!(holder(&mut con, "fault:kill").await, Some(("waiter".into(), granted)));
    let info = info(&mut con, "fault:kill").await;
    assert_eq!(text(field(&info, "last_failure")).as_deref(), Some("holder connection closed"));
    println!("SIGKILLed holder: lock handed to the blocked waiter {latency:?} after the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holder_without_release_on_disconnect_keeps_the_lock_until_its_lease_ends() {
    const LEASE: Duration = Duration::from_millis(800);
    let server = start_baton(&["--release-on-disconnect", "no", "--lease-ms", "800"], "info");
    let mut holder_cli = Cli::start(server.addr);
    let acquire_sent = Instant::now();
    let token = holder_cli.acquire("fault:lease", "holder", None);
    holder_cli.proc.signal("KILL");
    let mut con = connect(server.addr).await;
    let mut waiter = spawn_wait(server.addr, "fault:lease", "waiter", 0);
    until_blocked(&mut con, "fault:lease", 1).await;
    // Well inside the lease the lock stays with the dead holder.
    tokio::time::sleep(LEASE / 2).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(1), &mut waiter).await.is_err(),
        "granted before the lease ended"
    );
    assert_eq!(holder(&mut con, "fault:lease").await, Some(("holder".into(), token)));
    let (reply, answered_at, _waiter_con) = tokio::time::timeout(LEASE + Duration::from_secs(3), waiter)
        .await
        .expect("granted when the lease ends")
        .expect("waiter task");
    let granted = acquired_token(&reply).unwrap_or_else(|| panic!("waiter got {reply:?}"));
    assert!(granted > token);
    let after = answered_at - acquire_sent;
    assert!(after >= LEASE - MS_ROUNDING, "granted {after:?} after the dead holder's TRY, lease {LEASE:?}");
    assert!(after < LEASE + Duration::from_secs(1), "granted only {after:?} after the TRY");
    let info = info(&mut con, "fault:lease").await;
    assert_eq!(text(field(&info, "last_failure")).as_deref(), Some("lease expired"));
    println!("SIGKILLed holder, release-on-disconnect off: waiter granted {after:?} after the TRY (lease {LEASE:?})");
}

/// A client queued by LOCK.TRY (not blocked) dies. With release-on-disconnect its place goes with
/// its connection, so a FAILURE hands the lock straight to the next waiter, not to the dead owner
/// (who would keep everyone behind it waiting for its whole lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_queued_without_blocking_loses_its_place() {
    // The ghost's PX: long enough that a grant to it would visibly delay the waiter.
    const LEASE: Duration = Duration::from_millis(1_500);
    let server = start_baton(&[], "info");
    let mut con = connect(server.addr).await;
    let held = acquired_token(&query(&mut con, &["LOCK.TRY", "fault:queued", "holder", "PX", "60000"]).await)
        .expect("holder acquires");
    let mut queued_cli = Cli::start(server.addr);
    queued_cli.send("CLIENT ID");
    let ghost_id = queued_cli.line();
    queued_cli.send("LOCK.TRY fault:queued ghost PX 1500");
    assert_eq!((queued_cli.line(), queued_cli.line()), ("QUEUED".to_owned(), "1".to_owned()));
    queued_cli.proc.signal("KILL");
    // Only once the server has seen the close has the ghost left the queue.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = query(&mut con, &["CLIENT", "LIST", "ID", &ghost_id]).await;
        if matches!(&list, Ok(Value::BulkString(text)) if text.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "the server never noticed the killed client: {list:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiter = spawn_wait(server.addr, "fault:queued", "waiter", 0);
    until_blocked(&mut con, "fault:queued", 1).await;
    let failed_at = Instant::now();
    let handed = query(&mut con, &["LOCK.UNLOCK", "fault:queued", "holder", &held.to_string(), "FAILURE"]).await;
    assert_eq!(handed.ok(), Some(Value::Int(1)));
    let now_holds = holder(&mut con, "fault:queued").await;
    assert_eq!(now_holds.as_ref().map(|(owner, _)| owner.as_str()), Some("waiter"), "holder after the FAILURE");
    let (reply, answered_at, _waiter_con) = tokio::time::timeout(LEASE, waiter)
        .await
        .expect("the waiter is answered at the FAILURE, not after the ghost's lease")
        .expect("waiter task");
    assert!(acquired_token(&reply).is_some(), "waiter got {reply:?}");
    println!("queued client killed: lock reached the next waiter {:?} after the FAILURE", answered_at - failed_at);
}

// ---------------------------------------------------------------------------------------------
// A holder process freezes past its lease

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_holder_is_replaced_after_its_lease_and_fenced_when_it_resumes() {
    const LEASE_MS: u64 = 300;
    let server = start_baton(&[], "info");
    let mut holder_cli = Cli::start(server.addr);
    let acquire_sent = Instant::now();
    let stale = holder_cli.acquire("fault:pause", "holder", Some(LEASE_MS));
    holder_cli.proc.signal("STOP");
    let mut con = connect(server.addr).await;
    let waiter = spawn_wait(server.addr, "fault:pause", "waiter", 0);
    let (reply, answered_at, _waiter_con) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is granted when the paused holder's lease ends")
        .expect("waiter task");
    let fresh = acquired_token(&reply).unwrap_or_else(|| panic!("waiter got {reply:?}"));
    assert!(fresh > stale);
    assert!(
        answered_at - acquire_sent >= Duration::from_millis(LEASE_MS) - MS_ROUNDING,
        "granted before the lease ended"
    );

    // The holder wakes up and carries on as if it still held the lock: it is fenced.
    holder_cli.proc.signal("CONT");
    holder_cli.send(&format!("LOCK.UNLOCK fault:pause holder {stale} SUCCESS RESULT stale"));
    let unlock = holder_cli.error_line();
    holder_cli.send(&format!("LOCK.EXTEND fault:pause holder {stale} 10000"));
    let extend = holder_cli.error_line();
    assert!(unlock.starts_with("NOTHOLDER"), "stale UNLOCK answered {unlock:?}");
    assert!(extend.starts_with("NOTHOLDER"), "stale EXTEND answered {extend:?}");
    assert_eq!(
        holder(&mut con, "fault:pause").await,
        Some(("waiter".into(), fresh)),
        "the stale holder changed nothing"
    );
    let unlock = query(&mut con, &["LOCK.UNLOCK", "fault:pause", "waiter", &fresh.to_string(), "SUCCESS"]).await;
    assert_eq!(unlock.ok(), Some(Value::Int(0)), "the new holder still owns the lock");
}

// ---------------------------------------------------------------------------------------------
// A WAIT timing out at the moment the lock is handed to it

#[derive(Debug, Default, Clone, Copy)]
struct RaceTally {
    /// The WAIT answered ACQUIRED: the grant beat the timeout.
    wait_got_it: u32,
    /// The WAIT answered nil, but the grant reached the owner's place before its CANCEL: it
    /// learned ACQUIRED on its next call.
    head_got_it_after_nil: u32,
    /// The WAIT answered nil and the owner left before the hand-off: the next waiter got it.
    next_got_it: u32,
}

async fn race_once(addr: SocketAddr, cons: &mut [MultiplexedConnection; 3], key: &str, jitter_us: i64) -> RaceTally {
    const TIMEOUT_MS: u64 = 15;
    let [h, w1, probe] = cons;
    let mut tally = RaceTally::default();
    let held = acquired_token(&query(h, &["LOCK.TRY", key, "h", "PX", "10000"]).await).expect("h acquires");
    let queued = query(w1, &["LOCK.TRY", key, "w1", "PX", "10000"]).await.expect("w1 queues");
    assert_eq!(queued, Value::Array(vec![Value::BulkString(b"QUEUED".to_vec()), Value::Int(1)]));
    // w2 waits behind w1, blocked for as long as it takes.
    let w2 = spawn_wait(addr, key, "w2", 0);
    until_blocked(probe, key, 1).await;

    let mut w1_con = w1.clone();
    let key_owned = key.to_owned();
    let sent = Instant::now();
    let w1_wait = tokio::spawn(async move {
        let reply = query(&mut w1_con, &["LOCK.WAIT", &key_owned, "w1", &TIMEOUT_MS.to_string(), "PX", "10000"]).await;
        // A client that times out gives up.
        let cancel = if acquired_token(&reply).is_none() {
            Some(query(&mut w1_con, &["LOCK.CANCEL", &key_owned, "w1"]).await.expect("CANCEL"))
        } else {
            None
        };
        (reply, cancel)
    });
    let fire = sent + Duration::from_millis(TIMEOUT_MS);
    let fire = if jitter_us >= 0 {
        fire + Duration::from_micros(jitter_us as u64)
    } else {
        fire - Duration::from_micros(jitter_us.unsigned_abs())
    };
    tokio::time::sleep_until(fire.into()).await;
    let failure = query(h, &["LOCK.UNLOCK", key, "h", &held.to_string(), "FAILURE"]).await;
    assert_eq!(failure.ok(), Some(Value::Int(1)), "{key}: the FAILURE must hand the lock on (w2 is always waiting)");
    let (w1_reply, cancel) = w1_wait.await.expect("w1 task");

    let (owner, token) = holder(probe, key).await.unwrap_or_else(|| panic!("{key}: the lock was lost"));
    match (acquired_token(&w1_reply), &cancel) {
        (Some(told), None) => {
            assert_eq!((owner.as_str(), token), ("w1", told), "{key}: w1 was told ACQUIRED {told}");
            tally.wait_got_it += 1;
        }
        (None, Some(Value::Int(0))) => {
            // Granted as head while not blocked: it must learn so on its next call.
            assert_eq!(w1_reply.as_ref().ok(), Some(&Value::Nil), "{key}: w1's WAIT answered {w1_reply:?}");
            assert_eq!(owner, "w1", "{key}: CANCEL found w1 out of line, so it must hold the lock");
            let learned = query(w1, &["LOCK.TRY", key, "w1", "NOQUEUE"]).await;
            assert_eq!(acquired_token(&learned), Some(token), "{key}: w1 learns the grant LOCK.INFO shows");
            tally.head_got_it_after_nil += 1;
        }
        (None, Some(Value::Int(1))) => {
            assert_eq!(w1_reply.as_ref().ok(), Some(&Value::Nil), "{key}: w1's WAIT answered {w1_reply:?}");
            assert_eq!(owner, "w2", "{key}: w1 left the line, the lock goes to w2");
            tally.next_got_it += 1;
        }
        other => panic!("{key}: w1 got {other:?}"),
    }
    // Whoever holds it finishes; w2, if still blocked, is told DONE.
    let holder_con = if owner == "w1" { &mut *w1 } else { &mut *probe };
    let done = query(holder_con, &["LOCK.UNLOCK", key, &owner, &token.to_string(), "SUCCESS"]).await;
    assert!(matches!(done, Ok(Value::Int(_))), "{key}: the holder LOCK.INFO named could not unlock: {done:?}");
    let (w2_reply, _, _) =
        tokio::time::timeout(Duration::from_secs(5), w2).await.expect("w2 answered").expect("w2 task");
    if owner == "w2" {
        assert_eq!(acquired_token(&w2_reply), Some(token), "{key}: LOCK.INFO named w2 with a token it was not told");
    } else {
        assert!(
            matches!(&w2_reply, Ok(Value::Array(items)) if items.first() == Some(&Value::BulkString(b"DONE".to_vec())))
        );
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeout_racing_a_handoff_never_loses_the_lock() {
    const STREAMS: usize = 8;
    const ROUNDS: usize = 50;
    let server = start_baton(&[], "info");
    let addr = server.addr;
    let mut tasks = Vec::new();
    for stream in 0..STREAMS {
        tasks.push(tokio::spawn(async move {
            let mut cons = [connect(addr).await, connect(addr).await, connect(addr).await];
            let mut total = RaceTally::default();
            for round in 0..ROUNDS {
                // Spread the FAILURE from 3 ms before to 3 ms after the WAIT's timeout.
                let jitter_us = (round as i64 * 6_000 / ROUNDS as i64) - 3_000 + stream as i64 * 97;
                let tally = race_once(addr, &mut cons, &format!("race:{stream}:{round}"), jitter_us).await;
                total.wait_got_it += tally.wait_got_it;
                total.head_got_it_after_nil += tally.head_got_it_after_nil;
                total.next_got_it += tally.next_got_it;
            }
            total
        }));
    }
    let mut total = RaceTally::default();
    for task in tasks {
        let tally =
            tokio::time::timeout(Duration::from_secs(60), task).await.expect("race streams finish").expect("stream");
        total.wait_got_it += tally.wait_got_it;
        total.head_got_it_after_nil += tally.head_got_it_after_nil;
        total.next_got_it += tally.next_got_it;
    }
    println!("timeout/hand-off race, {} rounds: {total:?}", STREAMS * ROUNDS);
    assert_eq!((total.wait_got_it + total.head_got_it_after_nil + total.next_got_it) as usize, STREAMS * ROUNDS);
    // Each side of the race must actually have happened, or the test proved little.
    assert!(total.wait_got_it > 0 && total.next_got_it > 0, "the race never went both ways: {total:?}");
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// Slow and greedy clients

async fn read_reply(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, stream.read(&mut buf)).await.expect("a reply in time").expect("read");
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_a_byte_at_a_time_is_answered_and_others_are_served_meanwhile() {
    let server = start_baton(&[], "info");
    let addr = server.addr;
    let frame = b"*5\r\n$8\r\nLOCK.TRY\r\n$4\r\nslow\r\n$5\r\nsnail\r\n$2\r\nPX\r\n$4\r\n5000\r\n\
                  PING\r\n";
    let slow = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        for byte in frame {
            stream.write_all(&[*byte]).await.expect("write a byte");
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        let mut got = Vec::new();
        while !got.ends_with(b"+PONG\r\n") {
            got.extend(read_reply(&mut stream, Duration::from_secs(5)).await);
        }
        (got, Instant::now())
    });
    let mut con = connect(addr).await;
    let mut worst = Duration::ZERO;
    let mut served = 0;
    let busy_until = Instant::now() + Duration::from_millis(250);
    while Instant::now() < busy_until {
        let sent = Instant::now();
        let token =
            acquired_token(&query(&mut con, &["LOCK.TRY", "fast", "hare"]).await).expect("fast client acquires");
        let unlock = query(&mut con, &["LOCK.UNLOCK", "fast", "hare", &token.to_string(), "SUCCESS"]).await;
        assert_eq!(unlock.ok(), Some(Value::Int(0)));
        worst = worst.max(sent.elapsed());
        served += 1;
    }
    let fast_done = Instant::now();
    let (got, slow_done) = slow.await.expect("slow client");
    assert!(slow_done > fast_done, "the slow client should still have been sending");
    assert!(got.starts_with(b"*2\r\n$8\r\nACQUIRED\r\n:"), "slow client got {:?}", String::from_utf8_lossy(&got));
    assert!(got.ends_with(b"\r\n+PONG\r\n"));
    assert!(served > 10 && worst < Duration::from_millis(200), "fast client: {served} rounds, worst {worst:?}");
    println!(
        "byte-at-a-time client answered; meanwhile another client did {served} TRY/UNLOCK rounds, worst {worst:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_maxclients_are_refused_and_the_others_keep_being_served() {
    const MAX: usize = 8;
    let server = start_baton(&["--maxclients", &MAX.to_string()], "info");
    let addr = server.addr;
    let mut held = Vec::new();
    for _ in 0..MAX {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"PING\r\n").await.expect("write");
        assert_eq!(read_reply(&mut stream, Duration::from_secs(5)).await, b"+PONG\r\n");
        held.push(stream);
    }
    for _ in 0..3 {
        let mut refused = TcpStream::connect(addr).await.expect("the listener still accepts");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut got)).await.expect("closed");
        assert_eq!(got, b"-ERR max number of clients reached\r\n");
    }
    for stream in &mut held {
        stream.write_all(b"LOCK.TRY greedy owner\r\n").await.expect("write");
        let reply = read_reply(stream, Duration::from_secs(5)).await;
        assert!(reply.starts_with(b"*2\r\n$8\r\n"), "{}", String::from_utf8_lossy(&reply));
    }
    // A freed slot can be used again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"PING\r\n").await.expect("write");
        let reply = read_reply(&mut stream, Duration::from_secs(5)).await;
        if reply == b"+PONG\r\n" {
            break;
        }
        assert_eq!(reply, b"-ERR max number of clients reached\r\n");
        assert!(Instant::now() < deadline, "the closed connection's slot never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// SIGTERM under load

/// Reads until the server closes; returns what came and whether the close was clean (EOF, not a
/// reset).
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buf)).await {
            Err(_) => panic!("connection not closed; got {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(0)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return (got, false),
        }
    }
}

/// Waits (up to 8 s) for the server to exit after `signal`.
async fn until_exited(server: &mut ServerProcess, signal: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        if let Some(status) = server.proc.child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "baton still running 8 s after {signal}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_answers_blocked_waiters_and_exits_cleanly() {
    let mut server = start_baton(&[], "info");
    let addr = server.addr;
    let mut con = connect(addr).await;
    let token = acquired_token(&query(&mut con, &["LOCK.TRY", "term", "holder"]).await).expect("holder");
    let mut waiters = Vec::new();
    for i in 0..5 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(format!("LOCK.WAIT term w{i} 0\r\n").as_bytes()).await.expect("write");
        waiters.push(stream);
    }
    until_blocked(&mut con, "term", 5).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Busy clients: one request at a time, as fast as they can, until the server goes away.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut busy = Vec::new();
    for i in 0..4 {
        let stop = Arc::clone(&stop);
        busy.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let mut rounds = 0u64;
            let mut buf = [0u8; 1024];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("busy{i}");
                if stream.write_all(format!("LOCK.TRY {key} o\r\nLOCK.INFO {key}\r\n").as_bytes()).await.is_err() {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => rounds += 1,
                    _ => break,
                }
            }
            rounds
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    server.proc.signal("TERM");

    for (i, waiter) in waiters.iter_mut().enumerate() {
        let (got, clean) = read_until_closed(waiter).await;
        assert_eq!(got, b"-ERR server is shutting down\r\n", "waiter {i}");
        assert!(clean, "waiter {i}: connection reset instead of closed");
    }
    for (i, stream) in idle.iter_mut().enumerate() {
        let (got, clean) = read_until_closed(stream).await;
        assert!(got.is_empty() && clean, "idle client {i}: {got:?}, clean close: {clean}");
    }
    let status = until_exited(&mut server, "SIGTERM").await;
    let took = signalled.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut rounds = 0;
    for task in busy {
        rounds += task.await.expect("busy client");
    }
    assert_eq!(status.code(), Some(0), "exit status {status:?}; log:\n{}", server.log_text());
    assert!(rounds > 0);
    let _ = token;
    println!("SIGTERM with 5 blocked waiters, 3 idle and 4 busy clients ({rounds} rounds): exit 0 after {took:?}");
}

// ---------------------------------------------------------------------------------------------
// Signals, the open-files limit, --port 0

/// Polls the server's log until it has a line containing `needle`.
async fn until_logged(server: &ServerProcess, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log_text().contains(needle) {
        assert!(Instant::now() < deadline, "never logged {needle:?}; log:\n{}", server.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangup_and_user_signals_are_ignored_and_sigquit_shuts_down_cleanly() {
    let mut server = start_baton(&[], "info");
    let addr = server.addr;
    let mut con = connect(addr).await;
    let token = acquired_token(&query(&mut con, &["LOCK.TRY", "sig", "holder"]).await).expect("holder");
    let mut waiter = TcpStream::connect(addr).await.expect("connect");
    waiter.write_all(b"LOCK.WAIT sig waiter 0\r\n").await.expect("write");
    until_blocked(&mut con, "sig", 1).await;
    for signal in ["HUP", "USR1", "USR2"] {
        server.proc.signal(signal);
        until_logged(&server, &format!("signal=\"SIG{signal}\"")).await;
        assert!(server.alive(), "SIG{signal} ended the server");
        // Nothing was lost: the same holder, still one blocked waiter.
        assert_eq!(holder(&mut con, "sig").await, Some(("holder".to_owned(), token)), "after SIG{signal}");
        until_blocked(&mut con, "sig", 1).await;
    }
    server.proc.signal("QUIT");
    let (got, clean) = read_until_closed(&mut waiter).await;
    assert_eq!(got, b"-ERR server is shutting down\r\n");
    assert!(clean, "the waiter's connection was reset instead of closed");
    let status = until_exited(&mut server, "SIGQUIT").await;
    assert_eq!(status.code(), Some(0), "exit status {status:?}; log:\n{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxclients_is_lowered_to_the_open_files_limit_and_the_surplus_is_refused() {
    const FILE_LIMIT: usize = 64;
    // The reserve of descriptors that are not clients, as the server keeps it.
    const RESERVED: usize = 32;
    let mut command = Command::new("sh");
    command
        .args(["-c", &format!("ulimit -n {FILE_LIMIT} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_baton")])
        .args(["--bind", "127.0.0.1", "--ephemeral-port", "--maxclients", "1000", "--appendonly", "no"])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    let server = ServerProcess::start(&mut command, baton_process::listening_addr);
    let log = server.log_text();
    assert!(log.contains("maxclients reduced to fit the open files limit"), "{log}");
    let fitting = FILE_LIMIT - RESERVED;
    let mut con = connect(server.addr).await;
    let clients = text(&query(&mut con, &["INFO", "clients"]).await.expect("INFO")).expect("INFO text");
    assert!(clients.contains(&format!("maxclients:{fitting}\r\n")), "{clients}");
    // Fill every place (the INFO connection holds one), then some: the surplus is told, not left
    // hanging in the backlog.
    let mut served = Vec::new();
    for _ in 1..fitting {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream.write_all(b"PING\r\n").await.expect("write");
        assert_eq!(read_reply(&mut stream, Duration::from_secs(5)).await, b"+PONG\r\n");
        served.push(stream);
    }
    for _ in 0..8 {
        let mut refused = TcpStream::connect(server.addr).await.expect("the listener still accepts");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut got)).await.expect("closed");
        assert_eq!(got, b"-ERR max number of clients reached\r\n");
    }
}

#[test]
fn port_0_without_a_tls_port_does_not_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["--bind", "127.0.0.1", "--port", "0", "--appendonly", "no"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run baton");
    assert_eq!(output.status.code(), Some(1));
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("cannot start the server") && log.contains("set --tls-port"), "{log}");
}
