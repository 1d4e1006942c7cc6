//! redis-rs (the `redis` crate), sync and async on tokio, RESP2 and RESP3, against a baton
//! process: LOCK.* replies, blocking waits with the right timeouts, AUTH; and its `cluster-async`
//! client against a three-node cluster through leader kills (cluster.rs).
//!
//! Cargo builds this as the `clients` test target (`cargo test --release --test clients`); the
//! Python, Node and redis-cli client tests in this folder run through scripts/client-tests.sh.

// A test binary has no outside users: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

use std::thread;
use std::time::{Duration, Instant};

#[path = "../support/baton.rs"]
mod baton_process;
mod cluster;
// Everything but linked clusters (tests/cluster.rs partitions them).
#[allow(dead_code)]
#[path = "../support/cluster.rs"]
mod cluster_process;

use baton_process::start_baton;
use baton_testkit::process::ServerProcess;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
    RedisResult, Value,
};

const PROTOCOLS: [ProtocolVersion; 2] = [ProtocolVersion::RESP2, ProtocolVersion::RESP3];

/// A baton process on a loopback port of its own choosing (so two servers starting at once never
/// race for one), killed on drop.
struct Server {
    port: u16,
    password: Option<String>,
    _process: ServerProcess,
}

impl Server {
    fn start(flags: &[&str]) -> Server {
        let password = flags.windows(2).find(|w| w[0] == "--requirepass").map(|w| w[1].to_owned());
        let process = start_baton(flags, "info");
        Server { port: process.addr.port(), password, _process: process }
    }

    fn client(&self, protocol: ProtocolVersion, password: Option<&str>) -> Client {
        let mut redis = RedisConnectionInfo::default().set_protocol(protocol);
        if let Some(password) = password.or(self.password.as_deref()) {
            redis = redis.set_password(password);
        }
        let info = ConnectionAddr::Tcp("127.0.0.1".into(), self.port)
            .into_connection_info()
            .unwrap()
            .set_redis_settings(redis);
        Client::open(info).unwrap()
    }

    fn sync(&self, protocol: ProtocolVersion) -> redis::Connection {
        let conn = self.client(protocol, None).get_connection().expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        conn
    }

    /// A dedicated async connection whose response timeout outlasts the blocking waits below
    /// (the default, 500 ms, would cut them short).
    async fn aio(&self, protocol: ProtocolVersion) -> MultiplexedConnection {
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
        self.client(protocol, None).get_multiplexed_async_connection_with_config(&config).await.expect("connect")
    }
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd
}

fn token_of(reply: &Value) -> i64 {
    match reply {
        Value::Array(items) if items.len() == 2 && items[0] == bulk("ACQUIRED") => match items[1] {
            Value::Int(token) => token,
            ref other => panic!("token is not an integer: {other:?}"),
        },
        other => panic!("expected ACQUIRED, got {other:?}"),
    }
}

/// LOCK.INFO as (field, value) pairs: a map in RESP3, a flat array in RESP2.
fn info_pairs(reply: Value) -> Vec<(String, Value)> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Map(pairs) => pairs,
        Value::Array(flat) => flat.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect(),
        other => panic!("LOCK.INFO: {other:?}"),
    };
    pairs
        .into_iter()
        .map(|(k, v)| match k {
            Value::BulkString(k) => (String::from_utf8(k).unwrap(), v),
            other => panic!("field name {other:?}"),
        })
        .collect()
}

fn field(pairs: &[(String, Value)], name: &str) -> Value {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {name}"))
}

fn error_code(result: RedisResult<Value>) -> String {
    result.expect_err("expected an error reply").code().unwrap_or("?").to_owned()
}

#[test]
fn sync_lock_replies() {
    let server = Server::start(&[]);
    for protocol in PROTOCOLS {
        let key = format!("rs:replies:{protocol:?}");
        let key = key.as_str();
        let mut a = server.sync(protocol);
        let mut b = server.sync(protocol);
        let token = token_of(&cmd(&["LOCK.TRY", key, "a", "PX", "5000"]).query::<Value>(&mut a).unwrap());
        let t = token.to_string();
        let queued: Value = cmd(&["LOCK.TRY", key, "b"]).query(&mut b).unwrap();
        assert_eq!(queued, Value::Array(vec![bulk("QUEUED"), Value::Int(1)]));
        let busy: (String, String) = cmd(&["LOCK.TRY", key, "c", "NOQUEUE"]).query(&mut b).unwrap();
        assert_eq!(busy, ("BUSY".into(), "a".into()));
        assert_eq!(cmd(&["LOCK.WAIT", key, "d", "50"]).query::<Value>(&mut b).unwrap(), Value::Nil);
        let wait: Option<(String, i64)> = cmd(&["LOCK.WAIT", key, "d", "50"]).query(&mut b).unwrap();
        assert_eq!(wait, None, "nil converts to None");

        let info = info_pairs(cmd(&["LOCK.INFO", key]).query(&mut b).unwrap());
        assert_eq!(field(&info, "state"), bulk("held"));
        assert_eq!(field(&info, "holder"), bulk("a"));
        assert_eq!(field(&info, "token"), Value::Int(token));
        assert_eq!(field(&info, "queue"), Value::Array(vec![bulk("b"), bulk("d")]));
        assert_eq!(field(&info, "result"), Value::Nil);

        assert_eq!(cmd(&["LOCK.EXTEND", key, "a", &t, "10000"]).query::<i64>(&mut a).unwrap(), 1);
        assert_eq!(error_code(cmd(&["LOCK.EXTEND", key, "b", &t, "10"]).query(&mut b)), "NOTHOLDER");
        assert_eq!(cmd(&["LOCK.CANCEL", key, "d"]).query::<i64>(&mut b).unwrap(), 1);
        let told: i64 =
            cmd(&["LOCK.UNLOCK", key, "a", &t, "SUCCESS", "RESULT", "built", "KEEP", "5000"]).query(&mut a).unwrap();
        assert_eq!(told, 1);
        let done: (String, String, Option<String>) = cmd(&["LOCK.TRY", key, "b"]).query(&mut b).unwrap();
        assert_eq!(done, ("DONE".into(), "a".into(), Some("built".into())));
        // A retried UNLOCK (its reply was lost) gets the first one's answer; a stranger's is refused.
        assert_eq!(cmd(&["LOCK.UNLOCK", key, "a", &t, "SUCCESS"]).query::<i64>(&mut a).unwrap(), 1);
        assert_eq!(error_code(cmd(&["LOCK.UNLOCK", key, "x", &t, "SUCCESS"]).query(&mut a)), "NOLOCK");
        let arity = cmd(&["LOCK.TRY", key]).query::<Value>(&mut a).unwrap_err();
        assert!(arity.to_string().contains("wrong number of arguments for 'lock.try' command"), "{arity}");

        // A DONE without RESULT carries nil.
        let key2 = format!("{key}:noresult");
        let token2 = token_of(&cmd(&["LOCK.TRY", &key2, "a"]).query::<Value>(&mut a).unwrap()).to_string();
        cmd(&["LOCK.UNLOCK", &key2, "a", &token2, "SUCCESS", "KEEP", "1000"]).query::<i64>(&mut a).unwrap();
        let done: (String, String, Option<String>) = cmd(&["LOCK.WAIT", &key2, "b", "0"]).query(&mut b).unwrap();
        assert_eq!(done, ("DONE".into(), "a".into(), None));

        let hello = info_pairs(
            cmd(&["HELLO", if protocol == ProtocolVersion::RESP3 { "3" } else { "2" }]).query(&mut a).unwrap(),
        );
        assert_eq!(field(&hello, "server"), bulk("redis"));
        let info: redis::InfoDict = redis::cmd("INFO").query(&mut a).unwrap();
        assert_eq!(info.get::<i64>("loading"), Some(0));
        assert!(info.get::<String>("redis_version").unwrap().starts_with("7."));
    }
}

#[test]
fn sync_blocking_wait_needs_a_read_timeout_longer_than_the_wait() {
    let server = Server::start(&[]);
    let key = "rs:sync:block";
    let mut holder = server.sync(ProtocolVersion::RESP2);
    let token = token_of(&cmd(&["LOCK.TRY", key, "holder"]).query::<Value>(&mut holder).unwrap());

    let mut short = server.sync(ProtocolVersion::RESP2);
    short.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let err = cmd(&["LOCK.WAIT", key, "short", "2000"]).query::<Value>(&mut short).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // The server still has that WAIT until the connection closes (or its own timeout passes).
    drop(short);

    let waiter_port = server.port;
    let waiter = thread::spawn(move || {
        let client = Client::open(("127.0.0.1", waiter_port)).unwrap();
        let mut conn = client.get_connection().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        cmd(&["LOCK.WAIT", key, "waiter", "0"]).query::<Value>(&mut conn).unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = info_pairs(cmd(&["LOCK.INFO", key]).query(&mut holder).unwrap());
        if field(&info, "queue") == Value::Array(vec![bulk("waiter")]) && field(&info, "blocked") == Value::Int(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the waiter never blocked: {info:?}");
        thread::sleep(Duration::from_millis(10));
    }
    let t = token.to_string();
    assert_eq!(
        cmd(&["LOCK.UNLOCK", key, "holder", &t, "FAILURE", "REASON", "x"]).query::<i64>(&mut holder).unwrap(),
        1
    );
    let granted = token_of(&waiter.join().unwrap());
    assert!(granted > token);
}

#[tokio::test]
async fn async_lock_replies_and_blocking_waits() {
    let server = Server::start(&[]);
    for protocol in PROTOCOLS {
        let key = format!("rs:async:{protocol:?}");
        let key = key.as_str();
        let mut holder = server.aio(protocol).await;
        let token = token_of(&cmd(&["LOCK.TRY", key, "holder"]).query_async::<Value>(&mut holder).await.unwrap());
        let queued: (String, i64) = cmd(&["LOCK.TRY", key, "other"]).query_async(&mut holder).await.unwrap();
        assert_eq!(queued, ("QUEUED".into(), 1));
        assert_eq!(cmd(&["LOCK.CANCEL", key, "other"]).query_async::<i64>(&mut holder).await.unwrap(), 1);

        // Three nodes block; each has its own connection, as a node would.
        let mut waits = Vec::new();
        for i in 0..3 {
            let mut conn = server.aio(protocol).await;
            let (key, owner) = (key.to_owned(), format!("w{i}"));
            waits.push(tokio::spawn(async move {
                cmd(&["LOCK.WAIT", &key, &owner, "0"]).query_async::<Value>(&mut conn).await.map(|reply| (conn, reply))
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = info_pairs(cmd(&["LOCK.INFO", key]).query_async(&mut holder).await.unwrap());
            if field(&info, "blocked") == Value::Int(3) {
                break;
            }
            assert!(Instant::now() < deadline, "waiters did not block: {info:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(waits.iter().all(|wait| !wait.is_finished()), "LOCK.WAIT must block while the lock is held");
        let t = token.to_string();
        let handed: i64 = cmd(&["LOCK.UNLOCK", key, "holder", &t, "FAILURE"]).query_async(&mut holder).await.unwrap();
        assert_eq!(handed, 1);
        // FAILURE hands the lock to the head of the queue; the others go on waiting.
        let (first, _, pending) =
            tokio::time::timeout(Duration::from_secs(5), futures_util::future::select_all(waits)).await.unwrap();
        let (mut winner_conn, reply) = first.unwrap().unwrap();
        let granted = token_of(&reply);
        let info = info_pairs(cmd(&["LOCK.INFO", key]).query_async(&mut holder).await.unwrap());
        let Value::BulkString(winner) = field(&info, "holder") else { panic!("{info:?}") };
        let winner = String::from_utf8(winner).unwrap();
        let g = granted.to_string();
        assert_eq!(
            cmd(&["LOCK.EXTEND", key, &winner, &g, "5000"]).query_async::<i64>(&mut winner_conn).await.unwrap(),
            1
        );
        let told: i64 = cmd(&["LOCK.UNLOCK", key, &winner, &g, "SUCCESS", "RESULT", "ok"])
            .query_async(&mut winner_conn)
            .await
            .unwrap();
        assert_eq!(told, 2);
        for wait in pending {
            let (_, reply) = tokio::time::timeout(Duration::from_secs(5), wait).await.unwrap().unwrap().unwrap();
            assert_eq!(reply, Value::Array(vec![bulk("DONE"), bulk(&winner), bulk("ok")]));
        }
    }
}

#[tokio::test]
async fn async_default_response_timeout_cuts_a_long_wait_short() {
    let server = Server::start(&[]);
    let key = "rs:async:default-timeout";
    let mut holder = server.aio(ProtocolVersion::RESP3).await;
    cmd(&["LOCK.TRY", key, "holder"]).query_async::<Value>(&mut holder).await.unwrap();
    // redis-rs's default response timeout for async connections is 500 ms.
    let mut default = server.client(ProtocolVersion::RESP3, None).get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    let err = cmd(&["LOCK.WAIT", key, "w", "3000"]).query_async::<Value>(&mut default).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(2500));
    // With a longer response timeout the same WAIT runs to its own timeout and answers nil.
    let mut patient = server.aio(ProtocolVersion::RESP3).await;
    let started = Instant::now();
    assert_eq!(cmd(&["LOCK.WAIT", key, "p", "1000"]).query_async::<Value>(&mut patient).await.unwrap(), Value::Nil);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn auth_with_requirepass() {
    let server = Server::start(&["--requirepass", "rs secret"]);
    for protocol in PROTOCOLS {
        let mut conn = server.sync(protocol);
        assert_eq!(redis::cmd("PING").query::<String>(&mut conn).unwrap(), "PONG");
        let mut aconn = server.aio(protocol).await;
        let reply: Value = cmd(&["LOCK.TRY", "rs:auth", "a"]).query_async(&mut aconn).await.unwrap();
        token_of(&reply);

        let wrong = server.client(protocol, Some("wrong")).get_connection();
        let err = wrong.err().expect("a wrong password is refused");
        // RESP2 (AUTH) reports it as AuthenticationFailed, RESP3 (HELLO … AUTH) as the server's WRONGPASS.
        assert!(err.code() == Some("WRONGPASS") || err.kind() == redis::ErrorKind::AuthenticationFailed, "{err:?}");

        let nopass = RedisConnectionInfo::default().set_protocol(protocol);
        let info = ConnectionAddr::Tcp("127.0.0.1".into(), server.port)
            .into_connection_info()
            .unwrap()
            .set_redis_settings(nopass);
        match Client::open(info).unwrap().get_connection() {
            // RESP3: HELLO 3 without AUTH is refused, as by Redis.
            Err(err) => {
                assert!(err.code() == Some("NOAUTH") || err.kind() == redis::ErrorKind::AuthenticationFailed, "{err:?}")
            }
            Ok(mut conn) => {
                let err = redis::cmd("PING").query::<String>(&mut conn).unwrap_err();
                assert_eq!(err.code(), Some("NOAUTH"), "{err:?}");
            }
        }
    }
}
