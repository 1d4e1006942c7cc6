//! Regression tests for the core-safety rules (issue 9), driven through a real server. Each checks
//! an outcome that must hold in every interleaving of the race it is about, so none depends on
//! timing.

use std::time::Duration;

use crate::common::*;

/// Polls INFO until `field` has `value`.
async fn wait_info_field(con: &mut Raw, field: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + POLL_DEADLINE;
    loop {
        let info = con.cmd(args!["INFO"]).await.text();
        if info.lines().any(|line| line == format!("{field}:{value}")) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "INFO never showed {field}:{value}:\n{info}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_blocked_on_two_connections_keeps_the_lock_when_one_closes() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut older = start_wait(server.addr, "k", "o", 0).await;
    ctl.wait_blocked("k", 1).await;
    let newer = start_wait(server.addr, "k", "o", 0).await;
    wait_info_field(&mut ctl, "blocked_clients", "2").await;
    let mut next = start_wait(server.addr, "k", "n", 0).await;
    ctl.wait_blocked("k", 2).await;

    // The close may be noticed before, during or after the hand-off: the lock must end up with o
    // on the connection still open, and n must keep waiting.
    drop(newer);
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE"]).await, Resp::Int(1));
    let granted = read_out(&mut older).await.token();
    wait_info_field(&mut ctl, "connected_clients", "3").await;
    let info = ctl.info("k").await;
    assert_eq!((info.holder.as_deref(), info.token), (Some("o"), Some(granted)), "{info:?}");
    next.assert_quiet("the next waiter while o holds the lock").await;

    // And o still holds it as an owner: its FAILURE hands the lock on.
    assert_eq!(older.cmd(args!["LOCK.UNLOCK", "k", "o", granted, "FAILURE"]).await, Resp::Int(1));
    assert!(read_out(&mut next).await.token() > granted);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_connection_closed_is_never_granted() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    // o's WAIT times out, which keeps its place; then its connection goes away.
    let mut departed = Raw::connect(server.addr).await;
    assert_eq!(cmd_out(&mut departed, args!["LOCK.WAIT", "k", "o", 50]).await, Out::Nil);
    assert_eq!(ctl.info("k").await.queue, ["o"]);
    drop(departed);
    wait_info_field(&mut ctl, "connected_clients", "1").await;
    let mut next = start_wait(server.addr, "k", "n", 0).await;
    ctl.wait_blocked("k", 1).await;
    assert_eq!(ctl.info("k").await.queue, ["n"], "the departed owner's place is gone");

    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE"]).await, Resp::Int(1));
    let granted = read_out(&mut next).await.token();
    assert_eq!(ctl.info("k").await.token, Some(granted));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_run_requests_pipelined_behind_a_blocked_wait() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut pipelined = Raw::connect(server.addr).await;
    let mut requests = encode(&args!["LOCK.WAIT", "k", "w", 0]);
    requests.extend(encode(&args!["LOCK.TRY", "other", "w"]));
    requests.extend(encode(&args!["LOCK.WAIT", "k", "w2", 0]));
    pipelined.write(&requests).await;
    ctl.wait_blocked("k", 1).await;

    let stopping = tokio::spawn(server.stop());
    let answered = pipelined.read_until_closed().await;
    assert_eq!(String::from_utf8_lossy(&answered), "-ERR server is shutting down\r\n");
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_list_escapes_a_blocked_key_that_holds_separators() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let key = "a b\nid=999 addr=6.6.6.6:1";
    cmd_out(&mut ctl, args!["LOCK.TRY", key, "holder"]).await.token();
    let _waiter = start_wait(server.addr, key, "w", 0).await;
    ctl.wait_blocked(key, 1).await;

    let list = ctl.cmd(args!["CLIENT", "LIST"]).await.text();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "one line per client: {list:?}");
    assert!(lines.iter().all(|line| line.starts_with("id=") && !line.starts_with("id=999")), "{list:?}");
    assert!(list.contains(r"lock=a\x20b\x0aid=999\x20addr=6.6.6.6:1"), "{list:?}");
    server.stop().await.unwrap();
}
