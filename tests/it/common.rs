//! What the integration tests share: the server started in-process, LOCK.* replies parsed into
//! types, LOCK.INFO polling, and the generic tooling of `baton_testkit` (raw RESP client, the
//! `redis` crate helpers, the RNG) under one glob import.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton::config::Config;
use baton::server::RunningServer;
use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

pub use baton_testkit::client::{QUIET, Raw};
pub use baton_testkit::redis_crate::{err_text, value_to_resp};
pub use baton_testkit::{IntoArg, Resp, Rng, args, encode};

/// How long a polled condition may take to become true.
pub const POLL_DEADLINE: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------------------------
// Server

pub async fn start() -> RunningServer {
    start_with(|_| {}).await
}

pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> RunningServer {
    let mut config = Config::default_for_tests();
    adjust(&mut config);
    RunningServer::start(config).await.expect("server starts")
}

// ---------------------------------------------------------------------------------------------
// LOCK.INFO over a raw connection

/// LOCK.INFO calls on a [`Raw`] connection (an extension, because `Raw` knows RESP, not locks).
#[allow(async_fn_in_trait)]
pub trait LockInfo {
    async fn info(&mut self, key: impl IntoArg) -> KeyInfo;

    /// Polls LOCK.INFO until `condition` holds (or fails after [`POLL_DEADLINE`]).
    async fn wait_info(&mut self, key: &str, what: &str, condition: impl Fn(&KeyInfo) -> bool) -> KeyInfo;

    /// Polls until exactly `blocked` owners of `key` are blocked in LOCK.WAIT.
    async fn wait_blocked(&mut self, key: &str, blocked: i64) -> KeyInfo {
        self.wait_info(key, &format!("{blocked} blocked waiter(s)"), |info| info.blocked == blocked).await
    }
}

impl LockInfo for Raw {
    async fn info(&mut self, key: impl IntoArg) -> KeyInfo {
        KeyInfo::from_resp(&self.cmd(args!["LOCK.INFO", key]).await)
    }

    async fn wait_info(&mut self, key: &str, what: &str, condition: impl Fn(&KeyInfo) -> bool) -> KeyInfo {
        let deadline = Instant::now() + POLL_DEADLINE;
        loop {
            let info = self.info(key).await;
            if condition(&info) {
                return info;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; LOCK.INFO {key} = {info:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A new connection that sends `LOCK.WAIT key owner timeout-ms` and does not read the answer.
pub async fn start_wait(addr: SocketAddr, key: &str, owner: &str, timeout_ms: u64) -> Raw {
    let mut raw = Raw::connect(addr).await;
    raw.send(args!["LOCK.WAIT", key, owner, timeout_ms]).await;
    raw
}

// ---------------------------------------------------------------------------------------------
// LOCK.* replies

/// A TRY/WAIT answer (or any error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Acquired(u64),
    Queued(i64),
    Busy(Vec<u8>),
    Done {
        finisher: Vec<u8>,
        result: Option<Vec<u8>>,
    },
    /// WAIT timed out.
    Nil,
    Err(String),
}

impl Out {
    pub fn from_resp(resp: &Resp) -> Out {
        match resp {
            resp if resp.is_nil() => Out::Nil,
            Resp::Error(text) => Out::Err(text.clone()),
            Resp::Array(items) => {
                let kind = items.first().map(Resp::text).unwrap_or_default();
                match (kind.as_str(), items.len()) {
                    ("ACQUIRED", 2) => {
                        let token = items[1].int();
                        assert!(token > 0, "tokens are positive: {resp:?}");
                        Out::Acquired(token.unsigned_abs())
                    }
                    ("QUEUED", 2) => Out::Queued(items[1].int()),
                    ("BUSY", 2) => Out::Busy(items[1].bytes()),
                    ("DONE", 3) => Out::Done { finisher: items[1].bytes(), result: items[2].opt_bytes() },
                    _ => panic!("not a LOCK.TRY/LOCK.WAIT reply: {resp:?}"),
                }
            }
            other => panic!("not a LOCK.TRY/LOCK.WAIT reply: {other:?}"),
        }
    }

    pub fn from_value(reply: RedisResult<Value>) -> Out {
        Out::from_resp(&baton_testkit::redis_crate::result_to_resp(reply))
    }

    pub fn token(&self) -> u64 {
        match self {
            Out::Acquired(token) => *token,
            other => panic!("expected ACQUIRED, got {other:?}"),
        }
    }

    pub fn done(finisher: &str, result: Option<&str>) -> Out {
        Out::Done { finisher: finisher.as_bytes().to_vec(), result: result.map(|r| r.as_bytes().to_vec()) }
    }

    pub fn busy(holder: &str) -> Out {
        Out::Busy(holder.as_bytes().to_vec())
    }

    pub fn err_starts_with(&self, prefix: &str) -> bool {
        matches!(self, Out::Err(text) if text.starts_with(prefix))
    }
}

/// Reads a LOCK.TRY/WAIT answer from a raw connection.
pub async fn read_out(raw: &mut Raw) -> Out {
    Out::from_resp(&raw.read().await)
}

pub async fn cmd_out(raw: &mut Raw, args: Vec<Vec<u8>>) -> Out {
    Out::from_resp(&raw.cmd(args).await)
}

/// LOCK.INFO, in either protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    pub state: String,
    pub holder: Option<String>,
    pub token: Option<u64>,
    pub lease_ms: Option<i64>,
    pub waiters: i64,
    pub queue: Vec<String>,
    pub blocked: i64,
    pub finisher: Option<String>,
    pub result: Option<Vec<u8>>,
    pub keep_ms: Option<i64>,
    pub last_failure: Option<String>,
}

pub const INFO_FIELDS: [&str; 12] = [
    "state",
    "holder",
    "token",
    "lease_ms",
    "waiters",
    "queue",
    "blocked",
    "finisher",
    "result",
    "keep_ms",
    "last_failure",
    "grants_paused_ms",
];

impl KeyInfo {
    pub fn from_resp(resp: &Resp) -> KeyInfo {
        let pairs = resp.pairs();
        let names: Vec<&str> = pairs.iter().map(|(name, _)| name.as_str()).collect();
        for field in INFO_FIELDS {
            assert!(names.contains(&field), "LOCK.INFO lacks field {field:?}: {resp:?}");
        }
        let info = KeyInfo {
            state: resp.field("state").text(),
            holder: resp.field("holder").opt_text(),
            token: resp.field("token").opt_int().map(i64::unsigned_abs),
            lease_ms: resp.field("lease_ms").opt_int(),
            waiters: resp.field("waiters").int(),
            queue: resp.field("queue").array().iter().map(Resp::text).collect(),
            blocked: resp.field("blocked").int(),
            finisher: resp.field("finisher").opt_text(),
            result: resp.field("result").opt_bytes(),
            keep_ms: resp.field("keep_ms").opt_int(),
            last_failure: resp.field("last_failure").opt_text(),
        };
        // Without COUNT, LOCK.INFO lists the first 100 owners; waiters counts them all.
        assert_eq!(info.queue.len() as i64, info.waiters.min(100), "waiters counts the queue: {info:?}");
        assert!(["free", "held", "done"].contains(&info.state.as_str()), "unknown state: {info:?}");
        assert_eq!(info.state == "held", info.holder.is_some(), "a holder exactly when held: {info:?}");
        info
    }

    pub fn from_value(value: &Value) -> KeyInfo {
        KeyInfo::from_resp(&value_to_resp(value))
    }
}

// ---------------------------------------------------------------------------------------------
// The `redis` crate

/// A multiplexed connection that waits long enough for blocking calls.
pub async fn redis_conn(addr: SocketAddr) -> MultiplexedConnection {
    redis_conn_url(&format!("redis://{addr}/")).await.expect("redis connection")
}

pub async fn redis_conn_url(url: &str) -> RedisResult<MultiplexedConnection> {
    baton_testkit::redis_crate::connect(url, Duration::from_secs(30)).await
}

pub async fn query(con: &mut MultiplexedConnection, args: Vec<Vec<u8>>) -> RedisResult<Value> {
    baton_testkit::redis_crate::query(con, &args).await
}

pub async fn query_out(con: &mut MultiplexedConnection, args: Vec<Vec<u8>>) -> Out {
    Out::from_value(query(con, args).await)
}

pub async fn query_info(con: &mut MultiplexedConnection, key: impl IntoArg) -> KeyInfo {
    KeyInfo::from_value(&query(con, args!["LOCK.INFO", key]).await.expect("LOCK.INFO"))
}

// ---------------------------------------------------------------------------------------------
// Misc

/// A server whose subscribers and monitors are cut off once 256 KiB are queued for them.
pub async fn start_with_small_output_limit() -> RunningServer {
    start_with(|config| {
        config.pubsub_output_buffer_limit = baton::config::OutputLimit::parse("256kb 0 0").unwrap();
    })
    .await
}

/// Makes a client that reads nothing pass its output-buffer limit: runs `step` on `con` until
/// INFO counts a connection closed for it (once the socket buffers are full, the queue grows).
/// Returns how many steps ran.
pub async fn until_cut_off_for_output(con: &mut Raw, mut step: impl AsyncFnMut(&mut Raw)) -> usize {
    let mut steps = 0;
    while info_field(con, "client_output_buffer_limit_disconnections").await == 0 {
        assert!(steps < 4_000, "the client that reads nothing is never cut off");
        for _ in 0..16 {
            step(con).await;
            steps += 1;
        }
    }
    steps
}

/// A number from INFO's stats section.
pub async fn info_field(con: &mut Raw, field: &str) -> i64 {
    let text = con.cmd(args!["INFO", "stats"]).await.text();
    let line = text.lines().find_map(|line| line.strip_prefix(&format!("{field}:"))).expect(field);
    line.trim().parse().unwrap()
}

/// Polls an async condition until it holds or [`POLL_DEADLINE`] passes.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + POLL_DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
