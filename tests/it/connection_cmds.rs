//! Connection and server commands: PING, ECHO, HELLO, AUTH, SELECT, QUIT, RESET, CLIENT …,
//! INFO, COMMAND, DBSIZE, and shutdown answering blocked waiters.

use std::time::Duration;

use crate::common::*;

fn ok() -> Resp {
    Resp::Simple("OK".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_echo() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    assert_eq!(con.cmd_frame(args!["PING"]).await.1, b"+PONG\r\n");
    assert_eq!(con.cmd_frame(args!["PING", "hi there"]).await.1, b"$8\r\nhi there\r\n");
    assert_eq!(con.cmd_frame(args!["ECHO", b"a\x00b"]).await.1, b"$3\r\na\x00b\r\n");
    assert_eq!(con.cmd_frame(args!["echo", ""]).await.1, b"$0\r\n\r\n");
    let arity = con.cmd(args!["ECHO"]).await;
    assert_eq!(arity.err(), "ERR wrong number of arguments for 'echo' command");
    // Through the redis crate too.
    let mut rc = redis_conn(server.addr).await;
    let pong: String = redis::cmd("PING").query_async(&mut rc).await.unwrap();
    assert_eq!(pong, "PONG");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_reports_the_server_and_switches_protocols() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let id = con.client_id().await;
    let (hello, bytes) = con.cmd_frame(args!["HELLO"]).await;
    assert!(bytes.starts_with(b"*"), "HELLO without a version stays in RESP2");
    for field in ["server", "version", "proto", "id", "mode", "role", "modules"] {
        assert!(hello.get(field).is_some(), "HELLO lacks {field}: {hello:?}");
    }
    assert_eq!(hello.field("proto"), Resp::Int(2));
    assert_eq!(hello.field("id"), Resp::Int(id));
    assert_eq!(hello.field("mode").text(), "standalone");
    assert_eq!(hello.field("role").text(), "master");
    assert!(!hello.field("version").text().is_empty());
    assert!(hello.field("modules").array().is_empty());

    let (hello, bytes) = con.cmd_frame(args!["HELLO", 3, "SETNAME", "builder-7"]).await;
    assert!(bytes.starts_with(b"%"), "HELLO 3 answers with a map");
    assert_eq!(hello.field("proto"), Resp::Int(3));
    assert_eq!(con.cmd(args!["CLIENT", "GETNAME"]).await.text(), "builder-7");
    let (hello, bytes) = con.cmd_frame(args!["HELLO", 2]).await;
    assert!(bytes.starts_with(b"*"));
    assert_eq!(hello.field("proto"), Resp::Int(2));

    let noproto = con.cmd(args!["HELLO", 4]).await;
    assert_eq!(noproto.err(), "NOPROTO unsupported protocol version");
    assert!(con.cmd(args!["HELLO", "three"]).await.is_error());
    assert!(con.cmd(args!["HELLO", 3, "BOGUS"]).await.is_error());
    assert!(con.cmd(args!["HELLO", 3, "AUTH", "default"]).await.is_error());
    // None of those changed the protocol.
    assert_eq!(con.cmd_frame(args!["LOCK.INFO", "k"]).await.1[0], b'*');
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_requirepass() {
    let server = start_with(|config| config.requirepass = Some("s3cret".into())).await;
    let mut con = Raw::connect(server.addr).await;
    let noauth = b"-NOAUTH Authentication required.\r\n".to_vec();
    assert_eq!(con.cmd_frame(args!["LOCK.TRY", "k", "a"]).await.1, noauth);
    assert_eq!(con.cmd_frame(args!["PING"]).await.1, noauth);
    assert_eq!(con.cmd_frame(args!["LOCK.INFO", "k"]).await.1, noauth);
    assert_eq!(con.cmd_frame(args!["CLIENT", "LIST"]).await.1, noauth);
    let wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n".to_vec();
    assert_eq!(con.cmd_frame(args!["AUTH", "nope"]).await.1, wrongpass);
    assert_eq!(con.cmd_frame(args!["AUTH", "default", "nope"]).await.1, wrongpass);
    assert_eq!(con.cmd_frame(args!["AUTH", "alice", "s3cret"]).await.1, wrongpass);
    assert_eq!(con.cmd_frame(args!["LOCK.TRY", "k", "a"]).await.1, noauth, "still not authenticated");
    assert_eq!(con.cmd(args!["AUTH", "s3cret"]).await, ok());
    con.cmd(args!["LOCK.TRY", "k", "a"]).await;
    assert_eq!(con.info("k").await.holder.as_deref(), Some("a"));

    // HELLO needs authentication, or AUTH inside it.
    let mut second = Raw::connect(server.addr).await;
    let refused = second.cmd(args!["HELLO", 3]).await;
    assert!(refused.err().starts_with("NOAUTH"), "{refused:?}");
    let wrong = second.cmd(args!["HELLO", 3, "AUTH", "default", "wrong"]).await;
    assert!(wrong.err().starts_with("WRONGPASS"), "{wrong:?}");
    let (hello, bytes) = second.cmd_frame(args!["HELLO", 3, "AUTH", "default", "s3cret"]).await;
    assert!(bytes.starts_with(b"%"), "HELLO 3 AUTH answers with a map: {hello:?}");
    assert_eq!(hello.field("proto"), Resp::Int(3));
    assert_eq!(cmd_out(&mut second, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(1));

    // RESET forgets the authentication.
    assert_eq!(second.cmd(args!["RESET"]).await, Resp::Simple("RESET".into()));
    assert_eq!(second.cmd_frame(args!["LOCK.TRY", "k", "b"]).await.1, noauth);

    // The redis crate with and without the password.
    let url = format!("redis://:s3cret@{}/", server.addr);
    let mut rc = redis_conn_url(&url).await.expect("connect with the password");
    assert_eq!(query_out(&mut rc, args!["LOCK.TRY", "k", "c"]).await, Out::Queued(2));
    let url = format!("redis://default:s3cret@{}/?protocol=resp3", server.addr);
    let mut rc3 = redis_conn_url(&url).await.expect("connect with HELLO 3 AUTH");
    assert_eq!(query_out(&mut rc3, args!["LOCK.TRY", "k", "d"]).await, Out::Queued(3));
    match redis_conn_url(&format!("redis://{}/", server.addr)).await {
        Err(error) => assert!(err_text(&error).contains("NOAUTH"), "{error}"),
        Ok(mut rc) => {
            let out = query_out(&mut rc, args!["LOCK.TRY", "k", "e"]).await;
            assert!(out.err_starts_with("NOAUTH"), "{out:?}");
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_without_requirepass() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    assert!(con.cmd(args!["AUTH", "whatever"]).await.err().starts_with("ERR"));
    assert_eq!(con.cmd(args!["AUTH", "default", "whatever"]).await, ok(), "like Redis with nopass");
    let (hello, _) = con.cmd_frame(args!["HELLO", 3, "AUTH", "default", "anything"]).await;
    assert_eq!(hello.field("proto"), Resp::Int(3));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_only_knows_db_zero() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    assert_eq!(con.cmd(args!["SELECT", 0]).await, ok());
    assert_eq!(con.cmd_frame(args!["SELECT", 1]).await.1, b"-ERR DB index is out of range\r\n");
    assert_eq!(con.cmd_frame(args!["SELECT", 15]).await.1, b"-ERR DB index is out of range\r\n");
    assert!(con.cmd(args!["SELECT", "x"]).await.is_error());
    // The redis crate selecting db 0 through the URL works.
    let mut rc = redis_conn_url(&format!("redis://{}/0", server.addr)).await.unwrap();
    query_out(&mut rc, args!["LOCK.TRY", "k", "a"]).await.token();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_answers_ok_and_closes() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    con.send(args!["QUIT"]).await;
    assert_eq!(con.read_until_closed().await, b"+OK\r\n");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_returns_to_a_fresh_connection() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    con.cmd(args!["HELLO", 3, "SETNAME", "temp"]).await;
    assert_eq!(con.cmd_frame(args!["RESET"]).await.1, b"+RESET\r\n");
    assert_eq!(con.cmd_frame(args!["LOCK.INFO", "k"]).await.1[0], b'*', "back to RESP2");
    assert!(con.cmd(args!["CLIENT", "GETNAME"]).await.is_nil(), "name cleared");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_id_setname_getname_list_info() {
    let server = start().await;
    let mut a = Raw::connect(server.addr).await;
    let mut b = Raw::connect(server.addr).await;
    let id_a = a.client_id().await;
    let id_b = b.client_id().await;
    assert!(id_a > 0 && id_b > 0 && id_a != id_b);
    assert_eq!(a.client_id().await, id_a, "stable per connection");

    assert!(a.cmd(args!["CLIENT", "GETNAME"]).await.is_nil());
    assert_eq!(a.cmd(args!["CLIENT", "SETNAME", "worker-1"]).await, ok());
    assert_eq!(a.cmd(args!["CLIENT", "GETNAME"]).await.text(), "worker-1");
    assert!(a.cmd(args!["CLIENT", "SETNAME", "has space"]).await.is_error());
    assert_eq!(a.cmd(args!["CLIENT", "GETNAME"]).await.text(), "worker-1");
    assert_eq!(a.cmd(args!["CLIENT", "SETINFO", "LIB-NAME", "mylib"]).await, ok());
    assert_eq!(a.cmd(args!["CLIENT", "SETINFO", "LIB-VER", "1.2.3"]).await, ok());

    let list = b.cmd(args!["CLIENT", "LIST"]).await.text();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    let line_a = lines.iter().find(|line| line.starts_with(&format!("id={id_a} "))).expect("a in CLIENT LIST");
    assert!(line_a.contains(" name=worker-1 "), "{line_a}");
    assert!(line_a.contains(" lib-name=mylib "), "{line_a}");
    assert!(line_a.contains(" addr="), "{line_a}");
    assert!(lines.iter().any(|line| line.starts_with(&format!("id={id_b} "))));
    let only_b = b.cmd(args!["CLIENT", "LIST", "ID", id_b]).await.text();
    assert_eq!(only_b.lines().count(), 1);
    assert!(only_b.starts_with(&format!("id={id_b} ")));
    let info = a.cmd(args!["CLIENT", "INFO"]).await.text();
    assert!(info.starts_with(&format!("id={id_a} ")) && info.contains("name=worker-1"), "{info}");
    // HELLO SETNAME shows up too.
    b.cmd(args!["HELLO", 2, "SETNAME", "other"]).await;
    assert!(a.cmd(args!["CLIENT", "LIST"]).await.text().contains(&format!("id={id_b} addr=")));
    assert!(a.cmd(args!["CLIENT", "LIST"]).await.text().contains("name=other"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_unblock_ends_a_blocked_wait() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut w = Raw::connect(server.addr).await;
    let id = w.client_id().await;
    assert_eq!(ctl.cmd(args!["CLIENT", "UNBLOCK", id]).await, Resp::Int(0), "not blocked yet");

    // TIMEOUT (the default): answered like a timeout, place kept.
    w.send(args!["LOCK.WAIT", "k", "w", 0]).await;
    ctl.wait_blocked("k", 1).await;
    assert!(ctl.cmd(args!["CLIENT", "LIST", "ID", id]).await.text().contains("flags=b"));
    assert_eq!(ctl.cmd(args!["CLIENT", "UNBLOCK", id]).await, Resp::Int(1));
    let (reply, bytes) = w.read_frame().await;
    assert!(reply.is_nil(), "{reply:?}");
    assert_eq!(bytes, b"*-1\r\n");
    let info = ctl.info("k").await;
    assert_eq!((info.queue.clone(), info.blocked), (vec!["w".to_owned()], 0), "{info:?}");

    w.send(args!["LOCK.WAIT", "k", "w", 0]).await;
    ctl.wait_blocked("k", 1).await;
    assert_eq!(ctl.cmd(args!["CLIENT", "UNBLOCK", id, "TIMEOUT"]).await, Resp::Int(1));
    assert!(w.read().await.is_nil());

    // ERROR: an UNBLOCKED error.
    w.send(args!["LOCK.WAIT", "k", "w", 0]).await;
    ctl.wait_blocked("k", 1).await;
    assert_eq!(ctl.cmd(args!["CLIENT", "UNBLOCK", id, "ERROR"]).await, Resp::Int(1));
    let reply = w.read().await;
    assert!(reply.err().starts_with("UNBLOCKED"), "{reply:?}");
    // The connection keeps working and the owner is still in line.
    assert_eq!(cmd_out(&mut w, args!["LOCK.TRY", "k", "w"]).await, Out::Queued(1));

    // In RESP3 the timeout-like answer is `_`.
    let mut w3 = Raw::connect_resp3(server.addr).await;
    let id3 = w3.client_id().await;
    w3.send(args!["LOCK.WAIT", "k", "w3", 0]).await;
    ctl.wait_blocked("k", 1).await;
    assert_eq!(ctl.cmd(args!["CLIENT", "UNBLOCK", id3]).await, Resp::Int(1));
    assert_eq!(w3.read_frame().await.1, b"_\r\n");

    assert!(ctl.cmd(args!["CLIENT", "UNBLOCK", id, "MAYBE"]).await.is_error());
    assert_eq!(ctl.cmd(args!["CLIENT", "UNBLOCK", 987_654]).await, Resp::Int(0));
    assert_eq!(ctl.cmd(args!["CLIENT", "UNBLOCK", id]).await, Resp::Int(0), "not blocked any more");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_id_closes_a_blocked_waiter_which_leaves_the_queue() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut victim = Raw::connect(server.addr).await;
    let id = victim.client_id().await;
    victim.send(args!["LOCK.WAIT", "k", "victim", 0]).await;
    ctl.wait_blocked("k", 1).await;
    let mut next = start_wait(server.addr, "k", "next", 0).await;
    ctl.wait_blocked("k", 2).await;

    assert_eq!(ctl.cmd(args!["CLIENT", "KILL", "ID", id]).await, Resp::Int(1));
    victim.read_until_closed().await;
    ctl.wait_info("k", "the killed waiter leaves", |info| info.queue == ["next"]).await;
    assert!(!ctl.cmd(args!["CLIENT", "LIST"]).await.text().contains(&format!("id={id} ")));
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE"]).await, Resp::Int(1));
    read_out(&mut next).await.token();

    assert_eq!(ctl.cmd(args!["CLIENT", "KILL", "ID", 987_654]).await, Resp::Int(0));
    // SKIPME yes (the default) spares the caller.
    let own = ctl.client_id().await;
    assert_eq!(ctl.cmd(args!["CLIENT", "KILL", "ID", own]).await, Resp::Int(0));
    assert_eq!(ctl.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_of_a_holder_releases_its_lock() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut holder = Raw::connect(server.addr).await;
    let id = holder.client_id().await;
    let token = cmd_out(&mut holder, args!["LOCK.TRY", "k", "h"]).await.token();
    let mut w = start_wait(server.addr, "k", "w", 0).await;
    ctl.wait_blocked("k", 1).await;
    assert_eq!(ctl.cmd(args!["CLIENT", "KILL", "ID", id]).await, Resp::Int(1));
    assert!(read_out(&mut w).await.token() > token);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_has_the_fields_tools_look_for() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let _other = Raw::connect(server.addr).await;
    cmd_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    let text = con.cmd(args!["INFO"]).await.text();
    for needle in ["# Server", "redis_version:", "loading:0", "connected_clients:", "# Locks"] {
        assert!(text.contains(needle), "INFO lacks {needle:?}:\n{text}");
    }
    let clients: i64 = text
        .lines()
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("connected_clients value");
    assert!(clients >= 2, "{clients}");
    assert!(text.contains("\r\n"), "INFO lines end with CRLF like Redis");
    // Sections can be asked for.
    let server_only = con.cmd(args!["INFO", "server"]).await.text();
    assert!(server_only.contains("redis_version:"));
    assert!(!server_only.contains("# Locks"));
    // The redis crate's INFO parser copes.
    let mut rc = redis_conn(server.addr).await;
    let info: redis::InfoDict = redis::cmd("INFO").query_async(&mut rc).await.unwrap();
    assert!(info.get::<String>("redis_version").is_some());
    server.stop().await.unwrap();
}

/// TIME is the wall clock the journal reads (offset as `--wall-clock-offset-ms` says), as the
/// redis crate parses Redis's; ROLE on a single node is Redis's master without replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_and_role_answer_as_redis_does() {
    let unix_micros = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    for offset_ms in [0_i64, -3_600_000] {
        let server = start_with(|config| config.wall_clock_offset_ms = offset_ms).await;
        let mut rc = redis_conn(server.addr).await;
        let before = unix_micros() as i128 + i128::from(offset_ms) * 1000;
        let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut rc).await.unwrap();
        let after = unix_micros() as i128 + i128::from(offset_ms) * 1000;
        assert!(micros < 1_000_000, "{micros}");
        let time = i128::from(seconds) * 1_000_000 + i128::from(micros);
        assert!(before <= time && time <= after, "offset {offset_ms} ms: {before} <= {time} <= {after}");

        let role: redis::Value = redis::cmd("ROLE").query_async(&mut rc).await.unwrap();
        assert_eq!(
            role,
            redis::Value::Array(vec![
                redis::Value::BulkString(b"master".to_vec()),
                redis::Value::Int(0),
                redis::Value::Array(vec![])
            ])
        );
        let mut con = Raw::connect(server.addr).await;
        assert!(con.cmd(args!["TIME", "now"]).await.err().contains("wrong number of arguments"));
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_count_docs_and_info() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let count = con.cmd(args!["COMMAND", "COUNT"]).await.int();
    assert!(count > 0);
    let all = con.cmd(args!["COMMAND"]).await;
    assert_eq!(all.array().len() as i64, count);

    let docs = con.cmd(args!["COMMAND", "DOCS", "lock.try"]).await;
    let entries = docs.pairs();
    assert_eq!(entries.len(), 1, "{docs:?}");
    assert_eq!(entries[0].0, "lock.try");
    let doc = &entries[0].1;
    assert!(!doc.field("summary").text().is_empty(), "{doc:?}");
    assert!(!doc.field("group").text().is_empty());
    let arguments = doc.field("arguments");
    assert!(arguments.array().len() >= 2, "key and owner at least: {arguments:?}");
    for argument in arguments.array() {
        assert!(!argument.field("name").text().is_empty());
        assert!(!argument.field("type").text().is_empty());
    }
    // Upper case works, and RESP3 gives maps.
    let mut con3 = Raw::connect_resp3(server.addr).await;
    let (docs, bytes) = con3.cmd_frame(args!["COMMAND", "DOCS", "LOCK.TRY"]).await;
    assert!(bytes.starts_with(b"%1\r\n"), "{:?}", String::from_utf8_lossy(&bytes));
    assert!(matches!(&docs, Resp::Map(pairs) if matches!(pairs[0].1, Resp::Map(_))));
    let none = con.cmd(args!["COMMAND", "DOCS", "no-such-command"]).await;
    assert!(none.pairs().is_empty());

    let info = con.cmd(args!["COMMAND", "INFO", "lock.wait"]).await;
    let entry = info.array()[0].array();
    assert_eq!(entry[0].text(), "lock.wait");
    assert_eq!(entry[1], Resp::Int(-4), "LOCK.WAIT key owner timeout [PX ms]");
    for name in ["lock.try", "lock.wait", "lock.unlock", "lock.extend", "lock.cancel", "lock.info", "ping", "hello"] {
        let listed = all.array().iter().any(|entry| entry.array()[0].text() == name);
        assert!(listed, "COMMAND lists {name}");
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbsize_counts_keys_with_state() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    assert_eq!(con.cmd(args!["DBSIZE"]).await, Resp::Int(0));
    let mut tokens = Vec::new();
    for key in ["a", "b", "c"] {
        tokens.push(cmd_out(&mut con, args!["LOCK.TRY", key, "o"]).await.token());
    }
    assert_eq!(con.cmd(args!["DBSIZE"]).await, Resp::Int(3));
    con.cmd(args!["LOCK.UNLOCK", "a", "o", tokens[0], "SUCCESS"]).await;
    con.cmd(args!["LOCK.UNLOCK", "b", "o", tokens[1], "SUCCESS", "KEEP", 60_000]).await;
    assert_eq!(con.cmd(args!["DBSIZE"]).await, Resp::Int(2), "a is forgotten, b remembers DONE, c is held");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_blocked_waiters_with_an_error_and_closes() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut waiters = Vec::new();
    for i in 1..=3 {
        waiters.push(start_wait(server.addr, "k", &format!("w{i}"), 0).await);
        ctl.wait_blocked("k", i).await;
    }
    let mut idle = Raw::connect(server.addr).await;
    assert_eq!(idle.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));

    let stopping = tokio::spawn(server.stop());
    for waiter in &mut waiters {
        let reply = waiter.read().await;
        assert!(reply.err().starts_with("ERR server is shutting down"), "{reply:?}");
        waiter.read_until_closed().await;
    }
    idle.read_until_closed().await;
    ctl.read_until_closed().await;
    tokio::time::timeout(Duration::from_secs(8), stopping)
        .await
        .expect("stop() finishes")
        .expect("stop task")
        .expect("stop() is Ok");
}

/// SHUTDOWN stops the server as a signal does (blocked waiters answered, connections closed),
/// with no reply of its own, as in Redis, whose clients take the connection closing for success;
/// the replies before it go out first. Its modifiers are accepted; ABORT finds no shutdown to
/// abort; anything else is a syntax error, and the connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_command_stops_the_server_as_a_signal_does() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    assert_eq!(ctl.cmd(args!["SHUTDOWN", "ABORT"]).await.err(), "ERR No shutdown in progress.");
    for bad in [
        args!["SHUTDOWN", "NOSAVE", "SAVE"],
        args!["SHUTDOWN", "NOW", "now"],
        args!["SHUTDOWN", "LATER"],
        args!["SHUTDOWN", "NOW", "ABORT"],
    ] {
        assert_eq!(ctl.cmd(bad).await.err(), "ERR syntax error");
    }
    cmd_out(&mut ctl, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut waiter = start_wait(server.addr, "k", "w1", 0).await;
    ctl.wait_blocked("k", 1).await;

    ctl.send(args!["PING"]).await;
    ctl.send(args!["shutdown", "nosave", "now", "force"]).await;
    assert_eq!(ctl.read().await, Resp::Simple("PONG".into()));
    assert_eq!(ctl.read_until_closed().await, b"", "no reply to SHUTDOWN itself");
    let reply = waiter.read().await;
    assert!(reply.err().starts_with("ERR server is shutting down"), "{reply:?}");
    waiter.read_until_closed().await;
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err(), "no longer listening");
    tokio::time::timeout(Duration::from_secs(8), server.stop())
        .await
        .expect("the server's task ends")
        .expect("it stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_subcommands_and_help() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let reply = con.cmd(args!["CLIENT", "FROB"]).await;
    assert!(reply.err().starts_with("ERR unknown subcommand 'FROB'"), "{reply:?}");
    let help = con.cmd(args!["CLIENT", "HELP"]).await;
    assert!(help.array().len() > 3);
    let arity = con.cmd(args!["CLIENT"]).await;
    assert_eq!(arity.err(), "ERR wrong number of arguments for 'client' command");
    let arity = con.cmd(args!["CLIENT", "SETNAME"]).await;
    assert_eq!(arity.err(), "ERR wrong number of arguments for 'client|setname' command");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxclients_refuses_extra_connections_with_an_error() {
    let server = start_with(|config| config.maxclients = 2).await;
    let mut a = Raw::connect(server.addr).await;
    let mut b = Raw::connect(server.addr).await;
    assert_eq!(a.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    assert_eq!(b.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    let mut c = Raw::connect(server.addr).await;
    let bytes = c.read_until_closed().await;
    assert_eq!(String::from_utf8_lossy(&bytes), "-ERR max number of clients reached\r\n");
    drop(b);
    // Once a slot frees up, a new client gets in.
    let addr = server.addr;
    eventually("a free slot", || async move {
        let mut d = Raw::connect(addr).await;
        d.send(args!["PING"]).await;
        d.read_within(Duration::from_secs(1)).await == Some(Resp::Simple("PONG".into()))
    })
    .await;
    assert_eq!(a.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_by_address() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let mut victim = Raw::connect(server.addr).await;
    let id = victim.client_id().await;
    let list = ctl.cmd(args!["CLIENT", "LIST", "ID", id]).await.text();
    let addr = list.split(' ').find_map(|field| field.strip_prefix("addr=")).expect("addr field").to_owned();
    assert_eq!(ctl.cmd(args!["CLIENT", "KILL", &addr]).await, Resp::Simple("OK".into()));
    victim.read_until_closed().await;
    let reply = ctl.cmd(args!["CLIENT", "KILL", &addr]).await;
    assert_eq!(reply.err(), "ERR No such client");
    assert_eq!(ctl.cmd(args!["CLIENT", "KILL", "ADDR", "1.2.3.4:5"]).await, Resp::Int(0));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_stop_the_port_is_closed() {
    let server = start().await;
    let addr = server.addr;
    let mut con = Raw::connect(addr).await;
    assert_eq!(con.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    server.stop().await.unwrap();
    con.read_until_closed().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "nothing listens after stop()");
}
