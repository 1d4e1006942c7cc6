//! Shared helpers for the integration tests: starting a server, a raw RESP client for exact-bytes
//! checks and blocking calls, the `redis` crate for ordinary client use, and parsers for the
//! LOCK.* replies.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton::config::Config;
use baton::server::RunningServer;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single expected reply may take before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a polled condition may take to become true.
pub const POLL_DEADLINE: Duration = Duration::from_secs(8);
/// How long we listen to conclude that a blocked call is still blocked.
pub const QUIET: Duration = Duration::from_millis(200);

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
// Arguments

/// Anything that can be a request argument.
pub trait IntoArg {
    fn into_arg(self) -> Vec<u8>;
}

impl IntoArg for &str {
    fn into_arg(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}
impl IntoArg for String {
    fn into_arg(self) -> Vec<u8> {
        self.into_bytes()
    }
}
impl IntoArg for &String {
    fn into_arg(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}
impl IntoArg for &[u8] {
    fn into_arg(self) -> Vec<u8> {
        self.to_vec()
    }
}
impl<const N: usize> IntoArg for &[u8; N] {
    fn into_arg(self) -> Vec<u8> {
        self.to_vec()
    }
}
impl IntoArg for Vec<u8> {
    fn into_arg(self) -> Vec<u8> {
        self
    }
}
impl IntoArg for &Vec<u8> {
    fn into_arg(self) -> Vec<u8> {
        self.clone()
    }
}
macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl IntoArg for $t {
            fn into_arg(self) -> Vec<u8> {
                self.to_string().into_bytes()
            }
        }
    )*};
}
int_arg!(u64, i64, u32, i32, usize);

/// `args!["LOCK.TRY", key, owner, "PX", 500]` → `Vec<Vec<u8>>`.
#[macro_export]
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        <::std::vec::Vec<::std::vec::Vec<u8>>>::from([$($crate::common::IntoArg::into_arg($arg)),*])
    };
}

/// A request as RESP multibulk bytes.
pub fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Replies

/// A reply as read off the wire, RESP2 or RESP3.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1`
    NilBulk,
    /// `*-1`
    NilArray,
    /// RESP3 `_`
    Null,
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
    Set(Vec<Resp>),
    Push(Vec<Resp>),
    Double(String),
    Bool(bool),
    BigNum(String),
    Verbatim(Vec<u8>),
}

impl Resp {
    pub fn is_nil(&self) -> bool {
        matches!(self, Resp::NilBulk | Resp::NilArray | Resp::Null)
    }

    /// The bytes of a bulk, verbatim or simple string.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Resp::Bulk(data) | Resp::Verbatim(data) => data.clone(),
            Resp::Simple(text) => text.as_bytes().to_vec(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    pub fn opt_bytes(&self) -> Option<Vec<u8>> {
        if self.is_nil() { None } else { Some(self.bytes()) }
    }

    pub fn opt_text(&self) -> Option<String> {
        self.opt_bytes().map(|data| String::from_utf8_lossy(&data).into_owned())
    }

    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(value) => *value,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    pub fn opt_int(&self) -> Option<i64> {
        if self.is_nil() { None } else { Some(self.int()) }
    }

    pub fn array(&self) -> &[Resp] {
        match self {
            Resp::Array(items) | Resp::Set(items) | Resp::Push(items) => items,
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    /// The error line (without the leading `-`).
    pub fn err(&self) -> &str {
        match self {
            Resp::Error(text) => text,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Resp::Error(_))
    }

    /// Field/value pairs of a RESP3 map or of a RESP2 flat field-value array.
    pub fn pairs(&self) -> Vec<(String, Resp)> {
        match self {
            Resp::Map(pairs) => pairs.iter().map(|(k, v)| (k.text(), v.clone())).collect(),
            Resp::Array(items) => {
                assert!(items.len() % 2 == 0, "a flat field-value array has an even length: {items:?}");
                items.chunks(2).map(|pair| (pair[0].text(), pair[1].clone())).collect()
            }
            other => panic!("expected a map or a field-value array, got {other:?}"),
        }
    }

    pub fn get(&self, field: &str) -> Option<Resp> {
        self.pairs().into_iter().find(|(name, _)| name == field).map(|(_, value)| value)
    }

    pub fn field(&self, field: &str) -> Resp {
        self.get(field).unwrap_or_else(|| panic!("field {field:?} missing in {self:?}"))
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?.windows(2).position(|pair| pair == b"\r\n").map(|at| from + at)
}

/// Parses one reply at the start of `buf`: `Ok(None)` when incomplete, else the reply and its
/// length in bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], pos: usize) -> Result<Option<(Resp, usize)>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(cr) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let line = &buf[pos + 1..cr];
    let next = cr + 2;
    let text = String::from_utf8_lossy(line).into_owned();
    let int = || text.parse::<i64>().map_err(|_| format!("bad length or integer {text:?} after {:?}", kind as char));
    let resp = match kind {
        b'+' => Resp::Simple(text.clone()),
        b'-' => Resp::Error(text.clone()),
        b':' => Resp::Int(int()?),
        b'_' => Resp::Null,
        b',' => Resp::Double(text.clone()),
        b'(' => Resp::BigNum(text.clone()),
        b'#' => Resp::Bool(line == b"t"),
        b'$' | b'!' | b'=' => {
            let len = int()?;
            if len < 0 {
                return Ok(Some((Resp::NilBulk, next)));
            }
            let end = next + usize::try_from(len).map_err(|e| e.to_string())?;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("bulk string not terminated by CRLF".into());
            }
            let data = buf[next..end].to_vec();
            let resp = match kind {
                b'$' => Resp::Bulk(data),
                b'!' => Resp::Error(String::from_utf8_lossy(&data).into_owned()),
                _ => Resp::Verbatim(data.get(4..).unwrap_or_default().to_vec()),
            };
            return Ok(Some((resp, end + 2)));
        }
        b'*' | b'~' | b'>' | b'%' => {
            let count = int()?;
            if count < 0 {
                return Ok(Some((Resp::NilArray, next)));
            }
            let elements = usize::try_from(count).map_err(|e| e.to_string())? * if kind == b'%' { 2 } else { 1 };
            let mut items = Vec::with_capacity(elements.min(4096));
            let mut at = next;
            for _ in 0..elements {
                match parse_at(buf, at)? {
                    Some((item, end)) => {
                        items.push(item);
                        at = end;
                    }
                    None => return Ok(None),
                }
            }
            let resp = match kind {
                b'*' => Resp::Array(items),
                b'~' => Resp::Set(items),
                b'>' => Resp::Push(items),
                _ => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut iter = items.into_iter();
                    while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                        pairs.push((k, v));
                    }
                    Resp::Map(pairs)
                }
            };
            return Ok(Some((resp, at)));
        }
        other => return Err(format!("unknown reply type byte {:?}", other as char)),
    };
    Ok(Some((resp, next)))
}

// ---------------------------------------------------------------------------------------------
// Raw client

/// A plain TCP connection speaking RESP by hand: exact bytes, one socket per instance, dropped
/// means closed at once.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect to the server");
        stream.set_nodelay(true).expect("nodelay");
        Raw { stream, buf: Vec::new() }
    }

    /// Connects and switches to RESP3 with `HELLO 3`.
    pub async fn connect_resp3(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let (hello, bytes) = raw.cmd_frame(args!["HELLO", "3"]).await;
        assert!(bytes.starts_with(b"%"), "HELLO 3 answers with a RESP3 map: {:?}", String::from_utf8_lossy(&bytes));
        assert_eq!(hello.field("proto"), Resp::Int(3));
        raw
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to the server");
    }

    pub async fn send(&mut self, args: Vec<Vec<u8>>) {
        self.write(&encode(&args)).await;
    }

    pub async fn cmd(&mut self, args: Vec<Vec<u8>>) -> Resp {
        self.send(args).await;
        self.read().await
    }

    /// A request's reply together with its exact bytes.
    pub async fn cmd_frame(&mut self, args: Vec<Vec<u8>>) -> (Resp, Vec<u8>) {
        self.send(args).await;
        self.read_frame().await
    }

    /// The next complete reply, or None when the server closed the connection.
    async fn next_frame(&mut self) -> Option<(Resp, Vec<u8>)> {
        loop {
            match parse(&self.buf) {
                Ok(Some((resp, used))) => {
                    let raw = self.buf.drain(..used).collect();
                    return Some((resp, raw));
                }
                Ok(None) => {}
                Err(error) => panic!("malformed reply ({error}): {:?}", String::from_utf8_lossy(&self.buf)),
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = self.stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    pub async fn read_frame(&mut self) -> (Resp, Vec<u8>) {
        match tokio::time::timeout(READ_TIMEOUT, self.next_frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("the server closed the connection instead of replying"),
            Err(_) => panic!("no reply within {READ_TIMEOUT:?}"),
        }
    }

    pub async fn read(&mut self) -> Resp {
        self.read_frame().await.0
    }

    /// A reply if one arrives within `wait`.
    pub async fn read_within(&mut self, wait: Duration) -> Option<Resp> {
        tokio::time::timeout(wait, self.next_frame()).await.ok().flatten().map(|(resp, _)| resp)
    }

    /// Asserts that nothing is answered for a while (e.g. a WAIT that must stay blocked).
    pub async fn assert_quiet(&mut self, what: &str) {
        if let Some(reply) = self.read_within(QUIET).await {
            panic!("{what}: expected no reply yet, got {reply:?}");
        }
    }

    /// Reads until the server closes the connection; returns every byte received (including any
    /// left over from earlier reads). Panics if it stays open.
    pub async fn read_until_closed(&mut self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!(
                    "the server did not close the connection; received so far: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Ok(0)) | Ok(Err(_)) => return std::mem::take(&mut self.buf),
                Ok(Ok(read)) => self.buf.extend_from_slice(&chunk[..read]),
            }
        }
    }

    pub async fn info(&mut self, key: impl IntoArg) -> KeyInfo {
        KeyInfo::from_resp(&self.cmd(args!["LOCK.INFO", key]).await)
    }

    /// Polls LOCK.INFO until `condition` holds (or fails after [`POLL_DEADLINE`]).
    pub async fn wait_info(&mut self, key: &str, what: &str, condition: impl Fn(&KeyInfo) -> bool) -> KeyInfo {
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

    /// Polls until exactly `blocked` owners of `key` are blocked in LOCK.WAIT.
    pub async fn wait_blocked(&mut self, key: &str, blocked: i64) -> KeyInfo {
        self.wait_info(key, &format!("{blocked} blocked waiter(s)"), |info| info.blocked == blocked).await
    }

    pub async fn client_id(&mut self) -> i64 {
        self.cmd(args!["CLIENT", "ID"]).await.int()
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
        match reply {
            Err(error) => Out::Err(err_text(&error)),
            Ok(value) => Out::from_resp(&value_to_resp(&value)),
        }
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

pub const INFO_FIELDS: [&str; 11] = [
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
        assert_eq!(info.waiters, info.queue.len() as i64, "waiters counts the queue: {info:?}");
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

pub fn redis_client(addr: SocketAddr) -> redis::Client {
    redis::Client::open(format!("redis://{addr}/")).expect("client")
}

/// A multiplexed connection that waits long enough for blocking calls.
pub async fn redis_conn(addr: SocketAddr) -> MultiplexedConnection {
    redis_conn_url(&format!("redis://{addr}/")).await.expect("redis connection")
}

pub async fn redis_conn_url(url: &str) -> RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    redis::Client::open(url)?.get_multiplexed_async_connection_with_config(&config).await
}

pub async fn query(con: &mut MultiplexedConnection, args: Vec<Vec<u8>>) -> RedisResult<Value> {
    let name = String::from_utf8(args[0].clone()).expect("command names are text");
    let mut cmd = redis::cmd(&name);
    for arg in &args[1..] {
        cmd.arg(arg.as_slice());
    }
    cmd.query_async(con).await
}

pub async fn query_out(con: &mut MultiplexedConnection, args: Vec<Vec<u8>>) -> Out {
    Out::from_value(query(con, args).await)
}

pub async fn query_info(con: &mut MultiplexedConnection, key: impl IntoArg) -> KeyInfo {
    KeyInfo::from_value(&query(con, args!["LOCK.INFO", key]).await.expect("LOCK.INFO"))
}

/// An error as the server wrote it: code and detail.
pub fn err_text(error: &RedisError) -> String {
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => error.to_string(),
    }
}

pub fn value_to_resp(value: &Value) -> Resp {
    match value {
        Value::Nil => Resp::Null,
        Value::Int(value) => Resp::Int(*value),
        Value::BulkString(data) => Resp::Bulk(data.clone()),
        Value::Array(items) => Resp::Array(items.iter().map(value_to_resp).collect()),
        Value::Set(items) => Resp::Set(items.iter().map(value_to_resp).collect()),
        Value::SimpleString(text) => Resp::Simple(text.clone()),
        Value::Okay => Resp::Simple("OK".into()),
        Value::Map(pairs) => Resp::Map(pairs.iter().map(|(k, v)| (value_to_resp(k), value_to_resp(v))).collect()),
        Value::Boolean(value) => Resp::Bool(*value),
        Value::Double(value) => Resp::Double(value.to_string()),
        Value::VerbatimString { text, .. } => Resp::Verbatim(text.as_bytes().to_vec()),
        Value::ServerError(error) => {
            Resp::Error(format!("{} {}", error.code(), error.details().unwrap_or_default()).trim_end().to_owned())
        }
        other => panic!("unexpected value from the redis crate: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Misc

/// A small deterministic PRNG (xorshift64*), so failures can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
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
