//! MONITOR: Redis's line format, secrets redacted, admin commands left out, RESET to leave it, the
//! admin permission it needs, and a monitor too slow for its output-buffer limit.

use crate::common::*;

/// A MONITOR line without its time (which varies): `[0 addr] "arg" ...`.
fn without_time(line: &Resp) -> String {
    let Resp::Simple(line) = line else { panic!("MONITOR lines are status replies: {line:?}") };
    let (seconds, rest) = line.split_once(' ').expect("a time first");
    let (whole, micros) = seconds.split_once('.').expect("seconds.microseconds");
    assert!(whole.parse::<u64>().is_ok() && micros.len() == 6 && micros.parse::<u32>().is_ok(), "{line}");
    rest.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_see_requests_in_redis_format_without_secrets() {
    let server = start_with(|config| config.requirepass = Some("secret".into())).await;
    let mut monitor = Raw::connect(server.addr).await;
    monitor.cmd(args!["AUTH", "secret"]).await;
    assert_eq!(monitor.cmd(args!["MONITOR"]).await, Resp::Simple("OK".into()));
    let mut client = Raw::connect(server.addr).await;
    client.cmd(args!["AUTH", "wrong"]).await;
    client.cmd(args!["HELLO", "2", "AUTH", "default", "secret", "SETNAME", "node-a"]).await;
    let peer = client.cmd(args!["CLIENT", "INFO"]).await.text();
    let addr = peer.split_whitespace().find_map(|field| field.strip_prefix("addr=")).unwrap().to_owned();
    client.cmd(args!["CONFIG", "GET", "port"]).await;
    client.cmd(args!["NOSUCH"]).await;
    cmd_out(&mut client, args!["lock.try", "k", "owner"]).await.token();
    client.cmd(args!["PING", "a\"b\n\\\u{1}"]).await;
    client.cmd(args!["LOCK.TRY", "k"]).await;

    let expected = [
        r#""AUTH" "(redacted)""#.to_owned(),
        r#""HELLO" "2" "AUTH" "(redacted)" "(redacted)" "SETNAME" "node-a""#.to_owned(),
        r#""CLIENT" "INFO""#.to_owned(),
        r#""lock.try" "k" "owner""#.to_owned(),
        r#""PING" "a\"b\n\\\x01""#.to_owned(),
    ];
    for line in expected {
        assert_eq!(without_time(&monitor.read().await), format!("[0 {addr}] {line}"));
    }
    monitor.assert_quiet("CONFIG (admin), unknown commands and wrong arities are not shown").await;

    // The monitor's own requests are shown too, but not the RESET that ends it.
    let own = monitor.cmd(args!["PING"]).await;
    let line = monitor.read().await;
    assert_eq!((own, without_time(&line).ends_with(r#"] "PING""#)), (Resp::Simple("PONG".into()), true));
    let list = client.cmd(args!["CLIENT", "LIST"]).await.text();
    assert!(list.lines().any(|line| line.contains(" flags=O ")), "{list}");
    assert_eq!(monitor.cmd(args!["RESET"]).await, Resp::Simple("RESET".into()));
    client.cmd(args!["PING"]).await;
    monitor.assert_quiet("no longer monitoring").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_needs_admin_permission() {
    let server = start().await;
    let mut admin = Raw::connect(server.addr).await;
    admin.cmd(args!["ACL", "SETUSER", "node", "on", ">pw", "~*", "+@all", "-@dangerous"]).await;
    let mut node = Raw::connect(server.addr).await;
    node.cmd(args!["AUTH", "node", "pw"]).await;
    assert_eq!(
        node.cmd(args!["MONITOR"]).await.err(),
        "NOPERM User node has no permissions to run the 'monitor' command"
    );
    admin.cmd(args!["ACL", "SETUSER", "node", "+monitor"]).await;
    assert_eq!(node.cmd(args!["MONITOR"]).await, Resp::Simple("OK".into()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_too_slow_for_its_limit_is_disconnected_and_counted() {
    let server = start_with_small_output_limit().await;
    let mut monitor = Raw::connect(server.addr).await;
    monitor.cmd(args!["MONITOR"]).await;
    let mut busy = Raw::connect(server.addr).await;
    let message = vec![b'x'; 64 * 1024];
    let sent = until_cut_off_for_output(&mut busy, async |busy: &mut Raw| {
        assert_eq!(busy.cmd(args!["ECHO", message.clone()]).await, Resp::Bulk(message.clone()));
    })
    .await;
    let received = monitor.read_until_closed().await;
    assert!(received.len() < sent * message.len(), "cut off before it could read every line");
    cmd_out(&mut busy, args!["LOCK.TRY", "k", "o"]).await.token();
    server.stop().await.unwrap();
}
