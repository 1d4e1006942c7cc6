//! The wire: RESP2/RESP3 reply encodings, inline and pipelined requests, exact error texts, and
//! garbage input closing only the offending connection.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_replies_have_the_documented_shapes() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let (reply, bytes) = con.cmd_frame(args!["LOCK.TRY", "k", "a"]).await;
    let token = Out::from_resp(&reply).token();
    assert_eq!(bytes, format!("*2\r\n$8\r\nACQUIRED\r\n:{token}\r\n").into_bytes());
    let (_, bytes) = con.cmd_frame(args!["LOCK.TRY", "k", "b"]).await;
    assert_eq!(bytes, b"*2\r\n$6\r\nQUEUED\r\n:1\r\n");
    let (_, bytes) = con.cmd_frame(args!["LOCK.TRY", "k", "c", "NOQUEUE"]).await;
    assert_eq!(bytes, b"*2\r\n$4\r\nBUSY\r\n$1\r\na\r\n");
    let (_, bytes) = con.cmd_frame(args!["LOCK.WAIT", "k", "b", 20]).await;
    assert_eq!(bytes, b"*-1\r\n", "a WAIT timeout is a RESP2 null array");
    let (_, bytes) = con.cmd_frame(args!["LOCK.INFO", "k"]).await;
    assert!(bytes.starts_with(b"*24\r\n$5\r\nstate\r\n$4\r\nheld\r\n"), "{:?}", String::from_utf8_lossy(&bytes));
    let (_, bytes) = con.cmd_frame(args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "KEEP", 10_000]).await;
    assert_eq!(bytes, b":1\r\n");
    let (_, bytes) = con.cmd_frame(args!["LOCK.TRY", "k", "b"]).await;
    assert_eq!(bytes, b"*3\r\n$4\r\nDONE\r\n$1\r\na\r\n$-1\r\n", "DONE without RESULT carries a null bulk");
    let (_, bytes) = con.cmd_frame(args!["LOCK.UNLOCK", "k", "b", token, "SUCCESS"]).await;
    assert!(bytes.starts_with(b"-NOLOCK "), "{:?}", String::from_utf8_lossy(&bytes));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_nil_is_underscore_and_info_is_a_map() {
    let server = start().await;
    let mut con = Raw::connect_resp3(server.addr).await;
    let token = cmd_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    let (reply, bytes) = con.cmd_frame(args!["LOCK.WAIT", "k", "b", 20]).await;
    assert_eq!(bytes, b"_\r\n", "a WAIT timeout is RESP3 null, got {reply:?}");
    let (reply, bytes) = con.cmd_frame(args!["LOCK.INFO", "k"]).await;
    assert!(bytes.starts_with(b"%12\r\n"), "LOCK.INFO is a RESP3 map: {:?}", String::from_utf8_lossy(&bytes));
    let info = KeyInfo::from_resp(&reply);
    assert_eq!(info.queue, ["b"]);
    assert_eq!(info.token, Some(token));
    // Absent fields are RESP3 nulls.
    assert_eq!(reply.field("finisher"), Resp::Null);
    assert_eq!(reply.field("result"), Resp::Null);
    // DONE with no RESULT: the nil inside the array is `_` as well.
    con.cmd(args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS"]).await;
    let (_, bytes) = con.cmd_frame(args!["LOCK.TRY", "k", "b"]).await;
    assert_eq!(bytes, b"*3\r\n$4\r\nDONE\r\n$1\r\na\r\n_\r\n");
    // Back to RESP2 with HELLO 2.
    let (_, bytes) = con.cmd_frame(args!["HELLO", "2"]).await;
    assert!(bytes.starts_with(b"*"), "HELLO 2 answers in RESP2");
    let (_, bytes) = con.cmd_frame(args!["LOCK.INFO", "k"]).await;
    assert!(bytes.starts_with(b"*24\r\n"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_blocked_wait_timeout_and_handoff() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "h"]).await.token();
    let mut w = Raw::connect_resp3(server.addr).await;
    w.send(args!["LOCK.WAIT", "k", "w", 100]).await;
    let (_, bytes) = w.read_frame().await;
    assert_eq!(bytes, b"_\r\n");
    w.send(args!["LOCK.WAIT", "k", "w", 0]).await;
    ctl.wait_blocked("k", 1).await;
    ctl.cmd(args!["LOCK.UNLOCK", "k", "h", token, "FAILURE"]).await;
    let (reply, bytes) = w.read_frame().await;
    let granted = Out::from_resp(&reply).token();
    assert_eq!(bytes, format!("*2\r\n$8\r\nACQUIRED\r\n:{granted}\r\n").into_bytes());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_through_the_redis_crate() {
    let server = start().await;
    let mut con = redis_conn_url(&format!("redis://{}/?protocol=resp3", server.addr)).await.unwrap();
    query_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    let info = query(&mut con, args!["LOCK.INFO", "k"]).await.unwrap();
    assert!(matches!(info, redis::Value::Map(_)), "LOCK.INFO is a map in RESP3: {info:?}");
    assert_eq!(KeyInfo::from_value(&info).holder.as_deref(), Some("a"));
    assert_eq!(query_out(&mut con, args!["LOCK.WAIT", "k", "b", 20]).await, Out::Nil);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_work() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    con.write(b"PING\r\n").await;
    assert_eq!(con.read_frame().await.1, b"+PONG\r\n");
    con.write(b"ping\n").await;
    assert_eq!(con.read_frame().await.1, b"+PONG\r\n", "a bare LF ends an inline command too");
    con.write(b"ECHO \"hello world\"\r\n").await;
    assert_eq!(con.read_frame().await.1, b"$11\r\nhello world\r\n");
    con.write(b"LOCK.TRY inline-key 'owner one'\r\n").await;
    let token = read_out(&mut con).await.token();
    con.write(b"  LOCK.TRY   inline-key   other  \r\n").await;
    assert_eq!(read_out(&mut con).await, Out::Queued(1));
    let info = con.info("inline-key").await;
    assert_eq!(info.holder.as_deref(), Some("owner one"));
    assert_eq!(info.queue, ["other"]);
    con.write(format!("LOCK.UNLOCK inline-key \"owner one\" {token} SUCCESS RESULT \"a\\x00b\"\r\n").as_bytes()).await;
    assert_eq!(con.read().await, Resp::Int(1));
    con.write(b"\r\n\r\nPING\r\n").await;
    assert_eq!(con.read().await, Resp::Simple("PONG".into()), "blank lines are skipped");
    assert_eq!(cmd_out(&mut con, args!["LOCK.TRY", "inline-key", "other"]).await, Out::done("owner one", Some("a\0b")));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pipelined_commands_in_one_write_are_answered_in_order() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let mut batch = Vec::new();
    for i in 0..100 {
        let request = match i % 4 {
            0 => args!["ECHO", format!("echo-{i}")],
            1 => args!["LOCK.TRY", format!("key-{}", i % 7), format!("owner-{i}")],
            2 => args!["PING", format!("p{i}")],
            _ => args!["LOCK.INFO", format!("key-{}", (i - 2) % 7)],
        };
        batch.extend(encode(&request));
    }
    con.write(&batch).await;
    let mut holders = std::collections::HashMap::new();
    let mut queues: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for i in 0..100 {
        let reply = con.read().await;
        match i % 4 {
            0 => assert_eq!(reply, Resp::Bulk(format!("echo-{i}").into_bytes()), "reply {i}"),
            1 => {
                let key = format!("key-{}", i % 7);
                let owner = format!("owner-{i}");
                match Out::from_resp(&reply) {
                    Out::Acquired(_) => assert!(holders.insert(key, owner).is_none(), "reply {i}"),
                    Out::Queued(position) => {
                        let queue = queues.entry(key).or_default();
                        queue.push(owner);
                        assert_eq!(position, queue.len() as i64, "reply {i}");
                    }
                    other => panic!("reply {i}: {other:?}"),
                }
            }
            2 => assert_eq!(reply, Resp::Bulk(format!("p{i}").into_bytes()), "reply {i}"),
            _ => {
                let key = format!("key-{}", (i - 2) % 7);
                let info = KeyInfo::from_resp(&reply);
                assert_eq!(info.holder.as_ref(), holders.get(&key), "reply {i}: {info:?}");
                assert_eq!(&info.queue, queues.get(&key).unwrap_or(&Vec::new()), "reply {i}");
            }
        }
    }
    assert!(con.read_within(Duration::from_millis(50)).await.is_none(), "exactly 100 replies");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_through_the_redis_crate() {
    let server = start().await;
    let mut con = redis_conn(server.addr).await;
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("LOCK.TRY").arg("k").arg(format!("o{i}"));
    }
    let replies: Vec<redis::Value> = pipe.query_async(&mut con).await.unwrap();
    assert_eq!(replies.len(), 100);
    assert!(matches!(Out::from_resp(&value_to_resp(&replies[0])), Out::Acquired(_)));
    for (i, reply) in replies.iter().enumerate().skip(1) {
        assert_eq!(Out::from_resp(&value_to_resp(reply)), Out::Queued(i as i64));
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_split_into_single_bytes_still_works() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let request = encode(&args!["LOCK.TRY", "slow", "drip"]);
    for byte in &request {
        con.write(std::slice::from_ref(byte)).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    read_out(&mut con).await.token();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_error_texts() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let cases: Vec<(Vec<Vec<u8>>, &[u8])> = vec![
        (args!["foo", "a"], b"-ERR unknown command 'foo', with args beginning with: 'a' \r\n"),
        (args!["foo"], b"-ERR unknown command 'foo', with args beginning with: \r\n"),
        (args!["LOCK.TRY", "k"], b"-ERR wrong number of arguments for 'lock.try' command\r\n"),
        (args!["lock.wait", "k", "o"], b"-ERR wrong number of arguments for 'lock.wait' command\r\n"),
        (args!["LOCK.UNLOCK", "k", "o", 1], b"-ERR wrong number of arguments for 'lock.unlock' command\r\n"),
        (args!["LOCK.EXTEND", "k", "o", 1], b"-ERR wrong number of arguments for 'lock.extend' command\r\n"),
        (args!["LOCK.CANCEL", "k"], b"-ERR wrong number of arguments for 'lock.cancel' command\r\n"),
        (args!["LOCK.INFO"], b"-ERR wrong number of arguments for 'lock.info' command\r\n"),
        (args!["LOCK.INFO", "a", "b"], b"-ERR syntax error\r\n"),
        (args!["LOCK.INFO", "a", "COUNT", 1001], b"-ERR COUNT must be between 0 and 1000\r\n"),
        (args!["LOCK.TRY", "k", "o", "NOPE"], b"-ERR syntax error\r\n"),
        (args!["HELLO", 4], b"-NOPROTO unsupported protocol version\r\n"),
        (args!["HELLO", 1], b"-NOPROTO unsupported protocol version\r\n"),
        (args!["SELECT", 1], b"-ERR DB index is out of range\r\n"),
    ];
    for (request, expected) in cases {
        let (_, bytes) = con.cmd_frame(request.clone()).await;
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(expected),
            "for {:?}",
            String::from_utf8_lossy(&request.join(&b' '))
        );
    }
    // Errors do not end the connection, and HELLO 4 did not change the protocol.
    cmd_out(&mut con, args!["LOCK.TRY", "k", "holder"]).await.token();
    let (_, bytes) = con.cmd_frame(args!["LOCK.WAIT", "k", "x", 10]).await;
    assert_eq!(bytes, b"*-1\r\n", "still RESP2");
    server.stop().await.unwrap();
}

/// Sends `garbage` on a fresh connection and expects a protocol error, then the close.
async fn expect_protocol_error(addr: std::net::SocketAddr, garbage: &[u8], expected: Option<&str>) {
    let mut con = Raw::connect(addr).await;
    con.write(garbage).await;
    let bytes = con.read_until_closed().await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        text.starts_with("-ERR Protocol error: ") && text.ends_with("\r\n"),
        "garbage {:?} should get a protocol error and a close, got {text:?}",
        String::from_utf8_lossy(garbage)
    );
    if let Some(expected) = expected {
        assert_eq!(text, format!("-{expected}\r\n"), "for {:?}", String::from_utf8_lossy(garbage));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_a_protocol_error_and_a_close_while_others_keep_working() {
    let server = start().await;
    // A bystander holding a lock, and one blocked waiting for it.
    let mut bystander = Raw::connect(server.addr).await;
    let token = cmd_out(&mut bystander, args!["LOCK.TRY", "k", "bystander"]).await.token();
    let mut waiter = start_wait(server.addr, "k", "waiter", 0).await;
    bystander.wait_blocked("k", 1).await;

    let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
        (b"*abc\r\n".to_vec(), Some("ERR Protocol error: invalid multibulk length")),
        (b"*1\r\n$abc\r\n".to_vec(), Some("ERR Protocol error: invalid bulk length")),
        (b"*1\r\nfoo\r\n".to_vec(), Some("ERR Protocol error: expected '$', got 'f'")),
        (b"*1\r\n$-5\r\n".to_vec(), Some("ERR Protocol error: invalid bulk length")),
        (b"*1\r\n$3\r\nfoobar\r\n".to_vec(), None),
        // Huge lengths are refused before anything is allocated for them.
        (b"*1\r\n$99999999999999\r\n".to_vec(), Some("ERR Protocol error: invalid bulk length")),
        (b"*1\r\n$9223372036854775807\r\n".to_vec(), Some("ERR Protocol error: invalid bulk length")),
        (b"*1\r\n$99999999999999999999999\r\n".to_vec(), Some("ERR Protocol error: invalid bulk length")),
        (b"*2000000000\r\n".to_vec(), Some("ERR Protocol error: invalid multibulk length")),
        (b"*99999999999999999999999\r\n".to_vec(), Some("ERR Protocol error: invalid multibulk length")),
        (b"*2\r\n$4\r\nPING\r\n$2000000\r\n".to_vec(), Some("ERR Protocol error: invalid bulk length")),
        (b"ECHO \"unterminated\r\n".to_vec(), Some("ERR Protocol error: unbalanced quotes in request")),
    ];
    for (garbage, expected) in &cases {
        expect_protocol_error(server.addr, garbage, *expected).await;
        assert_eq!(bystander.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    }
    // Random bytes after a `*` that cannot start a count.
    let mut rng = Rng::new(0x5eed);
    for _ in 0..20 {
        let mut garbage = vec![b'*', b'x'];
        let len = 64 + rng.below(400) as usize;
        garbage.extend(rng.bytes(len));
        garbage.extend(b"\r\n");
        expect_protocol_error(server.addr, &garbage, None).await;
    }
    // Random bytes inside a bulk header.
    for _ in 0..20 {
        let mut garbage = b"*2\r\n$4\r\nPING\r\n$".to_vec();
        garbage.push(b'a' + rng.below(26) as u8);
        garbage.extend(rng.bytes(64));
        garbage.extend(b"\r\n");
        expect_protocol_error(server.addr, &garbage, None).await;
    }
    // An over-long count line with no CRLF: sent in two parts so that the server has read
    // everything by the time it refuses (no unread bytes that would turn the close into a reset).
    let mut con = Raw::connect(server.addr).await;
    let mut long_count = b"*".to_vec();
    long_count.extend(std::iter::repeat_n(b'1', 64 * 1024 - 1));
    con.write(&long_count).await;
    assert!(con.read_within(Duration::from_millis(200)).await.is_none(), "64 KiB of header is still allowed");
    con.write(b"11").await;
    let bytes = con.read_until_closed().await;
    assert_eq!(String::from_utf8_lossy(&bytes), "-ERR Protocol error: too big mbulk count string\r\n");

    // The bystander's lock and the blocked waiter are untouched.
    let info = bystander.info("k").await;
    assert_eq!((info.holder.as_deref(), info.token), (Some("bystander"), Some(token)));
    assert_eq!(info.queue, ["waiter"]);
    assert_eq!(info.blocked, 1);
    waiter.assert_quiet("the waiter").await;
    assert_eq!(bystander.cmd(args!["LOCK.UNLOCK", "k", "bystander", token, "FAILURE"]).await, Resp::Int(1));
    read_out(&mut waiter).await.token();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_blocked_waiter_ends_its_wait_and_its_place() {
    let server = start().await;
    let mut ctl = Raw::connect(server.addr).await;
    let token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "h"]).await.token();
    let mut bad = start_wait(server.addr, "k", "bad", 0).await;
    ctl.wait_blocked("k", 1).await;
    let mut good = start_wait(server.addr, "k", "good", 0).await;
    ctl.wait_blocked("k", 2).await;
    bad.write(b"*1\r\n$zz\r\n").await;
    let bytes = bad.read_until_closed().await;
    assert_eq!(String::from_utf8_lossy(&bytes), "-ERR Protocol error: invalid bulk length\r\n");
    let info = ctl.wait_info("k", "bad leaves the queue", |info| info.queue == ["good"]).await;
    assert_eq!(info.blocked, 1);
    assert_eq!(ctl.cmd(args!["LOCK.UNLOCK", "k", "h", token, "FAILURE"]).await, Resp::Int(1));
    read_out(&mut good).await.token();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_valid_pipelined_requests_answers_those_first() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let mut batch = encode(&args!["PING"]);
    batch.extend(encode(&args!["ECHO", "x"]));
    batch.extend(b"*1\r\n$nope\r\n");
    batch.extend(encode(&args!["PING"]));
    con.write(&batch).await;
    let bytes = con.read_until_closed().await;
    assert_eq!(String::from_utf8_lossy(&bytes), "+PONG\r\n$1\r\nx\r\n-ERR Protocol error: invalid bulk length\r\n");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_null_multibulk_requests_are_ignored() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    con.write(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").await;
    assert_eq!(con.read_frame().await.1, b"+PONG\r\n");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_round_trip() {
    let server = start().await;
    let mut con = Raw::connect(server.addr).await;
    let token = cmd_out(&mut con, args!["LOCK.TRY", "k", "a"]).await.token();
    assert_eq!(cmd_out(&mut con, args!["LOCK.TRY", "k", "b"]).await, Out::Queued(1));
    let mut rng = Rng::new(7);
    let result = rng.bytes(60 * 1024);
    assert_eq!(con.cmd(args!["LOCK.UNLOCK", "k", "a", token, "SUCCESS", "RESULT", &result]).await, Resp::Int(1));
    assert_eq!(
        cmd_out(&mut con, args!["LOCK.TRY", "k", "b"]).await,
        Out::Done { finisher: b"a".to_vec(), result: Some(result) }
    );
    // Over the --max-result-bytes limit (64 KiB by default): refused, lock untouched.
    let token = cmd_out(&mut con, args!["LOCK.TRY", "k2", "a"]).await.token();
    let too_big = vec![b'x'; 64 * 1024 + 1];
    let reply = con.cmd(args!["LOCK.UNLOCK", "k2", "a", token, "SUCCESS", "RESULT", too_big]).await;
    assert!(reply.err().starts_with("ERR"), "{reply:?}");
    assert_eq!(con.info("k2").await.token, Some(token));
    server.stop().await.unwrap();
}
