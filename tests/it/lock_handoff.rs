//! Blocking LOCK.WAIT: FIFO hand-off to the head only, SUCCESS fan-out, timeouts that keep the
//! place, closed and cancelled waiters, commands pipelined behind a blocked WAIT.

use crate::common::*;

/// `count` waiters on `key`, each on its own connection, blocked in that order (owners w1, w2, …).
async fn blocked_waiters(ctl: &mut Raw, addr: std::net::SocketAddr, key: &str, count: usize) -> Vec<Raw> {
    let mut waiters = Vec::with_capacity(count);
    for i in 1..=count {
        waiters.push(start_wait(addr, key, &format!("w{i}"), 0).await);
        ctl.wait_blocked(key, i as i64).await;
    }
    waiters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_hands_the_lock_to_the_head_only_in_fifo_order() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut waiters = blocked_waiters(&mut ctl, server.addr, "k", 4).await;
    let info = ctl.info("k").await;
    assert_eq!(info.queue, ["w1", "w2", "w3", "w4"]);
    assert_eq!(info.blocked, 4);
    for (i, waiter) in waiters.iter_mut().enumerate() {
        waiter.assert_quiet(&format!("w{} before any release", i + 1)).await;
    }

    let mut holder = "holder".to_owned();
    for i in 0..waiters.len() {
        let reply = ctl.cmd(args!["LOCK.UNLOCK", "k", &holder, token, "FAILURE", "REASON", format!("try {i}")]).await;
        assert_eq!(reply, Resp::Int(1), "FAILURE by {holder} hands off");
        let granted = read_out(&mut waiters[i]).await.token();
        assert!(granted > token, "hand-off token {granted} must exceed {token}");
        token = granted;
        holder = format!("w{}", i + 1);
        // Everyone behind the head stays blocked.
        for (j, waiter) in waiters.iter_mut().enumerate().skip(i + 1) {
            waiter.assert_quiet(&format!("w{} while w{} holds", j + 1, i + 1)).await;
        }
        let info = ctl.info("k").await;
        assert_eq!(info.holder.as_deref(), Some(holder.as_str()));
        assert_eq!(info.token, Some(token));
        let rest: Vec<String> = (i + 2..=waiters.len()).map(|n| format!("w{n}")).collect();
        assert_eq!(info.queue, rest, "the rest of the line is unchanged");
        assert_eq!(info.blocked, rest.len() as i64);
        assert_eq!(info.last_failure, Some(format!("try {i}")));
    }
    // The last one fails with nobody waiting.
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", &holder, token, "FAILURE"]).await, Resp::Int(0));
    assert_eq!(ctl.info("k").await.holder, None);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_holder_can_report_from_its_own_connection() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "a"]).await.token();
    let mut waiters = blocked_waiters(&mut ctl, server.addr, "k", 2).await;
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "a", token, "FAILURE"]).await, Resp::Int(1));
    let t1 = read_out(&mut waiters[0]).await.token();
    // w1 finishes the work on the same connection its WAIT was answered on; w2 learns DONE.
    let reply = waiters[0].cmd(args!["LOCK.UNLOCK", "k", "w1", t1, "SUCCESS", "RESULT", "built"]).await;
    assert_eq!(reply, Resp::Int(1));
    assert_eq!(read_out(&mut waiters[1]).await, Out::done("w1", Some("built")));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_tells_every_blocked_waiter_done_with_the_result() {
    const BLOCKED: usize = 50;
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "img", "builder"]).await.token();
    let mut waiters = Vec::new();
    for i in 0..BLOCKED {
        waiters.push(start_wait(server.addr, "img", &format!("node-{i}"), 0).await);
    }
    ctl.wait_blocked("img", BLOCKED as i64).await;
    // Two more queued but not blocked.
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "img", "idle-1"]).await, Out::Queued((BLOCKED + 1) as i64));
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "img", "idle-2"]).await, Out::Queued((BLOCKED + 2) as i64));
    for waiter in waiters.iter_mut().take(3) {
        waiter.assert_quiet("before SUCCESS").await;
    }

    let told = ctl.cmd(args!["LOCK.UNLOCK", "img", "builder", token, "SUCCESS", "RESULT", "sha256:feed"]).await;
    assert_eq!(told, Resp::Int((BLOCKED + 2) as i64), "every queued owner is told DONE");
    let expected = Out::done("builder", Some("sha256:feed"));
    let answers = futures_util::future::join_all(waiters.iter_mut().map(read_out)).await;
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &expected, "node-{i}");
    }
    let info = ctl.info("img").await;
    assert!(info.queue.is_empty(), "{info:?}");
    assert_eq!(info.blocked, 0);
    assert_eq!(info.state, "free", "no KEEP: {info:?}");
    // The idle ones learn DONE on their next call, never a grant.
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "img", "idle-2"]).await, expected);
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.WAIT", "img", "idle-1", 0]).await, expected);
    // A fresh owner gets a fresh grant.
    assert!(cmd_out(&mut ctl, args!["LOCK.TRY", "img", "late"]).await.token() > token);
    server.stop().await.unwrap();
}

/// A blocked WAIT's DONE is owed until the server starts writing it, not until it has written it:
/// an owner that read its DONE and at once calls again on another connection has begun a new
/// round, and is granted the lock rather than told the old DONE twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_read_its_done_and_calls_again_elsewhere_begins_a_new_round() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut elsewhere = Raw::connect(server.addr).await;
    for round in 0..200 {
        let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "builder"]).await.token();
        let mut waiter = start_wait(server.addr, "k", "node", 0).await;
        ctl.wait_blocked("k", 1).await;
        let told = ctl.cmd(args!["LOCK.UNLOCK", "k", "builder", token, "SUCCESS", "RESULT", round]).await;
        assert_eq!(told, Resp::Int(1));
        assert_eq!(read_out(&mut waiter).await, Out::done("builder", Some(&round.to_string())));
        let again = cmd_out(&mut elsewhere, args!["LOCK.TRY", "k", "node"]).await;
        let Out::Acquired(granted) = again else { panic!("round {round}: a new round answered {again:?}") };
        assert_eq!(elsewhere.cmd(args!["LOCK.UNLOCK", "k", "node", granted, "FAILURE"]).await, Resp::Int(0));
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_with_keep_answers_blocked_and_later_waiters() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "a"]).await.token();
    let mut waiters = blocked_waiters(&mut ctl, server.addr, "k", 3).await;
    let reply = ctl.cmd(args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "RESULT", "r", "KEEP", 60_000]).await;
    assert_eq!(reply, Resp::Int(3));
    for waiter in &mut waiters {
        assert_eq!(read_out(waiter).await, Out::done("a", Some("r")));
    }
    let mut late = start_wait(server.addr, "k", "late", 0).await;
    assert_eq!(read_out(&mut late).await, Out::done("a", Some("r")));
    assert_eq!(ctl.info("k").await.state, "done");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_answers_nil_and_keeps_the_place() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut w1 = start_wait(server.addr, "k", "w1", 150).await;
    ctl.wait_info("k", "w1 queued", |info| info.queue == ["w1"]).await;
    let mut w2 = start_wait(server.addr, "k", "w2", 0).await;
    ctl.wait_info("k", "w2 queued", |info| info.queue == ["w1", "w2"]).await;

    let (reply, bytes) = w1.read_frame().await;
    assert!(reply.is_nil(), "a timed-out WAIT answers nil, got {reply:?}");
    assert_eq!(bytes, b"*-1\r\n", "RESP2 null array like BLPOP");
    let info = ctl.wait_blocked("k", 1).await;
    assert_eq!(info.queue, ["w1", "w2"], "w1 keeps its place at the head");
    assert_eq!(cmd_out(&mut w1, args!["LOCK.TRY", "k", "w1"]).await, Out::Queued(1));
    assert_eq!(cmd_out(&mut w1, args!["LOCK.WAIT", "k", "w1", 50]).await, Out::Nil, "a second timeout, same place");
    assert_eq!(ctl.info("k").await.queue, ["w1", "w2"]);

    // Waits again and gets the hand-off; w2 stays blocked.
    w1.send(args!["LOCK.WAIT", "k", "w1", 0]).await;
    ctl.wait_blocked("k", 2).await;
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE"]).await, Resp::Int(1));
    let t1 = read_out(&mut w1).await.token();
    assert!(t1 > token);
    w2.assert_quiet("w2 behind w1").await;
    assert_eq!(ctl.info("k").await.holder.as_deref(), Some("w1"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_is_not_blocked_is_granted_and_learns_it_on_its_next_call() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut w1 = Raw::connect(server.addr).await;
    assert_eq!(cmd_out(&mut w1, args!["LOCK.WAIT", "k", "w1", 50]).await, Out::Nil);
    let mut w2 = start_wait(server.addr, "k", "w2", 0).await;
    ctl.wait_blocked("k", 1).await;

    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE"]).await, Resp::Int(1));
    let info = ctl.info("k").await;
    assert_eq!(info.holder.as_deref(), Some("w1"), "the head keeps its place and is granted: {info:?}");
    let granted = info.token.unwrap();
    assert!(granted > token);
    assert_eq!(info.queue, ["w2"]);
    w2.assert_quiet("w2 is not the head").await;

    assert_eq!(cmd_out(&mut w1, args!["LOCK.TRY", "k", "w1"]).await, Out::Acquired(granted));
    assert_eq!(cmd_out(&mut w1, args!["LOCK.WAIT", "k", "w1", 0]).await, Out::Acquired(granted));
    assert_eq!(w1.cmd(args!["LOCK.UNLOCK", "k", "w1", granted, "FAILURE"]).await, Resp::Int(1));
    assert!(read_out(&mut w2).await.token() > granted);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_waiter_whose_connection_closes_is_never_granted() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut waiters = blocked_waiters(&mut ctl, server.addr, "k", 4).await;

    // Close the head and one in the middle.
    let w3 = waiters.remove(2);
    let w1 = waiters.remove(0);
    drop(w1);
    drop(w3);
    let info = ctl.wait_info("k", "closed waiters leave", |info| info.queue == ["w2", "w4"]).await;
    assert_eq!(info.blocked, 2);

    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE"]).await, Resp::Int(1));
    let t2 = read_out(&mut waiters[0]).await.token();
    assert_eq!(ctl.info("k").await.holder.as_deref(), Some("w2"));
    waiters[1].assert_quiet("w4 behind w2").await;
    assert_eq!(waiters[0].cmd(args!["LOCK.UNLOCK", "k", "w2", t2, "FAILURE"]).await, Resp::Int(1));
    let t4 = read_out(&mut waiters[1]).await.token();
    assert!(t4 > t2);
    assert_eq!(ctl.info("k").await.holder.as_deref(), Some("w4"));
    // The closed owners were never granted: coming back they queue at the end.
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "w1"]).await, Out::Queued(1));
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "w3"]).await, Out::Queued(2));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_waiter_closing_leaves_nobody_to_hand_to() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let waiter = start_wait(server.addr, "k", "gone", 0).await;
    ctl.wait_blocked("k", 1).await;
    drop(waiter);
    ctl.wait_info("k", "the closed waiter leaves", |info| info.queue.is_empty()).await;
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE"]).await, Resp::Int(0));
    assert_eq!(ctl.info("k").await.state, "free");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_blocked_waiter_ends_its_wait_with_nil() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut waiters = blocked_waiters(&mut ctl, server.addr, "k", 2).await;
    assert_eq!(ctl.cmd(args!["LOCK.CANCEL", "k", "w1"]).await, Resp::Int(1));
    assert!(waiters[0].read().await.is_nil(), "the cancelled WAIT answers nil");
    let info = ctl.info("k").await;
    assert_eq!(info.queue, ["w2"]);
    assert_eq!(info.blocked, 1);
    assert_eq!(ctl.cmd(args!["LOCK.CANCEL", "k", "w1"]).await, Resp::Int(0));
    // The hand-off skips w1.
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE"]).await, Resp::Int(1));
    read_out(&mut waiters[1]).await.token();
    assert_eq!(cmd_out(&mut waiters[0], args!["LOCK.TRY", "k", "w1", "NOQUEUE"]).await, Out::busy("w2"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_and_try_share_one_queue_entry_per_owner() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "a"]).await, Out::Queued(1));
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(2));
    let mut b = start_wait(server.addr, "k", "b", 0).await;
    ctl.wait_blocked("k", 1).await;
    let mut a = start_wait(server.addr, "k", "a", 0).await;
    let info = ctl.wait_blocked("k", 2).await;
    assert_eq!(info.queue, ["a", "b"], "WAIT keeps the place TRY took");
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(2));
    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "k", "c"]).await, Out::Queued(3));
    a.assert_quiet("a").await;
    b.assert_quiet("b").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pipelined_behind_a_blocked_wait_are_answered_after_it() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut w = Raw::connect(server.addr).await;
    let mut batch = encode(&args!["LOCK.WAIT", "k", "w", 0]);
    batch.extend(encode(&args!["PING"]));
    batch.extend(encode(&args!["LOCK.INFO", "k"]));
    batch.extend(encode(&args!["ECHO", "after"]));
    batch.extend(b"PING inline\r\n");
    w.write(&batch).await;
    ctl.wait_blocked("k", 1).await;
    w.assert_quiet("nothing before the WAIT is answered").await;

    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE"]).await, Resp::Int(1));
    let granted = read_out(&mut w).await.token();
    assert_eq!(w.read().await, Resp::Simple("PONG".into()));
    let info = KeyInfo::from_resp(&w.read().await);
    assert_eq!(info.holder.as_deref(), Some("w"), "LOCK.INFO ran after the WAIT was answered: {info:?}");
    assert_eq!(info.token, Some(granted));
    assert_eq!(w.read().await, Resp::Bulk(b"after".to_vec()));
    assert_eq!(w.read().await, Resp::Bulk(b"inline".to_vec()));
    server.stop().await.unwrap();
}

/// A blocked WAIT keeps its key as a slice of the connection's read buffer; input arriving
/// meanwhile that does not fit that buffer moves the connection to a new one, and the WAIT copies
/// its key then. The key must come through intact: CLIENT LIST shows it, and the WAIT's end (a
/// CLIENT UNBLOCK, then a grant to the re-sent WAIT) finds its place in that key's line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_wait_keeps_its_key_when_input_behind_it_needs_a_new_read_buffer() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let key = "pull:sha256:4f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", key, "holder"]).await.token();
    let mut w = Raw::connect(server.addr).await;
    w.write(&encode(&args!["CLIENT", "ID"])).await;
    let Resp::Int(id) = w.read().await else { panic!("CLIENT ID is an integer") };
    w.write(&encode(&args!["LOCK.WAIT", key, "w", 0])).await;
    ctl.wait_blocked(key, 1).await;
    let big = "x".repeat(64 * 1024);
    let mut behind = encode(&args!["ECHO", big.as_str()]);
    behind.extend(encode(&args!["LOCK.WAIT", key, "w", 0]));
    w.write(&behind).await;
    // Nothing the server answers tells when it has read input behind a blocked WAIT; a generous
    // pause lets it (were it not read yet, the checks below would still hold, without the copy).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let list = ctl.cmd(args!["CLIENT", "LIST", "ID", id]).await.text();
    assert!(list.trim_end().ends_with(&format!(" lock={key}")), "the blocked key is still shown whole: {list:?}");
    assert_eq!(ctl.cmd(args!["CLIENT", "UNBLOCK", id]).await, Resp::Int(1));
    assert!(w.read().await.is_nil(), "UNBLOCK ends the WAIT like its timeout");
    assert_eq!(w.read().await, Resp::Bulk(big.into_bytes()));
    ctl.wait_blocked(key, 1).await;
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", key, "holder", token, "FAILURE"]).await, Resp::Int(1));
    let granted = read_out(&mut w).await.token();
    let info = KeyInfo::from_resp(&ctl.cmd(args!["LOCK.INFO", key]).await);
    assert_eq!((info.holder.as_deref(), info.token), (Some("w"), Some(granted)), "{info:?}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_pipelined_behind_a_wait_that_times_out_run_after_the_nil() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut w = Raw::connect(server.addr).await;
    let mut batch = encode(&args!["LOCK.WAIT", "k", "w", 100]);
    batch.extend(encode(&args!["LOCK.TRY", "k", "w"]));
    batch.extend(encode(&args!["LOCK.WAIT", "k", "w", 100]));
    batch.extend(encode(&args!["ECHO", "end"]));
    w.write(&batch).await;
    assert!(w.read().await.is_nil());
    assert_eq!(read_out(&mut w).await, Out::Queued(1));
    assert!(w.read().await.is_nil());
    assert_eq!(w.read().await, Resp::Bulk(b"end".to_vec()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_on_different_keys_are_independent() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let ta = cmd_out(&mut ctl, args!["LOCK.TRY", "a", "h"]).await.token();
    let tb = cmd_out(&mut ctl, args!["LOCK.TRY", "b", "h"]).await.token();
    let mut wa = start_wait(server.addr, "a", "w", 0).await;
    let mut wb = start_wait(server.addr, "b", "w", 0).await;
    ctl.wait_blocked("a", 1).await;
    ctl.wait_blocked("b", 1).await;
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "b", "h", tb, "SUCCESS", "RESULT", "B"]).await, Resp::Int(1));
    assert_eq!(read_out(&mut wb).await, Out::done("h", Some("B")));
    wa.assert_quiet("key a is still held").await;
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "a", "h", ta, "FAILURE"]).await, Resp::Int(1));
    read_out(&mut wa).await.token();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_handoffs_in_a_row_keep_fifo_order() {
    const WAITERS: usize = 20;
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "w0"]).await.token();
    let mut waiters = blocked_waiters(&mut ctl, server.addr, "k", WAITERS).await;
    // Each new holder fails on its own connection; the grants must come in queue order.
    let mut previous: Option<Raw> = None;
    for i in 0..WAITERS {
        let owner = format!("w{i}");
        let reply = match previous.as_mut() {
            Some(raw) => raw.cmd(args!["LOCK.UNLOCK", "k", &owner, token, "FAILURE"]).await,
            None => ctl.cmd(args!["LOCK.UNLOCK", "k", &owner, token, "FAILURE"]).await,
        };
        assert_eq!(reply, Resp::Int(1), "FAILURE by {owner}");
        let mut next = waiters.remove(0);
        let granted = read_out(&mut next).await.token();
        assert!(granted > token);
        token = granted;
        previous = Some(next);
    }
    let last = format!("w{WAITERS}");
    let mut last_raw = previous.unwrap();
    assert_eq!(last_raw.cmd(args!["LOCK.UNLOCK", "k", &last, token, "SUCCESS"]).await, Resp::Int(0));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_timing_out_as_the_lock_is_handed_to_it_never_loses_the_grant() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut w = Raw::connect(server.addr).await;
    for round in 0..30u64 {
        let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "h"]).await.token();
        w.send(args!["LOCK.WAIT", "k", "w", 20]).await;
        tokio::time::sleep(std::time::Duration::from_micros(15_000 + round * 350)).await;
        assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "h", token, "FAILURE"]).await, Resp::Int(1), "round {round}");
        let answer = read_out(&mut w).await;
        let info = ctl.info("k").await;
        assert_eq!(info.holder.as_deref(), Some("w"), "round {round}: w is the head either way: {info:?}");
        let granted = info.token.unwrap();
        match answer {
            Out::Acquired(t) => assert_eq!(t, granted, "round {round}"),
            Out::Nil => {
                assert_eq!(cmd_out(&mut w, args!["LOCK.TRY", "k", "w"]).await, Out::Acquired(granted), "round {round}")
            }
            other => panic!("round {round}: {other:?}"),
        }
        assert_eq!(w.cmd(args!["LOCK.UNLOCK", "k", "w", granted, "SUCCESS"]).await, Resp::Int(0), "round {round}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_closing_as_the_lock_is_handed_to_it_passes_it_on() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    for round in 0..30u64 {
        let key = format!("k{round}");
        let token = cmd_out(&mut ctl, args!["LOCK.TRY", &key, "h"]).await.token();
        let w = start_wait(server.addr, &key, "w", 0).await;
        ctl.wait_blocked(&key, 1).await;
        let mut y = start_wait(server.addr, &key, "y", 0).await;
        ctl.wait_blocked(&key, 2).await;
        let closer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_micros(round * 30)).await;
            drop(w);
        });
        assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", &key, "h", token, "FAILURE"]).await, Resp::Int(1), "round {round}");
        closer.await.unwrap();
        // Whether w was granted before its close was seen or not, y ends up with the lock.
        let granted = read_out(&mut y).await.token();
        let info = ctl.info(key.as_str()).await;
        assert_eq!((info.holder.as_deref(), info.token), (Some("y"), Some(granted)), "round {round}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_unblock_racing_a_hand_off_never_loses_the_grant() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut unblocker = Raw::connect(server.addr).await;
    let mut w = Raw::connect(server.addr).await;
    let id = w.client_id().await;
    for round in 0..30u64 {
        let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "h"]).await.token();
        w.send(args!["LOCK.WAIT", "k", "w", 0]).await;
        ctl.wait_blocked("k", 1).await;
        // Both orders are sent at once from two connections.
        unblocker.send(args!["CLIENT", "UNBLOCK", id, if round % 2 == 0 { "TIMEOUT" } else { "ERROR" }]).await;
        ctl.send(args!["LOCK.UNLOCK", "k", "h", token, "FAILURE"]).await;
        assert_eq!(ctl.read().await, Resp::Int(1), "round {round}");
        unblocker.read().await.int();
        let reply = w.read().await;
        let info = ctl.info("k").await;
        assert_eq!(info.holder.as_deref(), Some("w"), "round {round}: {info:?}");
        let granted = info.token.unwrap();
        if reply.is_nil() || reply.is_error() {
            if let Resp::Error(text) = &reply {
                assert!(text.starts_with("UNBLOCKED"), "round {round}: {text}");
            }
            assert_eq!(cmd_out(&mut w, args!["LOCK.TRY", "k", "w"]).await, Out::Acquired(granted), "round {round}");
        } else {
            assert_eq!(Out::from_resp(&reply), Out::Acquired(granted), "round {round}");
        }
        assert_eq!(w.cmd(args!["LOCK.UNLOCK", "k", "w", granted, "SUCCESS"]).await, Resp::Int(0), "round {round}");
    }
    server.stop().await.unwrap();
}

/// A SUCCESS on a one-loop server: the unlocking connection writes every waiter's DONE itself
/// (src/direct.rs), each in its waiter's protocol, before the replies to requests pipelined
/// behind the WAITs; INFO counts them; each owner is told DONE once and is then free to take
/// the lock afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dones_written_by_the_unlocking_connection_arrive_whole_once_and_in_order() {
    dones_written_by_the_unlocking_connection(12).await;
}

/// The same with a line long enough that, on a machine with a core no event loop uses, the
/// unlocking connection shares the DONEs with a thread there (`Connection::write_dones`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dones_shared_with_a_thread_on_the_spare_core_arrive_whole_once_and_in_order() {
    dones_written_by_the_unlocking_connection(300).await;
}

async fn dones_written_by_the_unlocking_connection(waiter_count: usize) {
    let server = start_with(|config| config.threads = Some(1)).await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut waiters = Vec::with_capacity(waiter_count);
    for i in 1..=waiter_count {
        let mut waiter = Raw::connect(server.addr).await;
        // Half in RESP3, whose DONE spells the missing result differently.
        if i % 2 == 0 {
            waiter.cmd(args!["HELLO", 3]).await;
        }
        waiter.send(args!["LOCK.WAIT", "k", format!("w{i}"), 0]).await;
        waiter.send(args!["PING"]).await;
        ctl.wait_blocked("k", i as i64).await;
        waiters.push(waiter);
    }
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "SUCCESS"]).await.int(), waiter_count as i64);
    for (i, waiter) in waiters.iter_mut().enumerate() {
        assert_eq!(read_out(waiter).await, Out::done("holder", None), "w{}", i + 1);
        assert_eq!(waiter.read().await, Resp::Simple("PONG".into()), "w{}", i + 1);
    }
    let info = ctl.cmd(args!["INFO", "locks"]).await.text();
    let field = |name: &str| -> i64 {
        let value = info.lines().find_map(|line| line.strip_prefix(&format!("{name}:"))).expect(name);
        value.trim().parse().unwrap()
    };
    assert_eq!(field("lock_done_answers"), waiter_count as i64);
    let written = field("lock_dones_written_by_unlocker");
    // A waiter's own task writes its DONE when the unlock came before its WAIT had lent its
    // mailbox the writer (it lends it once the replies before the WAIT are written).
    assert!((1..=waiter_count as i64).contains(&written), "{written} of {waiter_count} written by the unlocker");
    if waiter_count >= 256 {
        // A line this long (`SHARED_FANOUT_MIN`, src/connection.rs) is written directly, by the
        // unlocking loop and the spare core's thread together (or the loop alone).
        assert!(written > waiter_count as i64 / 2, "{written} of {waiter_count} written by the unlocker");
    }
    // Told DONE once: the first to call again takes the lock, the others queue behind it.
    for (i, waiter) in waiters.iter_mut().enumerate() {
        let again = cmd_out(waiter, args!["LOCK.TRY", "k", format!("w{}", i + 1)]).await;
        let expected = if i == 0 { matches!(again, Out::Acquired(_)) } else { again == Out::Queued(i as i64) };
        assert!(expected, "w{}: {again:?}", i + 1);
    }
    server.stop().await.unwrap();
}
