//! Leases: expiry as FAILURE with hand-off and fencing, EXTEND, queue leases, release on holder
//! disconnect (and `--release-on-disconnect no`).

use std::time::{Duration, Instant};

use crate::common::*;
use baton::config::YesNo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_hands_off_to_the_head_and_fences_the_stale_holder() {
    let server = start().await;
    let mut old = Raw::connect(server.addr).await;
    let mut ctl = Raw::connect(server.addr).await;
    let stale = cmd_out(&mut old, args!["LOCK.TRY", "k", "old", "PX", 200]).await.token();
    let mut w1 = start_wait(server.addr, "k", "w1", 0).await;
    ctl.wait_blocked("k", 1).await;
    let mut w2 = start_wait(server.addr, "k", "w2", 0).await;
    ctl.wait_blocked("k", 2).await;

    // Nobody unlocks: the lease runs out and the head is handed the lock.
    let fresh = read_out(&mut w1).await.token();
    assert!(fresh > stale);
    w2.assert_quiet("w2 is not the head").await;
    let info = ctl.info("k").await;
    assert_eq!((info.holder.as_deref(), info.token), (Some("w1"), Some(fresh)));
    assert!(info.last_failure.is_some(), "an expiry counts as a FAILURE: {info:?}");

    // The old holder is fenced off.
    for reply in [
        old.cmd(args!["LOCK.UNLOCK", "k", "old", stale, "SUCCESS", "RESULT", "late"]).await,
        old.cmd(args!["LOCK.UNLOCK", "k", "old", stale, "FAILURE"]).await,
        old.cmd(args!["LOCK.EXTEND", "k", "old", stale, 10_000]).await,
    ] {
        assert!(reply.err().starts_with("NOTHOLDER"), "{reply:?}");
    }
    // ... and its TRY is now an ordinary queued request behind w2.
    assert_eq!(cmd_out(&mut old, args!["LOCK.TRY", "k", "old"]).await, Out::Queued(2));
    assert_eq!(w1.cmd(args!["LOCK.UNLOCK", "k", "w1", fresh, "SUCCESS"]).await, Resp::Int(2));
    assert_eq!(read_out(&mut w2).await, Out::done("w1", None));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_with_nobody_waiting_is_free_and_the_old_token_is_refused() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let stale = cmd_out(&mut con, args!["LOCK.TRY", "k", "a", "PX", 100]).await.token();
    con.wait_info("k", "the lease to run out", |info| info.state == "free").await;
    let reply = con.cmd(args!["LOCK.UNLOCK", "k", "a", stale, "SUCCESS"]).await;
    assert!(reply.err().starts_with("NOLOCK"), "{reply:?}");
    let reply = con.cmd(args!["LOCK.EXTEND", "k", "a", stale, 1000]).await;
    assert!(reply.err().starts_with("NOLOCK"), "{reply:?}");
    // The same owner acquiring again gets a new token; the old one stays refused.
    let fresh = cmd_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    assert!(fresh > stale);
    let reply = con.cmd(args!["LOCK.UNLOCK", "k", "a", stale, "SUCCESS"]).await;
    assert!(reply.err().starts_with("NOTHOLDER"), "{reply:?}");
    assert_eq!(con.cmd(args!["LOCK.UNLOCK", "k", "a", fresh, "SUCCESS"]).await, Resp::Int(0));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_hands_off_to_a_queued_owner_that_is_not_blocked() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let stale = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "old", "PX", 150]).await.token();
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "next", "PX", 20_000]).await, Out::Queued(1));
    let info = ctl.wait_info("k", "hand-off to next", |info| info.holder.as_deref() == Some("next")).await;
    let token = info.token.unwrap();
    assert!(token > stale);
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "next"]).await, Out::Acquired(token));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_keeps_a_short_lease_alive_past_its_first_expiry() {
    let server = start().await;
    let mut holder = Raw::connect(server.addr).await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut holder, args!["LOCK.TRY", "k", "h", "PX", 400]).await.token();
    let mut waiter = start_wait(server.addr, "k", "w", 0).await;
    ctl.wait_blocked("k", 1).await;

    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(holder.cmd(args!["LOCK.EXTEND", "k", "h", token, 400]).await, Resp::Int(1));
    }
    // Three times the original lease later it is still ours, same token, waiter still blocked.
    let info = ctl.info("k").await;
    assert_eq!((info.holder.as_deref(), info.token), (Some("h"), Some(token)), "{info:?}");
    assert_eq!(info.blocked, 1);
    if let Some(reply) = waiter.read_within(Duration::from_millis(10)).await {
        panic!("the waiter was answered while the lease was being extended: {reply:?}");
    }
    // Stop extending: the lease runs out and the waiter takes over.
    assert!(read_out(&mut waiter).await.token() > token);
    let reply = holder.cmd(args!["LOCK.EXTEND", "k", "h", token, 400]).await;
    assert!(reply.err().starts_with("NOTHOLDER"), "{reply:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_owner_that_neither_waits_nor_retries_is_dropped_after_its_queue_lease() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "idle", "PX", 200]).await, Out::Queued(1));
    let mut w = start_wait(server.addr, "k", "w", 0).await;
    ctl.wait_info("k", "w queued", |info| info.queue == ["idle", "w"]).await;
    ctl.wait_info("k", "idle dropped", |info| info.queue == ["w"]).await;
    // The hand-off goes to w, and idle comes back at the end of the line.
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE"]).await, Resp::Int(1));
    read_out(&mut w).await.token();
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "idle"]).await, Out::Queued(1));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_renews_the_queue_lease() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "polite", "PX", 300]).await, Out::Queued(1));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(ctl.info("k").await.queue, ["polite"]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_lease_after_a_wait_timeout_counts_from_when_the_wait_ended() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    // Blocked for longer than its queue lease: the place is kept while blocked ...
    let mut w = Raw::connect(server.addr).await;
    assert_eq!(cmd_out(&mut w, args!["LOCK.WAIT", "k", "w", 600, "PX", 200]).await, Out::Nil);
    // ... and for about PX after the WAIT ended.
    let info = ctl.info("k").await;
    assert_eq!(info.queue, ["w"], "the place survives the wait: {info:?}");
    ctl.wait_info("k", "w dropped after its queue lease", |info| info.queue.is_empty()).await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holders_connection_closing_is_a_failure() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut holder = Raw::connect(server.addr).await;
    let token = cmd_out(&mut holder, args!["LOCK.TRY", "k", "h"]).await.token();
    let mut waiters = Vec::new();
    for (i, owner) in ["w1", "w2"].into_iter().enumerate() {
        waiters.push(start_wait(server.addr, "k", owner, 0).await);
        ctl.wait_blocked("k", i as i64 + 1).await;
    }
    drop(holder);
    let t1 = read_out(&mut waiters[0]).await.token();
    assert!(t1 > token);
    let info = ctl.info("k").await;
    assert_eq!(info.holder.as_deref(), Some("w1"));
    assert!(info.last_failure.is_some(), "{info:?}");
    waiters[1].assert_quiet("w2").await;

    // w1 got the lock through a blocked WAIT; its connection closing hands on too.
    let w1 = waiters.remove(0);
    drop(w1);
    let t2 = read_out(&mut waiters[0]).await.token();
    assert!(t2 > t1);
    // And with nobody waiting the key becomes free.
    drop(waiters);
    ctl.wait_info("k", "released", |info| info.state == "free").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_follows_the_connection_the_holder_last_used() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut first = Raw::connect(server.addr).await;
    let mut second = Raw::connect(server.addr).await;
    let token = cmd_out(&mut first, args!["LOCK.TRY", "k", "job"]).await.token();
    // The same owner renews from another connection: that one is now the holder's connection.
    assert_eq!(cmd_out(&mut second, args!["LOCK.TRY", "k", "job"]).await, Out::Acquired(token));
    drop(first);
    assert_eq!(ctl.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = ctl.info("k").await;
    assert_eq!((info.holder.as_deref(), info.token), (Some("job"), Some(token)), "{info:?}");

    // EXTEND also moves it.
    let mut third = Raw::connect(server.addr).await;
    assert_eq!(third.cmd(args!["LOCK.EXTEND", "k", "job", token, 30_000]).await, Resp::Int(1));
    drop(second);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ctl.info("k").await.token, Some(token), "closing an older connection keeps the lock");
    drop(third);
    ctl.wait_info("k", "release when the last used connection closes", |info| info.state == "free").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_quits_releases_too() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut holder = Raw::connect(server.addr).await;
    cmd_out(&mut holder, args!["LOCK.TRY", "k", "h"]).await.token();
    let mut waiter = start_wait(server.addr, "k", "w", 0).await;
    ctl.wait_blocked("k", 1).await;
    assert_eq!(holder.cmd(args!["QUIT"]).await, Resp::Simple("OK".into()));
    read_out(&mut waiter).await.token();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_release_on_disconnect_only_the_lease_ends_a_holding() {
    let server = start_with(|config| config.release_on_disconnect = YesNo::No).await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut holder = Raw::connect(server.addr).await;
    let token = cmd_out(&mut holder, args!["LOCK.TRY", "k", "h", "PX", 60_000]).await.token();
    let mut waiter = start_wait(server.addr, "k", "w", 0).await;
    ctl.wait_blocked("k", 1).await;
    drop(holder);
    waiter.assert_quiet("the holder's close does not release").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let info = ctl.info("k").await;
    assert_eq!((info.holder.as_deref(), info.token), (Some("h"), Some(token)), "{info:?}");
    // The owner can report from any connection.
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "h", token, "FAILURE"]).await, Resp::Int(1));
    read_out(&mut waiter).await.token();

    // With a short lease the holding ends by expiry.
    let mut short = Raw::connect(server.addr).await;
    let t = cmd_out(&mut short, args!["LOCK.TRY", "other", "h", "PX", 300]).await.token();
    drop(short);
    let mut w2 = start_wait(server.addr, "other", "w2", 0).await;
    assert!(read_out(&mut w2).await.token() > t);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_lease_applies_without_px() {
    let server = start_with(|config| config.lease_ms = 250).await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "a"]).await.token();
    let lease = ctl.info("k").await.lease_ms.unwrap();
    assert!(lease <= 250, "--lease-ms 250: {lease}");
    let mut w = start_wait(server.addr, "k", "w", 0).await;
    assert!(read_out(&mut w).await.token() > token, "the default lease expired and handed off");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_growing_across_expiries_and_forgotten_keys() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let mut last = 0;
    for round in 0..5 {
        let token = cmd_out(&mut con, args!["LOCK.TRY", "k", format!("o{round}"), "PX", 50]).await.token();
        assert!(token > last);
        last = token;
        con.wait_info("k", "expiry", |info| info.state == "free").await;
        assert_eq!(con.cmd(args!["DBSIZE"]).await, Resp::Int(0), "an expired, unused key is forgotten");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_waiting_on_two_connections_holds_through_the_one_it_waited_on_last() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "h"]).await.token();
    // The same owner blocks on an older and a newer connection (a client that reconnected).
    let mut older = start_wait(server.addr, "k", "x", 0).await;
    ctl.wait_blocked("k", 1).await;
    let mut newer = Raw::connect(server.addr).await;
    newer.send(args!["LOCK.WAIT", "k", "x", 0]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Somebody else waits behind x.
    let mut y = start_wait(server.addr, "k", "y", 0).await;
    ctl.wait_blocked("k", 2).await;
    assert_eq!(ctl.info("k").await.queue, ["x", "y"], "one place for x");

    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "h", token, "FAILURE"]).await, Resp::Int(1));
    let granted = read_out(&mut newer).await.token();
    assert!(granted > token);
    // The older connection's WAIT is answered with the same grant (or not at all).
    if let Some(reply) = older.read_within(QUIET).await {
        assert_eq!(Out::from_resp(&reply), Out::Acquired(granted), "the older WAIT of x");
    }
    // x last waited on the newer connection: closing the older one is not x's holder going away.
    drop(older);
    y.assert_quiet("y must not be granted while x holds through its newer connection").await;
    let info = ctl.info("k").await;
    assert_eq!((info.holder.as_deref(), info.token), (Some("x"), Some(granted)), "{info:?}");
    assert_eq!(newer.cmd(args!["LOCK.UNLOCK", "k", "x", granted, "FAILURE"]).await, Resp::Int(1));
    read_out(&mut y).await.token();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_older_connection_closes_while_both_wait_is_granted_on_the_newer() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "h"]).await.token();
    let older = start_wait(server.addr, "k", "x", 0).await;
    ctl.wait_blocked("k", 1).await;
    let mut newer = Raw::connect(server.addr).await;
    newer.send(args!["LOCK.WAIT", "k", "x", 0]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(older);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ctl.info("k").await.queue, ["x"], "x still waits on its newer connection");
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "h", token, "FAILURE"]).await, Resp::Int(1));
    let granted = read_out(&mut newer).await.token();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ctl.info("k").await.token, Some(granted));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lease_expires_on_time_even_when_longer_ones_are_pending() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    for i in 0..10 {
        cmd_out(&mut ctl, args!["LOCK.TRY", format!("long-{i}"), "a", "PX", 120_000]).await.token();
    }
    // Let the expiry driver go to sleep until the long deadlines.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "short", "a", "PX", 100]).await.token();
    let mut w = start_wait(server.addr, "short", "w", 0).await;
    // Answered well within the raw client's 10 s read timeout (not after two minutes).
    assert!(read_out(&mut w).await.token() > token);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_timeouts_and_leases_are_accepted_and_capped() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "h", "PX", i64::MAX]).await.token();
    let lease = ctl.info("k").await.lease_ms.unwrap();
    assert!(lease > 0 && lease <= 86_400_000, "capped to --max-lease-ms: {lease}");
    let mut w = start_wait(server.addr, "k", "w", i64::MAX.unsigned_abs()).await;
    ctl.wait_blocked("k", 1).await;
    assert_eq!(ctl.cmd(args!["PING"]).await, Resp::Simple("PONG".into()), "the server is fine");
    assert_eq!(ctl.cmd(args!["LOCK.EXTEND", "k", "h", token, i64::MAX]).await, Resp::Int(1));
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "h", token, "FAILURE"]).await, Resp::Int(1));
    let granted = read_out(&mut w).await.token();
    let reply = ctl.cmd(args!["LOCK.UNLOCK", "k", "w", granted, "SUCCESS", "KEEP", i64::MAX]).await;
    assert_eq!(reply, Resp::Int(0));
    let keep = ctl.info("k").await.keep_ms.unwrap();
    assert!(keep > 0 && keep <= 86_400_000, "KEEP capped: {keep}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_granted_after_its_wait_timed_out_is_released_when_that_connection_closes() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "h"]).await.token();
    // w1 waited on this connection; its WAIT timed out and it kept its place at the head.
    let mut w1 = Raw::connect(server.addr).await;
    assert_eq!(cmd_out(&mut w1, args!["LOCK.WAIT", "k", "w1", 30]).await, Out::Nil);
    let mut y = start_wait(server.addr, "k", "y", 0).await;
    ctl.wait_blocked("k", 1).await;
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "h", token, "FAILURE"]).await, Resp::Int(1));
    let info = ctl.info("k").await;
    assert_eq!(info.holder.as_deref(), Some("w1"), "{info:?}");
    // The connection on which the holder last waited closes while it holds: a FAILURE, so the
    // lock passes to y now rather than after w1's 30 s lease.
    drop(w1);
    let reply = y.read_within(Duration::from_secs(3)).await;
    let reply = reply.expect("y is handed the lock once the holder's last WAIT connection closed");
    assert!(Out::from_resp(&reply).token() > info.token.unwrap());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_owner_is_owed_done_only_within_its_queue_lease() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "a"]).await.token();
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "b", "PX", 150]).await, Out::Queued(1));
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "RESULT", "r"]).await, Resp::Int(1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // b let its place lapse: its next TRY is a fresh request on a free key.
    assert!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "b"]).await.token() > token);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_a_restarted_server_exceed_the_previous_ones() {
    let first = start().await;
    let mut con = Raw::connect(first.addr).await;
    let mut last = 0;
    for _ in 0..50 {
        last = cmd_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
        con.cmd(args!["LOCK.UNLOCK", "k", "a", last, "FAILURE"]).await;
    }
    first.stop().await.unwrap();
    let second = start().await;
    let mut con = Raw::connect(second.addr).await;
    let fresh = cmd_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    assert!(fresh > last, "a stale holder from before the restart stays fenced: {fresh} <= {last}");
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_counts_only_owners_still_in_line() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "a"]).await.token();
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "lapsed", "PX", 100]).await, Out::Queued(1));
    let mut blocked = start_wait(server.addr, "k", "blocked", 0).await;
    ctl.wait_info("k", "the idle owner to lapse", |info| info.queue == ["blocked"]).await;
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "RESULT", "r"]).await, Resp::Int(1));
    assert_eq!(read_out(&mut blocked).await, Out::done("a", Some("r")));
    // The lapsed owner is not owed a DONE: its TRY is a fresh grant.
    assert!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "lapsed"]).await.token() > token);
    server.stop().await.unwrap();
}
