//! Lock events for observers (`--notify-lock-events`): SUBSCRIBE / PSUBSCRIBE to `__lock__:<key>`
//! with the `redis` crate and raw RESP2 / RESP3, the subscribed context of RESP2, PUBLISH and
//! PUBSUB, CONFIG SET notify-lock-events, channel permissions, and a subscriber too slow for its
//! output-buffer limit.

use std::time::Duration;

use baton::config::YesNo;
use futures_util::StreamExt;
use redis::Value;

use crate::common::*;

fn bulk(text: &str) -> Resp {
    Resp::Bulk(text.as_bytes().to_vec())
}

/// A pub/sub frame of bulk strings and a final count, as RESP2 (an array) or RESP3 (a push) sends it.
fn frame(resp3: bool, words: &[&str], count: Option<i64>) -> Resp {
    let mut items: Vec<Resp> = words.iter().map(|word| bulk(word)).collect();
    items.extend(count.map(Resp::Int));
    if resp3 { Resp::Push(items) } else { Resp::Array(items) }
}

async fn start_notifying() -> baton::server::RunningServer {
    start_with(|config| config.notify_lock_events = YesNo::Yes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_with_the_redis_crate_watches_a_hand_off_in_order() {
    let server = start_notifying().await;
    let client = redis::Client::open(format!("redis://{}/", server.addr)).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("__lock__:layer").await.unwrap();
    pubsub.psubscribe("__lock__:*").await.unwrap();
    let mut messages = pubsub.into_on_message();

    let mut holder = redis_conn(server.addr).await;
    let mut waiter = redis_conn(server.addr).await;
    let token = query_out(&mut holder, args!["LOCK.TRY", "layer", "node-a"]).await.token();
    let mut blocked = waiter.clone();
    let wait = tokio::spawn(async move { query_out(&mut blocked, args!["LOCK.WAIT", "layer", "node-b", 0]).await });
    Raw::connect(server.addr).await.wait_blocked("layer", 1).await;
    // The holder fails: the lock goes to the waiter, which finishes the work.
    let reply = query(&mut holder, args!["LOCK.UNLOCK", "layer", "node-a", token, "FAILURE"]).await.unwrap();
    assert_eq!(reply, Value::Int(1));
    let token = wait.await.unwrap().token();
    let reply = query(&mut waiter, args!["LOCK.UNLOCK", "layer", "node-b", token, "SUCCESS"]).await.unwrap();
    assert_eq!(reply, Value::Int(0), "nobody else was waiting");

    let mut heard = Vec::new();
    while heard.len() < 8 {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the events arrive")
            .expect("the subscription stays open");
        assert_eq!(message.get_channel_name(), "__lock__:layer");
        let pattern: Option<String> = message.from_pattern().then(|| message.get_pattern().unwrap());
        heard.push((pattern, message.get_payload::<String>().unwrap()));
    }
    let expected: Vec<(Option<String>, String)> = ["granted", "released", "handoff", "done"]
        .into_iter()
        .flat_map(|event| [(None, event.to_owned()), (Some("__lock__:*".to_owned()), event.to_owned())])
        .collect();
    assert_eq!(heard, expected, "each event as a message, then as a pmessage, in the order they happened");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiries_cancels_and_closed_holders_are_told_too() {
    let server = start_notifying().await;
    let mut subscriber = Raw::connect(server.addr).await;
    assert_eq!(
        subscriber.cmd(args!["PSUBSCRIBE", "__lock__:*"]).await,
        frame(false, &["psubscribe", "__lock__:*"], Some(1))
    );
    let event =
        |key: &str, what: &str| frame(false, &["pmessage", "__lock__:*", &format!("__lock__:{key}"), what], None);

    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "lease", "a"]).await.token();
    let mut waiter = start_wait(server.addr, "lease", "b", 0).await;
    ctl.wait_blocked("lease", 1).await;
    assert_eq!(subscriber.read().await, event("lease", "granted"));
    // A lease of 1 ms from now: it runs out with the waiter in line.
    assert_eq!(ctl.cmd(args!["LOCK.EXTEND", "lease", "a", token, 1]).await, Resp::Int(1));
    assert_eq!(subscriber.read().await, event("lease", "expired"), "the lease ran out");
    assert_eq!(subscriber.read().await, event("lease", "handoff"));
    read_out(&mut waiter).await.token();

    assert_eq!(cmd_out(&mut ctl, args!["LOCK.TRY", "lease", "c"]).await, Out::Queued(1));
    assert_eq!(ctl.cmd(args!["LOCK.CANCEL", "lease", "c"]).await, Resp::Int(1));
    assert_eq!(subscriber.read().await, event("lease", "cancelled"));
    drop(waiter);
    assert_eq!(subscriber.read().await, event("lease", "released"), "its holder's connection closed");
    subscriber.assert_quiet("one event each").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_subscribers_are_held_to_the_subscribed_context() {
    let server = start_notifying().await;
    let mut sub = Raw::connect(server.addr).await;
    assert_eq!(
        sub.cmd(args!["UNSUBSCRIBE"]).await,
        Resp::Array(vec![bulk("unsubscribe"), Resp::NilBulk, Resp::Int(0)])
    );
    sub.send(args!["SUBSCRIBE", "__lock__:a", "__lock__:b", "__lock__:a"]).await;
    assert_eq!(sub.read().await, frame(false, &["subscribe", "__lock__:a"], Some(1)));
    assert_eq!(sub.read().await, frame(false, &["subscribe", "__lock__:b"], Some(2)));
    assert_eq!(sub.read().await, frame(false, &["subscribe", "__lock__:a"], Some(2)), "again is no change");
    assert_eq!(sub.cmd(args!["PING"]).await, frame(false, &["pong", ""], None));
    assert_eq!(sub.cmd(args!["PING", "hi"]).await, frame(false, &["pong", "hi"], None));
    assert_eq!(
        sub.cmd(args!["LOCK.TRY", "a", "o"]).await.err(),
        "ERR Can't execute 'lock.try': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    );
    assert!(sub.cmd(args!["CLIENT", "ID"]).await.err().contains("'client|id'"));
    let id = Raw::connect(server.addr).await.cmd(args!["CLIENT", "LIST", "TYPE", "pubsub"]).await.text();
    assert!(id.contains(" flags=P ") && id.contains(" sub=2 psub=0 "), "{id}");

    let mut ctl = Raw::connect(server.addr).await;
    cmd_out(&mut ctl, args!["LOCK.TRY", "b", "o"]).await.token();
    assert_eq!(sub.read().await, frame(false, &["message", "__lock__:b", "granted"], None));

    sub.send(args!["UNSUBSCRIBE", "__lock__:b", "__lock__:nope"]).await;
    assert_eq!(sub.read().await, frame(false, &["unsubscribe", "__lock__:b"], Some(1)));
    assert_eq!(sub.read().await, frame(false, &["unsubscribe", "__lock__:nope"], Some(1)));
    assert_eq!(sub.cmd(args!["UNSUBSCRIBE"]).await, frame(false, &["unsubscribe", "__lock__:a"], Some(0)));
    cmd_out(&mut sub, args!["LOCK.TRY", "c", "o"]).await.token();
    assert_eq!(sub.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    sub.assert_quiet("no events after the last unsubscribe").await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_subscribers_get_pushes_and_may_run_any_command() {
    let server = start_notifying().await;
    let mut sub = Raw::connect_resp3(server.addr).await;
    let (reply, bytes) = sub.cmd_frame(args!["SUBSCRIBE", "__lock__:k"]).await;
    assert_eq!(reply, frame(true, &["subscribe", "__lock__:k"], Some(1)));
    assert!(bytes.starts_with(b">3\r\n"), "a push: {:?}", String::from_utf8_lossy(&bytes));
    assert_eq!(sub.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));

    // Its own lock commands run, and it hears what they did.
    let token = cmd_out(&mut sub, args!["LOCK.TRY", "k", "me"]).await.token();
    assert_eq!(sub.read().await, frame(true, &["message", "__lock__:k", "granted"], None));
    // While it waits for a lock, it hears the events that lead to its grant.
    let mut other = Raw::connect(server.addr).await;
    let mut waiting = Raw::connect_resp3(server.addr).await;
    assert_eq!(waiting.cmd(args!["SUBSCRIBE", "__lock__:k"]).await, frame(true, &["subscribe", "__lock__:k"], Some(1)));
    waiting.send(args!["LOCK.WAIT", "k", "next", 0]).await;
    other.wait_blocked("k", 1).await;
    assert_eq!(sub.cmd(args!["LOCK.UNLOCK", "k", "me", token, "FAILURE"]).await, Resp::Int(1));
    let mut heard = Vec::new();
    for _ in 0..3 {
        heard.push(waiting.read().await);
    }
    let granted = heard.iter().find(|reply| matches!(reply, Resp::Array(_))).expect("its grant");
    assert!(Out::from_resp(granted).token() > token);
    let events: Vec<&Resp> = heard.iter().filter(|reply| matches!(reply, Resp::Push(_))).collect();
    assert_eq!(
        events,
        [
            &frame(true, &["message", "__lock__:k", "released"], None),
            &frame(true, &["message", "__lock__:k", "handoff"], None)
        ]
    );
    // Its own FAILURE's events follow that command's reply.
    assert_eq!(sub.read().await, frame(true, &["message", "__lock__:k", "released"], None));
    assert_eq!(sub.read().await, frame(true, &["message", "__lock__:k", "handoff"], None));
    assert_eq!(sub.cmd(args!["UNSUBSCRIBE"]).await, frame(true, &["unsubscribe", "__lock__:k"], Some(0)));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_off_by_default_and_config_set_turns_them_on() {
    let server = start().await;
    let mut sub = Raw::connect(server.addr).await;
    sub.cmd(args!["SUBSCRIBE", "__lock__:k"]).await;
    let mut ctl = Raw::connect(server.addr).await;
    assert_eq!(ctl.cmd(args!["CONFIG", "GET", "notify-lock-events"]).await.pairs()[0].1, bulk("no"));
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "o"]).await.token();
    sub.assert_quiet("notifications are off").await;

    assert_eq!(ctl.cmd(args!["CONFIG", "SET", "notify-lock-events", "yes"]).await, Resp::Simple("OK".into()));
    assert_eq!(ctl.cmd(args!["CONFIG", "GET", "notify-*"]).await.pairs()[0].1, bulk("yes"));
    ctl.cmd(args!["LOCK.UNLOCK", "k", "o", token, "SUCCESS"]).await;
    assert_eq!(sub.read().await, frame(false, &["message", "__lock__:k", "done"], None));
    assert_eq!(ctl.cmd(args!["CONFIG", "SET", "NOTIFY-LOCK-EVENTS", "No"]).await, Resp::Simple("OK".into()));
    cmd_out(&mut ctl, args!["LOCK.TRY", "k", "o"]).await.token();
    sub.assert_quiet("notifications are off again").await;

    let refused = |reply: Resp| reply.err().to_owned();
    assert_eq!(
        refused(ctl.cmd(args!["CONFIG", "SET", "notify-lock-events", "maybe"]).await),
        "ERR CONFIG SET failed (possibly related to argument 'notify-lock-events') - argument must be 'yes' or 'no'"
    );
    assert_eq!(
        refused(ctl.cmd(args!["CONFIG", "SET", "notify-lock-events", "yes", "notify-lock-events", "no"]).await),
        "ERR CONFIG SET failed (possibly related to argument 'notify-lock-events') - duplicate parameter"
    );
    assert!(
        refused(ctl.cmd(args!["CONFIG", "SET", "notify-lock-events", "yes", "maxclients", "1"]).await)
            .starts_with("ERR CONFIG SET failed (possibly related to argument 'maxclients') - baton takes it from")
    );
    assert_eq!(ctl.cmd(args!["CONFIG", "GET", "notify-lock-events"]).await.pairs()[0].1, bulk("no"), "all or nothing");
    assert_eq!(
        refused(ctl.cmd(args!["CONFIG", "SET", "nosuch", "1"]).await),
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    );
    assert_eq!(
        refused(ctl.cmd(args!["CONFIG", "SET", "notify-lock-events", "yes", "x"]).await),
        "ERR wrong number of arguments for 'config|set' command"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_subscribers_but_not_the_lock_channels() {
    let server = start().await;
    let mut sub = Raw::connect(server.addr).await;
    sub.send(args!["SUBSCRIBE", "news", "__lock__:k"]).await;
    sub.read().await;
    sub.read().await;
    let mut psub = Raw::connect_resp3(server.addr).await;
    psub.cmd(args!["PSUBSCRIBE", "n*"]).await;
    let mut ctl = Raw::connect(server.addr).await;
    assert_eq!(ctl.cmd(args!["PUBLISH", "news", "hello"]).await, Resp::Int(2));
    assert_eq!(sub.read().await, frame(false, &["message", "news", "hello"], None));
    assert_eq!(psub.read().await, frame(true, &["pmessage", "n*", "news", "hello"], None));
    assert_eq!(ctl.cmd(args!["PUBLISH", "quiet", "x"]).await, Resp::Int(0));
    assert!(ctl.cmd(args!["PUBLISH", "__lock__:k", "granted"]).await.err().starts_with("ERR the __lock__: channels"));
    sub.assert_quiet("no forged lock event").await;

    let mut channels: Vec<String> = ctl.cmd(args!["PUBSUB", "CHANNELS"]).await.array().iter().map(Resp::text).collect();
    channels.sort();
    assert_eq!(channels, ["__lock__:k", "news"]);
    assert_eq!(ctl.cmd(args!["PUBSUB", "CHANNELS", "__lock__:*"]).await, Resp::Array(vec![bulk("__lock__:k")]));
    assert_eq!(
        ctl.cmd(args!["PUBSUB", "NUMSUB", "news", "none"]).await,
        Resp::Array(vec![bulk("news"), Resp::Int(1), bulk("none"), Resp::Int(0)])
    );
    assert_eq!(ctl.cmd(args!["PUBSUB", "NUMPAT"]).await, Resp::Int(1));
    assert_eq!(info_field(&mut ctl, "pubsub_channels").await, 2);
    assert_eq!(info_field(&mut ctl, "pubsub_patterns").await, 1);
    assert_eq!(sub.cmd(args!["RESET"]).await, Resp::Simple("RESET".into()), "RESET unsubscribes");
    drop(psub);
    eventually("the subscriptions are gone", || {
        let addr = server.addr;
        async move { Raw::connect(addr).await.cmd(args!["PUBSUB", "NUMPAT"]).await == Resp::Int(0) }
    })
    .await;
    assert_eq!(ctl.cmd(args!["PUBSUB", "CHANNELS"]).await, Resp::Array(vec![]));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_permissions_follow_redis() {
    let server = start_notifying().await;
    let mut admin = Raw::connect(server.addr).await;
    let rules =
        args!["ACL", "SETUSER", "watcher", "on", ">pw", "resetchannels", "&__lock__:pull:*", "+@pubsub", "+auth"];
    assert_eq!(admin.cmd(rules).await, Resp::Simple("OK".into()));
    let mut watcher = Raw::connect(server.addr).await;
    watcher.cmd(args!["AUTH", "watcher", "pw"]).await;
    assert_eq!(
        watcher.cmd(args!["SUBSCRIBE", "__lock__:pull:a", "__lock__:push:a"]).await.err(),
        "NOPERM No permissions to access a channel"
    );
    assert_eq!(
        watcher.cmd(args!["PSUBSCRIBE", "__lock__:pull:a*"]).await.err(),
        "NOPERM No permissions to access a channel"
    );
    assert_eq!(
        watcher.cmd(args!["PSUBSCRIBE", "__lock__:pull:*"]).await,
        frame(false, &["psubscribe", "__lock__:pull:*"], Some(1)),
        "a pattern the user was given, word for word"
    );
    assert_eq!(info_field(&mut admin, "acl_access_denied_channel").await, 2);
    let log = admin.cmd(args!["ACL", "LOG", "1"]).await;
    assert_eq!(log.array()[0].field("reason"), bulk("channel"));
    assert_eq!(log.array()[0].field("object"), bulk("__lock__:pull:a*"));
    assert_eq!(
        admin.cmd(args!["ACL", "DRYRUN", "watcher", "PUBLISH", "news", "x"]).await,
        bulk("This user has no permissions to access the 'news' channel")
    );
    assert_eq!(admin.cmd(args!["ACL", "GETUSER", "watcher"]).await.field("channels"), bulk("&__lock__:pull:*"));
    let mut node = Raw::connect(server.addr).await;
    admin.cmd(args!["ACL", "SETUSER", "node", "on", ">pw", "~*", "&*", "+@all", "-@pubsub"]).await;
    node.cmd(args!["AUTH", "node", "pw"]).await;
    assert!(
        node.cmd(args!["SUBSCRIBE", "__lock__:x"])
            .await
            .err()
            .starts_with("NOPERM User node has no permissions to run the 'subscribe'")
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_too_slow_for_its_limit_is_disconnected_and_counted() {
    let server = start_with_small_output_limit().await;
    let mut slow = Raw::connect(server.addr).await;
    slow.cmd(args!["SUBSCRIBE", "firehose"]).await;
    let mut steady = Raw::connect(server.addr).await;
    steady.cmd(args!["SUBSCRIBE", "firehose"]).await;
    let mut publisher = Raw::connect(server.addr).await;
    let payload = vec![b'x'; 64 * 1024];
    let published = until_cut_off_for_output(&mut publisher, async |publisher: &mut Raw| {
        publisher.cmd(args!["PUBLISH", "firehose", payload.clone()]).await;
        steady.read().await;
    })
    .await;
    let received = slow.read_until_closed().await;
    assert!(received.len() < published * payload.len(), "it was cut off before it could read everything");
    assert_eq!(publisher.cmd(args!["PUBSUB", "NUMSUB", "firehose"]).await.array()[1], Resp::Int(1));
    assert_eq!(publisher.cmd(args!["PUBLISH", "firehose", "still here"]).await, Resp::Int(1));
    assert_eq!(steady.read().await, frame(false, &["message", "firehose", "still here"], None));
    server.stop().await.unwrap();
}
