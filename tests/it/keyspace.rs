//! Browsing the locks as Redis tools do, with the `redis` crate: SCAN's guarantee while locks come
//! and go and the tables grow and shrink, MATCH, COUNT and TYPE, bad cursors, TYPE, EXISTS,
//! DBSIZE and MEMORY USAGE, and how ACL key patterns apply to them.

use std::collections::HashSet;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Value};

use crate::common::*;

/// Takes `keys` as `owner` in one pipeline, leased for ten minutes.
async fn hold_all(con: &mut MultiplexedConnection, owner: &str, keys: impl IntoIterator<Item = String>) {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("LOCK.TRY").arg(key).arg(owner).arg("PX").arg(600_000);
    }
    let replies: Vec<Value> = pipe.query_async(con).await.expect("LOCK.TRY pipeline");
    for reply in replies {
        assert!(matches!(Out::from_value(Ok(reply)), Out::Acquired(_)));
    }
}

/// One SCAN call: (next cursor, keys).
async fn scan_step(con: &mut MultiplexedConnection, cursor: u64, options: &[&str]) -> (u64, Vec<String>) {
    let mut command = redis::cmd("SCAN");
    command.arg(cursor).arg(options);
    command.query_async(con).await.expect("SCAN")
}

/// A whole iteration: every key returned, and how many calls it took.
async fn scan_all(con: &mut MultiplexedConnection, options: &[&str]) -> (Vec<String>, usize) {
    let (mut cursor, mut keys, mut calls) = (0, Vec::new(), 0);
    loop {
        let (next, found) = scan_step(con, cursor, options).await;
        keys.extend(found);
        calls += 1;
        if next == 0 {
            return (keys, calls);
        }
        cursor = next;
    }
}

fn names(prefix: &str, count: usize) -> impl Iterator<Item = String> + '_ {
    (0..count).map(move |i| format!("{prefix}:{i}"))
}

async fn dbsize(con: &mut MultiplexedConnection) -> usize {
    redis::cmd("DBSIZE").query_async(con).await.expect("DBSIZE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_returns_every_lock_held_throughout_while_others_come_and_go() {
    let server = start_with(|config| config.shards = Some(4)).await;
    let mut scanner = redis_conn(server.addr).await;
    let mut steady = redis_conn(server.addr).await;
    hold_all(&mut steady, "steady", names("steady", 3_000)).await;
    let mut churn: Option<MultiplexedConnection> = None;
    let (mut cursor, mut seen, mut calls, mut peak) = (0, Vec::new(), 0, 0);
    loop {
        let (next, found) = scan_step(&mut scanner, cursor, &["COUNT", "20"]).await;
        seen.extend(found);
        calls += 1;
        // Meanwhile: many more locks come, which splits the tables several times over, and go
        // again (their connection closes), which merges them back.
        match calls {
            3 => {
                let mut con = redis_conn(server.addr).await;
                hold_all(&mut con, "churn", names("churn", 20_000)).await;
                churn = Some(con);
                peak = dbsize(&mut scanner).await;
            }
            13 => drop(churn.take()),
            _ => {}
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(peak, 23_000);
    assert!(calls > 13, "the iteration went on while the churn's locks were released ({calls} calls)");
    eventually("the churn's locks to be released", || {
        let mut con = scanner.clone();
        async move { dbsize(&mut con).await == 3_000 }
    })
    .await;
    let seen: HashSet<String> = seen.into_iter().collect();
    let missed: Vec<String> = names("steady", 3_000).filter(|key| !seen.contains(key)).collect();
    assert!(
        missed.is_empty(),
        "{} steady locks never returned, e.g. {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
    assert!(seen.iter().all(|key| key.starts_with("steady:") || key.starts_with("churn:")), "only keys that existed");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn scan_match_count_and_type_filter_like_redis() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    hold_all(&mut con, "o", names("pull", 300).chain(names("push", 200))).await;

    let (pulls, _) = scan_all(&mut con, &["MATCH", "pull:*"]).await;
    let pulls: HashSet<String> = pulls.into_iter().collect();
    assert_eq!(pulls, names("pull", 300).collect::<HashSet<_>>());
    let (one, _) = scan_all(&mut con, &["MATCH", "push:1[0-9]"]).await;
    assert_eq!(one.into_iter().collect::<HashSet<_>>(), (10..20).map(|i| format!("push:{i}")).collect());

    // COUNT is how many keys a call examines, roughly: fewer calls for more.
    let (few, calls_of_one) = scan_all(&mut con, &["COUNT", "1"]).await;
    let (all, calls_of_many) = scan_all(&mut con, &["COUNT", "1000", "TYPE", "lock"]).await;
    assert_eq!(few.len(), 500);
    assert_eq!(all.len(), 500, "each key once");
    assert!(calls_of_many < calls_of_one, "COUNT 1000: {calls_of_many} calls, COUNT 1: {calls_of_one}");

    // No lock is of another type Redis knows; a type nobody knows is an error.
    assert_eq!(scan_step(&mut con, 0, &["TYPE", "string"]).await, (0, Vec::new()));
    let unknown: redis::RedisResult<Value> =
        redis::cmd("SCAN").arg(0).arg("TYPE").arg("nosuch").query_async(&mut con).await;
    assert_eq!(err_text(&unknown.unwrap_err()), "ERR unknown type name 'nosuch'");

    // The redis crate's own iterator agrees.
    let mut iter: redis::AsyncIter<String> = con.scan_match("push:*").await.unwrap();
    let mut pushes = HashSet::new();
    while let Some(key) = iter.next_item().await {
        pushes.insert(key.unwrap());
    }
    drop(iter);
    assert_eq!(pushes, names("push", 200).collect::<HashSet<_>>());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_cursor_is_refused_as_redis_does() {
    let server = start_with(|config| config.shards = Some(4)).await;
    let mut raw = Raw::connect(server.addr).await;
    // Four shards take the cursor's bits from 32 to 33; 2^34 names a fifth.
    for cursor in ["abc", "-1", "1.5", "", "18446744073709551616", "17179869184"] {
        let reply = raw.cmd(args!["SCAN", cursor]).await;
        assert_eq!(reply, Resp::Error("ERR invalid cursor".into()), "{cursor:?}");
    }
    assert_eq!(raw.cmd(args!["SCAN", "0", "COUNT", "0"]).await, Resp::Error("ERR syntax error".into()));
    assert_eq!(raw.cmd(args!["SCAN", "0", "MATCH"]).await, Resp::Error("ERR syntax error".into()));
    // An empty server: one call, cursor 0.
    assert_eq!(raw.cmd(args!["SCAN", "0"]).await, Resp::Array(vec![Resp::Bulk(b"0".to_vec()), Resp::Array(vec![])]));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn type_exists_and_dbsize_count_every_key_with_state() {
    let server = start().await;
    let mut holder = Raw::connect(server.addr).await;
    let mut waiter = Raw::connect(server.addr).await;
    let token = cmd_out(&mut holder, args!["LOCK.TRY", "held", "a"]).await.token();
    assert_eq!(cmd_out(&mut waiter, args!["LOCK.TRY", "held", "b"]).await, Out::Queued(1));
    let done = cmd_out(&mut holder, args!["LOCK.TRY", "kept", "a"]).await.token();
    assert_eq!(
        holder.cmd(args!["LOCK.UNLOCK", "kept", "a", done, "SUCCESS", "RESULT", "r", "KEEP", 60_000]).await,
        Resp::Int(0)
    );
    assert!(matches!(cmd_out(&mut holder, args!["LOCK.TRY", "brief", "a", "PX", 50]).await, Out::Acquired(_)));

    for key in ["held", "kept", "brief"] {
        assert_eq!(holder.cmd(args!["TYPE", key]).await, Resp::Simple("lock".into()), "{key}");
    }
    assert_eq!(holder.cmd(args!["TYPE", "never"]).await, Resp::Simple("none".into()));
    assert_eq!(holder.cmd(args!["EXISTS", "held", "kept", "never", "held"]).await, Resp::Int(3), "repeats count");
    assert_eq!(holder.cmd(args!["DBSIZE"]).await, Resp::Int(3));

    // A lease that ran out: gone for TYPE and EXISTS even before the expiry driver gets to it.
    let addr = server.addr;
    eventually("the brief lease to end", || async move {
        Raw::connect(addr).await.cmd(args!["EXISTS", "brief"]).await == Resp::Int(0)
    })
    .await;
    assert_eq!(holder.cmd(args!["TYPE", "brief"]).await, Resp::Simple("none".into()));
    assert_eq!(holder.cmd(args!["DBSIZE"]).await, Resp::Int(2));
    // Released with nobody waiting and nothing kept: no state left.
    assert_eq!(holder.cmd(args!["LOCK.UNLOCK", "held", "a", token, "FAILURE"]).await, Resp::Int(1));
    assert_eq!(holder.cmd(args!["TYPE", "held"]).await, Resp::Simple("lock".into()), "b holds it now");
    server.stop().await.unwrap();
}

async fn memory_usage(raw: &mut Raw, key: &str) -> i64 {
    raw.cmd(args!["MEMORY", "USAGE", key]).await.int()
}

#[tokio::test]
async fn memory_usage_grows_with_what_a_key_holds() {
    let server = start().await;
    let mut raw = Raw::connect(server.addr).await;
    assert_eq!(raw.cmd(args!["MEMORY", "USAGE", "never"]).await, Resp::NilBulk);

    assert!(matches!(cmd_out(&mut raw, args!["LOCK.TRY", "short", "o"]).await, Out::Acquired(_)));
    let long_key = "k".repeat(500);
    assert!(matches!(cmd_out(&mut raw, args!["LOCK.TRY", long_key.as_str(), "o"]).await, Out::Acquired(_)));
    let short = memory_usage(&mut raw, "short").await;
    assert!(short > 5, "{short}");
    assert!(memory_usage(&mut raw, &long_key).await >= short + 495);

    // A line of waiters, counted whether sampled (the default five) or read whole.
    for i in 0..50 {
        assert_eq!(cmd_out(&mut raw, args!["LOCK.TRY", "short", format!("waiter-{i:02}")]).await, Out::Queued(i + 1));
    }
    let with_line = memory_usage(&mut raw, "short").await;
    assert!(with_line > short + 50 * 20, "{short} alone, {with_line} with 50 waiters");
    let read_whole = raw.cmd(args!["MEMORY", "USAGE", "short", "SAMPLES", 0]).await.int();
    assert_eq!(read_whole, with_line, "waiters of the same size: the sample is exact");

    // A remembered result.
    let token = cmd_out(&mut raw, args!["LOCK.TRY", "kept", "o"]).await.token();
    let held = memory_usage(&mut raw, "kept").await;
    let result = "r".repeat(1_000);
    raw.cmd(args!["LOCK.UNLOCK", "kept", "o", token, "SUCCESS", "RESULT", result, "KEEP", 60_000]).await;
    assert!(memory_usage(&mut raw, "kept").await >= held + 1_000);

    assert_eq!(raw.cmd(args!["MEMORY", "USAGE", "kept", "SAMPLES", -1]).await, Resp::Error("ERR syntax error".into()));
    assert!(raw.cmd(args!["MEMORY", "HELP"]).await.array().len() > 2);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn acl_key_patterns_apply_to_key_arguments_not_to_what_scan_returns() {
    let server = start().await;
    let mut admin = Raw::connect(server.addr).await;
    for key in ["pull:a", "other"] {
        assert!(matches!(cmd_out(&mut admin, args!["LOCK.TRY", key, "o"]).await, Out::Acquired(_)));
    }
    let setuser =
        args!["ACL", "SETUSER", "browser", "on", ">pw", "~pull:*", "+@keyspace", "+@read", "+memory", "+auth"];
    assert_eq!(admin.cmd(setuser).await, Resp::Simple("OK".into()));
    let mut browser = Raw::connect(server.addr).await;
    assert_eq!(browser.cmd(args!["AUTH", "browser", "pw"]).await, Resp::Simple("OK".into()));
    const NOPERM: &str = "NOPERM No permissions to access a key";
    assert_eq!(browser.cmd(args!["TYPE", "pull:a"]).await, Resp::Simple("lock".into()));
    assert_eq!(browser.cmd(args!["TYPE", "other"]).await, Resp::Error(NOPERM.into()));
    assert_eq!(browser.cmd(args!["EXISTS", "pull:a", "other"]).await, Resp::Error(NOPERM.into()));
    assert_eq!(browser.cmd(args!["MEMORY", "USAGE", "other"]).await, Resp::Error(NOPERM.into()));
    assert!(browser.cmd(args!["MEMORY", "USAGE", "pull:a"]).await.int() > 0);
    // As in Redis, SCAN takes no key argument and returns every key.
    let page = browser.cmd(args!["SCAN", 0, "COUNT", 1000]).await;
    let mut keys: Vec<String> = page.array()[1].array().iter().map(Resp::text).collect();
    keys.sort();
    assert_eq!(keys, ["other", "pull:a"]);
    assert_eq!(browser.cmd(args!["DBSIZE"]).await, Resp::Int(2));
    server.stop().await.unwrap();
}
