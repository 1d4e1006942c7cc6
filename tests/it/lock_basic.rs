//! LOCK.TRY / UNLOCK / EXTEND / CANCEL / INFO replies without blocking, through the `redis` crate.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_on_a_free_key_acquires_and_the_same_owner_renews_with_the_same_token() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;

    let token = query_out(&mut con, args!["LOCK.TRY", "img:1", "node-a"]).await.token();
    let info = query_info(&mut con, "img:1").await;
    assert_eq!(info.state, "held");
    assert_eq!(info.holder.as_deref(), Some("node-a"));
    assert_eq!(info.token, Some(token));
    assert_eq!(info.waiters, 0);
    assert!(info.queue.is_empty());
    let lease = info.lease_ms.expect("a held lock has a lease");
    assert!(lease > 0 && lease <= 30_000, "default lease is 30 s: {info:?}");

    // Same owner again: same token, lease renewed (here with a longer PX).
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "img:1", "node-a", "PX", 5000]).await, Out::Acquired(token));
    let short = query_info(&mut con, "img:1").await.lease_ms.unwrap();
    assert!(short <= 5000 && short > 0, "PX 5000 renewed the lease to at most 5 s, got {short}");
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "img:1", "node-a", "PX", 600_000]).await, Out::Acquired(token));
    let long = query_info(&mut con, "img:1").await.lease_ms.unwrap();
    assert!(long > 5000, "PX 600000 renewed the lease, got {long}");

    // WAIT by the holder answers at once with the same token.
    assert_eq!(query_out(&mut con, args!["LOCK.WAIT", "img:1", "node-a", 1000]).await, Out::Acquired(token));
    // WAIT on a free key acquires at once.
    let other = query_out(&mut con, args!["LOCK.WAIT", "img:2", "node-a", 0]).await.token();
    assert!(other > 0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_by_other_owners_queues_them_fifo_with_one_entry_per_owner() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    query_out(&mut con, args!["LOCK.TRY", "k", "holder"]).await.token();

    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(1));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "c"]).await, Out::Queued(2));
    // A repeat keeps its place.
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(1));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "d", "PX", 10_000]).await, Out::Queued(3));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "c"]).await, Out::Queued(2));

    let info = query_info(&mut con, "k").await;
    assert_eq!(info.queue, ["b", "c", "d"]);
    assert_eq!(info.waiters, 3);
    assert_eq!(info.blocked, 0);
    assert_eq!(info.holder.as_deref(), Some("holder"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noqueue_answers_busy_with_the_holder_and_queues_nothing() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    assert!(matches!(query_out(&mut con, args!["LOCK.TRY", "k", "a", "NOQUEUE"]).await, Out::Acquired(_)));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b", "NOQUEUE"]).await, Out::busy("a"));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "c", "noqueue", "px", 100]).await, Out::busy("a"));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "c", "PX", 100, "NOQUEUE"]).await, Out::busy("a"));
    let info = query_info(&mut con, "k").await;
    assert!(info.queue.is_empty(), "NOQUEUE queues nothing: {info:?}");
    // A queued owner asking with NOQUEUE is still told BUSY (and was queued before, by its TRY).
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "d"]).await, Out::Queued(1));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "e", "NOQUEUE"]).await, Out::busy("a"));
    assert_eq!(query_info(&mut con, "k").await.queue, ["d"]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_and_extend_refuse_non_holders() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;

    let nolock = query_out(&mut con, args!["LOCK.UNLOCK", "never", "a", 1, "SUCCESS"]).await;
    assert!(nolock.err_starts_with("NOLOCK"), "{nolock:?}");
    let nolock = query_out(&mut con, args!["LOCK.EXTEND", "never", "a", 1, 1000]).await;
    assert!(nolock.err_starts_with("NOLOCK"), "{nolock:?}");

    let token = query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    for (owner, tok) in [("b", token), ("a", token + 1), ("b", token + 1)] {
        let reply = query_out(&mut con, args!["LOCK.UNLOCK", "k", owner, tok, "SUCCESS"]).await;
        assert!(reply.err_starts_with("NOTHOLDER"), "UNLOCK by {owner}/{tok}: {reply:?}");
        let reply = query_out(&mut con, args!["LOCK.UNLOCK", "k", owner, tok, "FAILURE"]).await;
        assert!(reply.err_starts_with("NOTHOLDER"), "UNLOCK FAILURE by {owner}/{tok}: {reply:?}");
        let reply = query_out(&mut con, args!["LOCK.EXTEND", "k", owner, tok, 1000]).await;
        assert!(reply.err_starts_with("NOTHOLDER"), "EXTEND by {owner}/{tok}: {reply:?}");
    }
    // The lock is untouched by the refused calls.
    let info = query_info(&mut con, "k").await;
    assert_eq!((info.holder.as_deref(), info.token), (Some("a"), Some(token)));

    assert_eq!(query(&mut con, args!["LOCK.EXTEND", "k", "a", token, 60_000]).await.unwrap(), redis::Value::Int(1));
    assert_eq!(query(&mut con, args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS"]).await.unwrap(), redis::Value::Int(0));
    // A retry (the client lost the reply) gets the same answer; the token is for a lock nobody
    // holds now, so anyone else's UNLOCK or EXTEND with it is refused.
    assert_eq!(query(&mut con, args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS"]).await.unwrap(), redis::Value::Int(0));
    let reply = query_out(&mut con, args!["LOCK.UNLOCK", "k", "b", token, "SUCCESS"]).await;
    assert!(reply.err_starts_with("NOLOCK"), "{reply:?}");
    let reply = query_out(&mut con, args!["LOCK.EXTEND", "k", "a", token, 1000]).await;
    assert!(reply.err_starts_with("NOLOCK"), "{reply:?}");
    // Someone else's new holding: the old token is stale, though a's retry still gets its answer.
    let newer = query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await.token();
    assert!(newer > token);
    let reply = query_out(&mut con, args!["LOCK.UNLOCK", "k", "c", token, "FAILURE"]).await;
    assert!(reply.err_starts_with("NOTHOLDER"), "{reply:?}");
    let reply = query_out(&mut con, args!["LOCK.EXTEND", "k", "a", token, 1000]).await;
    assert!(reply.err_starts_with("NOTHOLDER"), "{reply:?}");
    assert_eq!(query(&mut con, args!["LOCK.UNLOCK", "k", "a", token, "FAILURE"]).await.unwrap(), redis::Value::Int(0));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_options_belong_to_their_verdict() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let token = query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    let syntax = Out::Err("ERR syntax error".into());
    for bad in [
        args!["LOCK.UNLOCK", "k", "a", token, "FAILURE", "RESULT", "r"],
        args!["LOCK.UNLOCK", "k", "a", token, "FAILURE", "KEEP", 100],
        args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "REASON", "why"],
        args!["LOCK.UNLOCK", "k", "a", token, "MAYBE"],
        args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "RESULT"],
        args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "BOGUS", "x"],
    ] {
        assert_eq!(query_out(&mut con, bad.clone()).await, syntax, "{:?}", String::from_utf8_lossy(&bad.concat()));
    }
    // None of them released the lock.
    assert_eq!(query_info(&mut con, "k").await.token, Some(token));
    // Lower-case verdicts and options are accepted.
    assert_eq!(
        query(&mut con, args!["lock.unlock", "k", "a", token, "success", "result", "r", "keep", 1000]).await.unwrap(),
        redis::Value::Int(0)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_errors() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let err = |text: &str| Out::Err(text.to_owned());
    assert_eq!(query_out(&mut con, args!["LOCK.WAIT", "k", "a", -1]).await, err("ERR timeout is negative"));
    assert_eq!(
        query_out(&mut con, args!["LOCK.WAIT", "k", "a", "soon"]).await,
        err("ERR timeout is not an integer or out of range")
    );
    assert_eq!(
        query_out(&mut con, args!["LOCK.TRY", "k", "a", "PX", 0]).await,
        err("ERR invalid expire time in 'lock.try' command")
    );
    assert_eq!(
        query_out(&mut con, args!["LOCK.TRY", "k", "a", "PX", "x"]).await,
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "a", "BOGUS"]).await, err("ERR syntax error"));
    let bad_token = query_out(&mut con, args!["LOCK.UNLOCK", "k", "a", 0, "SUCCESS"]).await;
    assert!(bad_token.err_starts_with("ERR"), "{bad_token:?}");
    let bad_token = query_out(&mut con, args!["LOCK.EXTEND", "k", "a", "abc", 100]).await;
    assert!(bad_token.err_starts_with("ERR"), "{bad_token:?}");
    let empty = query_out(&mut con, args!["LOCK.TRY", "", "a"]).await;
    assert!(empty.err_starts_with("ERR"), "empty key: {empty:?}");
    // Nothing was created by the refused calls.
    assert_eq!(query(&mut con, args!["DBSIZE"]).await.unwrap(), redis::Value::Int(0));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_without_waiters_answers_zero_and_frees_the_key() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let token = query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    assert_eq!(
        query(&mut con, args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "RESULT", "ok"]).await.unwrap(),
        redis::Value::Int(0)
    );
    let info = query_info(&mut con, "k").await;
    assert_eq!(info.state, "free", "no KEEP: nothing remembered: {info:?}");
    let next = query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await.token();
    assert!(next > token);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_passes_the_lock_to_a_queued_owner_who_learns_it_on_its_next_call() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let first = query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(1));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "c"]).await, Out::Queued(2));
    assert_eq!(
        query(&mut con, args!["LOCK.UNLOCK", "k", "a", first, "FAILURE", "REASON", "disk full"]).await.unwrap(),
        redis::Value::Int(1)
    );
    let info = query_info(&mut con, "k").await;
    assert_eq!(info.holder.as_deref(), Some("b"), "{info:?}");
    let second = info.token.unwrap();
    assert!(second > first, "a hand-off takes a new, larger token");
    assert_eq!(info.queue, ["c"]);
    assert_eq!(info.last_failure.as_deref(), Some("disk full"), "REASON shows in last_failure");

    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::Acquired(second));
    assert_eq!(query_out(&mut con, args!["LOCK.WAIT", "k", "b", 100]).await, Out::Acquired(second));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "c"]).await, Out::Queued(1));

    // FAILURE with nobody queued: 0, the key is free.
    assert_eq!(query(&mut con, args!["LOCK.CANCEL", "k", "c"]).await.unwrap(), redis::Value::Int(1));
    assert_eq!(query(&mut con, args!["LOCK.UNLOCK", "k", "b", second, "FAILURE"]).await.unwrap(), redis::Value::Int(0));
    assert_eq!(query_info(&mut con, "k").await.state, "free");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_owners_not_blocked_learn_done_on_their_next_try_or_wait() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let token = query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(1));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "c"]).await, Out::Queued(2));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "d"]).await, Out::Queued(3));
    assert_eq!(
        query(&mut con, args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "RESULT", "sha256:abc"]).await.unwrap(),
        redis::Value::Int(3),
        "three queued owners are told DONE"
    );
    let info = query_info(&mut con, "k").await;
    assert!(info.queue.is_empty(), "SUCCESS empties the queue: {info:?}");

    // A newcomer that never queued gets a fresh grant ...
    let fresh = query_out(&mut con, args!["LOCK.TRY", "k", "newcomer"]).await.token();
    assert!(fresh > token);
    // ... but the owners that were queued learn DONE, never a grant, even though the key is held.
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::done("a", Some("sha256:abc")));
    assert_eq!(query_out(&mut con, args!["LOCK.WAIT", "k", "c", 0]).await, Out::done("a", Some("sha256:abc")));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "d", "NOQUEUE"]).await, Out::done("a", Some("sha256:abc")));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_without_result_is_done_with_nil() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let token = query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(1));
    assert_eq!(query(&mut con, args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS"]).await.unwrap(), redis::Value::Int(1));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::done("a", None));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_answers_done_until_it_lapses_then_grants_afresh() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let token = query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    assert_eq!(
        query(&mut con, args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "RESULT", "v1", "KEEP", 400]).await.unwrap(),
        redis::Value::Int(0)
    );
    let info = query_info(&mut con, "k").await;
    assert_eq!(info.state, "done", "{info:?}");
    assert_eq!(info.finisher.as_deref(), Some("a"));
    assert_eq!(info.result.as_deref(), Some(&b"v1"[..]));
    let keep = info.keep_ms.expect("keep_ms while done");
    assert!(keep > 0 && keep <= 400, "{info:?}");
    assert_eq!(info.holder, None);

    let done = Out::done("a", Some("v1"));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "late"]).await, done);
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "late", "NOQUEUE"]).await, done);
    assert_eq!(query_out(&mut con, args!["LOCK.WAIT", "k", "later", 0]).await, done);
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await, done, "even the finisher is told DONE");
    assert!(query_info(&mut con, "k").await.queue.is_empty(), "DONE answers queue nobody");

    // After KEEP lapses the key is free and the next call is a fresh grant with a larger token.
    let deadline = std::time::Instant::now() + POLL_DEADLINE;
    loop {
        match query_out(&mut con, args!["LOCK.TRY", "k", "late"]).await {
            Out::Acquired(fresh) => {
                assert!(fresh > token);
                break;
            }
            Out::Done { .. } => {}
            other => panic!("while KEEP lasts: DONE, after it ACQUIRED; got {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "KEEP 400 ms never lapsed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_grow_across_grants_also_after_a_key_is_forgotten() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let mut last = 0;
    for round in 0..20 {
        let owner = format!("o{round}");
        let token = query_out(&mut con, args!["LOCK.TRY", "k", &owner]).await.token();
        assert!(token > last, "round {round}: token {token} after {last}");
        last = token;
        // Other keys in between (possibly in the same shard) must not disturb the order.
        let other = format!("other-{round}");
        let t = query_out(&mut con, args!["LOCK.TRY", &other, "x"]).await.token();
        let verdict = if round % 2 == 0 { "SUCCESS" } else { "FAILURE" };
        query(&mut con, args!["LOCK.UNLOCK", &other, "x", t, verdict]).await.unwrap();
        query(&mut con, args!["LOCK.UNLOCK", "k", &owner, token, verdict]).await.unwrap();
        // The key is forgotten now (nothing to remember).
        assert_eq!(query(&mut con, args!["DBSIZE"]).await.unwrap(), redis::Value::Int(0), "round {round}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_leaves_the_queue() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let int = |n| redis::Value::Int(n);
    assert_eq!(query(&mut con, args!["LOCK.CANCEL", "nokey", "x"]).await.unwrap(), int(0));
    let token = query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(1));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "c"]).await, Out::Queued(2));
    assert_eq!(query(&mut con, args!["LOCK.CANCEL", "k", "b"]).await.unwrap(), int(1));
    assert_eq!(query(&mut con, args!["LOCK.CANCEL", "k", "b"]).await.unwrap(), int(0));
    assert_eq!(query(&mut con, args!["LOCK.CANCEL", "k", "zz"]).await.unwrap(), int(0));
    assert_eq!(query(&mut con, args!["LOCK.CANCEL", "k", "a"]).await.unwrap(), int(0), "the holder is not queued");
    assert_eq!(query_info(&mut con, "k").await.queue, ["c"]);
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "c"]).await, Out::Queued(1));
    // FAILURE goes to c, not to the cancelled b.
    assert_eq!(query(&mut con, args!["LOCK.UNLOCK", "k", "a", token, "FAILURE"]).await.unwrap(), int(1));
    assert_eq!(query_info(&mut con, "k").await.holder.as_deref(), Some("c"));
    // b comes back at the end of the line.
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(1));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_of_an_unknown_key_is_free_and_complete() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let info = query_info(&mut con, "nothing-here").await;
    assert_eq!(info.state, "free");
    assert_eq!(info.holder, None);
    assert_eq!(info.token, None);
    assert_eq!(info.lease_ms, None);
    assert_eq!(info.waiters, 0);
    assert!(info.queue.is_empty());
    assert_eq!(info.blocked, 0);
    assert_eq!(info.finisher, None);
    assert_eq!(info.result, None);
    assert_eq!(info.keep_ms, None);
    // RESP2: a flat field-value array with the fields in the documented order.
    let raw = query(&mut con, args!["LOCK.INFO", "nothing-here"]).await.unwrap();
    let names: Vec<String> = value_to_resp(&raw).pairs().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, INFO_FIELDS);
    assert_eq!(query(&mut con, args!["DBSIZE"]).await.unwrap(), redis::Value::Int(0), "INFO creates nothing");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_owners_and_results_are_binary_safe() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let key: &[u8] = b"k\x00\xff\r\nkey";
    let owner: &[u8] = b"own\x00er\r\n\xfe";
    let waiter: &[u8] = b"w\x00\x01";
    let result: Vec<u8> = (0..=255u8).collect();
    let token = query_out(&mut con, args!["LOCK.TRY", key, owner]).await.token();
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", key, b"other\x00", "NOQUEUE"]).await, Out::Busy(owner.to_vec()));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", key, waiter]).await, Out::Queued(1));
    let info = value_to_resp(&query(&mut con, args!["LOCK.INFO", key]).await.unwrap());
    assert_eq!(info.field("holder").bytes(), owner);
    assert_eq!(info.field("queue").array()[0].bytes(), waiter);
    // Similar but different keys and owners are different.
    assert!(matches!(query_out(&mut con, args!["LOCK.TRY", b"k\x00\xff\r\nkez", owner]).await, Out::Acquired(_)));
    assert_eq!(query_out(&mut con, args!["LOCK.TRY", key, b"own\x00er\r\n\xff"]).await, Out::Queued(2));

    query(&mut con, args!["LOCK.UNLOCK", key, owner, token, "SUCCESS", "RESULT", &result]).await.unwrap();
    assert_eq!(
        query_out(&mut con, args!["LOCK.TRY", key, waiter]).await,
        Out::Done { finisher: owner.to_vec(), result: Some(result) }
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lease_caps_px_and_extend() {
    let server = start_with(|config| {
        config.max_lease_ms = 2000;
        config.lease_ms = 1000;
    })
    .await;
    let mut con = redis_conn(server.addr).await;
    let token = query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    let lease = query_info(&mut con, "k").await.lease_ms.unwrap();
    assert!(lease <= 1000, "--lease-ms 1000 is the default: {lease}");
    query_out(&mut con, args!["LOCK.TRY", "k", "a", "PX", 3_600_000]).await.token();
    let lease = query_info(&mut con, "k").await.lease_ms.unwrap();
    assert!(lease <= 2000 && lease > 1000, "PX is capped to --max-lease-ms 2000: {lease}");
    assert_eq!(query(&mut con, args!["LOCK.EXTEND", "k", "a", token, 3_600_000]).await.unwrap(), redis::Value::Int(1));
    let lease = query_info(&mut con, "k").await.lease_ms.unwrap();
    assert!(lease <= 2000, "EXTEND is capped to --max-lease-ms 2000: {lease}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_lengthens_the_lease() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let token = query_out(&mut con, args!["LOCK.TRY", "k", "a", "PX", 1000]).await.token();
    assert_eq!(query(&mut con, args!["LOCK.EXTEND", "k", "a", token, 120_000]).await.unwrap(), redis::Value::Int(1));
    let info = query_info(&mut con, "k").await;
    assert!(info.lease_ms.unwrap() > 1000, "{info:?}");
    assert_eq!(info.token, Some(token), "EXTEND keeps the token");
    let bad = query_out(&mut con, args!["LOCK.EXTEND", "k", "a", token, 0]).await;
    assert!(bad.err_starts_with("ERR"), "{bad:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_owners_longer_than_the_limit_are_refused() {
    let server = start_with(|config| config.max_key_bytes = 16).await;
    let mut con = redis_conn(server.addr).await;
    let long = "x".repeat(17);
    let exact = "y".repeat(16);
    let reply = query_out(&mut con, args!["LOCK.TRY", &long, "o"]).await;
    assert_eq!(reply, Out::Err("ERR key is longer than the limit of 16 bytes".into()));
    let reply = query_out(&mut con, args!["LOCK.WAIT", "k", &long, 0]).await;
    assert_eq!(reply, Out::Err("ERR owner is longer than the limit of 16 bytes".into()));
    query_out(&mut con, args!["LOCK.TRY", &exact, &exact]).await.token();
    server.stop().await.unwrap();
}

/// LOCK.INFO lists a bounded prefix of the queue (COUNT, default 100) and still counts it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_lists_at_most_count_owners_and_counts_the_whole_queue() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    query_out(&mut con, args!["LOCK.TRY", "k", "holder"]).await.token();
    for i in 0..150 {
        assert_eq!(query_out(&mut con, args!["LOCK.TRY", "k", format!("w{i}")]).await, Out::Queued(i + 1));
    }
    let info = query_info(&mut con, "k").await;
    assert_eq!((info.waiters, info.queue.len()), (150, 100));
    assert_eq!((info.queue[0].as_str(), info.queue[99].as_str()), ("w0", "w99"));
    for (count, listed) in [(0, 0), (2, 2), (1000, 150)] {
        let reply = value_to_resp(&query(&mut con, args!["LOCK.INFO", "k", "COUNT", count]).await.unwrap());
        let queue: Vec<String> = reply.field("queue").array().iter().map(Resp::text).collect();
        assert_eq!(queue, (0..listed).map(|i| format!("w{i}")).collect::<Vec<_>>(), "COUNT {count}");
        assert_eq!(reply.field("waiters").int(), 150, "COUNT {count}");
    }
    server.stop().await.unwrap();
}
