//! `baton-bench`: a load generator that runs the same workloads against baton and against Redis
//! (with the closest Redis recipe) and prints one machine-readable `RESULT` line per figure.
//! `scripts/bench.sh` starts both servers, runs every workload against each, and renders the
//! lines into a Markdown table with the `table` subcommand.
//!
//! Every connection goes to 127.0.0.1 only, every read and write has a timeout, and every loop is
//! bounded by a duration or a count, so a run always ends by itself.
//!
//! Output line format (tab separated):
//! `RESULT <id> <target> <value> <better> <workload label> <metric label>`
//! where `better` is `higher`, `lower` or `none`.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

type BoxError = Box<dyn Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

fn fail<T>(message: impl Into<String>) -> Res<T> {
    Err(message.into().into())
}

// ---------------------------------------------------------------------------------------------
// Command line

#[derive(Parser, Debug)]
#[command(name = "baton-bench", about = "Load generator comparing baton's LOCK.* commands with Redis recipes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Baton,
    Redis,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Baton => "baton",
            Target::Redis => "redis",
        })
    }
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Which server listens on --port: baton (LOCK.* commands) or redis (the Redis recipe).
    #[arg(long, value_enum)]
    target: Target,
    /// Port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Client runtime worker threads (1 = a single-threaded client).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Give up on any single read, write or connect after this many seconds.
    #[arg(long, default_value_t = 30)]
    io_timeout_s: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// W1: uncontended acquire/release cycles on distinct keys.
    Cycle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Cycles in flight per connection (1 = unpipelined).
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        /// Measured seconds (after the warm-up).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// W3: PING floor, then lock hand-off latency between waiters of one key.
    Handoff {
        #[command(flatten)]
        common: Common,
        /// Waiters besides the holder.
        #[arg(long, default_value_t = 8)]
        waiters: usize,
        #[arg(long, default_value_t = 20_000)]
        handoffs: u64,
        #[arg(long, default_value_t = 20_000)]
        pings: u64,
    },
    /// W4: N waiters blocked on one key (baton) or subscribed to one channel (Redis); time until
    /// the last one hears the outcome.
    Fanout {
        #[command(flatten)]
        common: Common,
        /// Comma-separated waiter counts.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        waiters: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Server PID: measures RSS growth per waiter at the largest count.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// W5: contended mix, clients over few keys, 20% FAILURE; ops/s, max wait, FIFO check.
    Contended {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 16)]
        keys: usize,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 0.5)]
        warmup: f64,
        #[arg(long, default_value_t = 5000)]
        wait_timeout_ms: u64,
        #[arg(long, default_value_t = 20)]
        failure_pct: u64,
    },
    /// W6: RSS growth per held lock.
    Memory {
        #[command(flatten)]
        common: Common,
        /// Server PID (RSS is read from /proc/PID/status).
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Requests per pipelined batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Renders RESULT lines (from files or stdin) as Markdown tables.
    Table {
        /// Files with RESULT lines; other lines are ignored.
        files: Vec<PathBuf>,
    },
    /// Prints a free TCP port on 127.0.0.1.
    FreePort,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Cycle { common, .. }
        | Command::Handoff { common, .. }
        | Command::Fanout { common, .. }
        | Command::Contended { common, .. }
        | Command::Memory { common, .. } => common.threads,
        Command::Table { .. } | Command::FreePort => 1,
    };
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("baton-bench: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let _ = now_ns();
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("baton-bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Res<()> {
    match command {
        Command::Cycle { common, connections, pipeline, duration, warmup } => {
            cycle(&common, connections, pipeline.max(1), duration, warmup).await
        }
        Command::Handoff { common, waiters, handoffs, pings } => {
            ping_floor(&common, pings).await?;
            match common.target {
                Target::Baton => handoff_baton(&common, waiters.max(1), handoffs).await,
                Target::Redis => handoff_redis(&common, waiters.max(1), handoffs).await,
            }
        }
        Command::Fanout { common, waiters, rounds, pid } => {
            let largest = waiters.iter().copied().max().unwrap_or(0);
            for count in waiters {
                let pid = if count == largest { pid } else { None };
                fanout(&common, count, rounds.max(1), pid).await?;
            }
            Ok(())
        }
        Command::Contended { common, clients, keys, duration, warmup, wait_timeout_ms, failure_pct } => {
            let settings =
                ContendedSettings { clients, keys: keys.max(1), duration, warmup, wait_timeout_ms, failure_pct };
            contended(&common, settings).await
        }
        Command::Memory { common, pid, keys, connections, batch } => {
            memory(&common, pid, keys, connections.max(1), batch.max(1)).await
        }
        Command::Table { files } => table(&files),
        Command::FreePort => {
            let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
            println!("{}", listener.local_addr()?.port());
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Time, histograms, output

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since the process's time base.
fn now_ns() -> u64 {
    u64::try_from(base().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn secs_ns(secs: f64) -> u64 {
    (secs.max(0.0) * 1e9) as u64
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid histogram bounds")
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn quantile_us(hist: &Histogram<u64>, q: f64) -> f64 {
    us(hist.value_at_quantile(q))
}

#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
    None,
}

/// One figure: an id that `table` keys on, the target, the value, and labels for the table.
fn emit(id: &str, target: Target, value: f64, better: Better, workload: &str, metric: &str) {
    let better = match better {
        Better::Higher => "higher",
        Better::Lower => "lower",
        Better::None => "none",
    };
    println!("RESULT\t{id}\t{target}\t{value}\t{better}\t{workload}\t{metric}");
    let _ = std::io::stdout().flush();
}

fn note(message: impl fmt::Display) {
    eprintln!("baton-bench: {message}");
}

/// p50/p99/p99.9 rows for a latency histogram.
fn emit_latencies(id: &str, target: Target, hist: &Histogram<u64>, workload: &str, what: &str) {
    for (suffix, q, label) in [("p50", 0.5, "p50"), ("p99", 0.99, "p99"), ("p999", 0.999, "p99.9")] {
        emit(
            &format!("{id}.{suffix}"),
            target,
            quantile_us(hist, q),
            Better::Lower,
            workload,
            &format!("{what} {label} (µs)"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal RESP2 client

#[derive(Debug, Clone, PartialEq)]
enum Resp {
    Simple(Bytes),
    Error(Bytes),
    Int(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Resp>),
}

impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resp::Simple(text) => write!(f, "+{}", String::from_utf8_lossy(text)),
            Resp::Error(text) => write!(f, "-{}", String::from_utf8_lossy(text)),
            Resp::Int(value) => write!(f, ":{value}"),
            Resp::Bulk(data) => write!(f, "{:?}", String::from_utf8_lossy(data)),
            Resp::Nil => f.write_str("(nil)"),
            Resp::Array(items) => {
                f.write_str("[")?;
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl Resp {
    fn bulk_is(&self, text: &str) -> bool {
        matches!(self, Resp::Bulk(data) if data.eq_ignore_ascii_case(text.as_bytes()))
    }
}

/// The line after `pos` up to CRLF, and where the next element starts.
fn resp_line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let newline = rest.iter().position(|&b| b == b'\n')?;
    if newline == 0 || rest[newline - 1] != b'\r' {
        return None;
    }
    Some((&rest[..newline - 1], pos + newline + 1))
}

fn resp_int(text: &[u8]) -> Res<i64> {
    std::str::from_utf8(text).ok().and_then(|text| text.parse().ok()).ok_or_else(|| "bad integer in reply".into())
}

/// Parses one reply starting at `pos`; None when more bytes are needed.
fn resp_parse(buf: &[u8], pos: usize) -> Res<Option<(Resp, usize)>> {
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((body, next)) = resp_line(buf, pos + 1) else {
        return Ok(None);
    };
    let parsed = match tag {
        b'+' => (Resp::Simple(Bytes::copy_from_slice(body)), next),
        b'-' => (Resp::Error(Bytes::copy_from_slice(body)), next),
        b':' => (Resp::Int(resp_int(body)?), next),
        b'$' => {
            let len = resp_int(body)?;
            if len < 0 {
                (Resp::Nil, next)
            } else {
                let end = next + len as usize;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                (Resp::Bulk(Bytes::copy_from_slice(&buf[next..end])), end + 2)
            }
        }
        b'*' => {
            let len = resp_int(body)?;
            if len < 0 {
                (Resp::Nil, next)
            } else {
                let mut items = Vec::with_capacity(len.min(1024) as usize);
                let mut at = next;
                for _ in 0..len {
                    match resp_parse(buf, at)? {
                        Some((item, after)) => {
                            items.push(item);
                            at = after;
                        }
                        None => return Ok(None),
                    }
                }
                (Resp::Array(items), at)
            }
        }
        other => return fail(format!("unexpected reply type byte {other:#x}")),
    };
    Ok(Some(parsed))
}

struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    io_timeout: Duration,
}

impl Conn {
    async fn connect(port: u16, io_timeout: Duration) -> Res<Conn> {
        let stream = match tokio::time::timeout(io_timeout, TcpStream::connect(("127.0.0.1", port))).await {
            Ok(stream) => stream?,
            Err(_) => return fail(format!("connect to 127.0.0.1:{port} timed out")),
        };
        stream.set_nodelay(true)?;
        Ok(Conn { stream, rbuf: BytesMut::with_capacity(4096), wbuf: Vec::with_capacity(256), io_timeout })
    }

    async fn open(common: &Common) -> Res<Conn> {
        Conn::connect(common.port, Duration::from_secs(common.io_timeout_s)).await
    }

    /// Appends one command to the write buffer.
    fn cmd(&mut self, args: &[&[u8]]) {
        let _ = write!(self.wbuf, "*{}\r\n", args.len());
        for arg in args {
            let _ = write!(self.wbuf, "${}\r\n", arg.len());
            self.wbuf.extend_from_slice(arg);
            self.wbuf.extend_from_slice(b"\r\n");
        }
    }

    async fn flush(&mut self) -> Res<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(self.io_timeout, self.stream.write_all(&self.wbuf)).await {
            Ok(result) => result?,
            Err(_) => return fail("write timed out"),
        }
        self.wbuf.clear();
        Ok(())
    }

    fn try_parse(&mut self) -> Res<Option<Resp>> {
        match resp_parse(&self.rbuf, 0)? {
            Some((reply, used)) => {
                self.rbuf.advance(used);
                Ok(Some(reply))
            }
            None => Ok(None),
        }
    }

    /// The next reply, or None if `limit` passes first (cancel-safe: nothing read is lost).
    async fn read_within(&mut self, limit: Duration) -> Res<Option<Resp>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(reply) = self.try_parse()? {
                return Ok(Some(reply));
            }
            self.rbuf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Ok(Ok(0)) => return fail("connection closed by the server"),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => return Ok(None),
            }
        }
    }

    async fn read(&mut self) -> Res<Resp> {
        match self.read_within(self.io_timeout).await? {
            Some(reply) => Ok(reply),
            None => fail(format!("no reply within {:?}", self.io_timeout)),
        }
    }

    async fn call(&mut self, args: &[&[u8]]) -> Res<Resp> {
        self.cmd(args);
        self.flush().await?;
        self.read().await
    }
}

/// Opens `count` connections, 128 at a time, each checked with a PING.
async fn open_many(common: &Common, count: usize) -> Res<Vec<Conn>> {
    futures_util::stream::iter(0..count)
        .map(|_| async {
            let mut conn = Conn::open(common).await?;
            let pong = conn.call(&[b"PING"]).await?;
            if pong != Resp::Simple(Bytes::from_static(b"PONG")) {
                return fail(format!("PING answered {pong}"));
            }
            Ok::<Conn, BoxError>(conn)
        })
        .buffer_unordered(128)
        .try_collect()
        .await
}

fn token_of(reply: &Resp) -> Res<u64> {
    if let Resp::Array(items) = reply
        && items.len() == 2
        && items[0].bulk_is("ACQUIRED")
        && let Resp::Int(token) = items[1]
    {
        return Ok(token as u64);
    }
    fail(format!("expected [ACQUIRED, token], got {reply}"))
}

fn expect_int(reply: &Resp, want: i64, what: &str) -> Res<()> {
    if *reply == Resp::Int(want) { Ok(()) } else { fail(format!("{what}: expected :{want}, got {reply}")) }
}

fn expect_ok(reply: &Resp, what: &str) -> Res<()> {
    if matches!(reply, Resp::Simple(text) if text.as_ref() == b"OK") {
        Ok(())
    } else {
        fail(format!("{what}: expected +OK, got {reply}"))
    }
}

/// Redis's side of every recipe: compare-and-delete, then PUBLISH (Redisson's unlock does both in
/// one script). KEYS[1] lock, ARGV[1] owner, ARGV[2] channel, ARGV[3] message; no publish when
/// the channel is empty.
const UNLOCK_LUA: &str = "if redis.call('get',KEYS[1])==ARGV[1] then redis.call('del',KEYS[1]) \
if ARGV[2] ~= '' then redis.call('publish',ARGV[2],ARGV[3]) end return 1 else return 0 end";

/// The plain compare-and-delete from the issue, used by the uncontended cycle (W1).
const CAD_LUA: &str = "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

async fn load_script(conn: &mut Conn, script: &str) -> Res<Bytes> {
    match conn.call(&[b"SCRIPT", b"LOAD", script.as_bytes()]).await? {
        Resp::Bulk(sha) => Ok(sha),
        other => fail(format!("SCRIPT LOAD answered {other}")),
    }
}

/// Number of blocked waiters on `key` according to LOCK.INFO.
async fn blocked_on(conn: &mut Conn, key: &[u8]) -> Res<i64> {
    let reply = conn.call(&[b"LOCK.INFO", key]).await?;
    let Resp::Array(items) = &reply else {
        return fail(format!("LOCK.INFO answered {reply}"));
    };
    for pair in items.chunks(2) {
        if pair.len() == 2
            && pair[0].bulk_is("blocked")
            && let Resp::Int(count) = pair[1]
        {
            return Ok(count);
        }
    }
    fail(format!("LOCK.INFO has no 'blocked' field: {reply}"))
}

/// Polls until `want` waiters are blocked on `key` (baton) or subscribed to `channel` (Redis).
async fn await_waiters(conn: &mut Conn, target: Target, key: &[u8], want: usize, limit: Duration) -> Res<()> {
    let deadline = Instant::now() + limit;
    loop {
        let have = match target {
            Target::Baton => blocked_on(conn, key).await?,
            Target::Redis => match conn.call(&[b"PUBSUB", b"NUMSUB", key]).await? {
                Resp::Array(items) if items.len() == 2 => match items[1] {
                    Resp::Int(count) => count,
                    _ => return fail("PUBSUB NUMSUB: bad count"),
                },
                other => return fail(format!("PUBSUB NUMSUB answered {other}")),
            },
        };
        if have == want as i64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return fail(format!("only {have} of {want} waiters arrived within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn rss_kb(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let number = rest.trim().trim_end_matches("kB").trim();
            return Ok(number.parse()?);
        }
    }
    fail(format!("no VmRSS in /proc/{pid}/status"))
}

/// A small PRNG (xorshift64*), enough to pick FAILURE 20% of the time.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn percent(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

async fn join_all<T: 'static>(mut set: JoinSet<Res<T>>) -> Res<Vec<T>> {
    let mut out = Vec::new();
    while let Some(joined) = set.join_next().await {
        out.push(joined??);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// W1: uncontended cycles

async fn cycle(common: &Common, connections: usize, pipeline: usize, duration: f64, warmup: f64) -> Res<()> {
    let target = common.target;
    let sha = match target {
        Target::Redis => Some(load_script(&mut Conn::open(common).await?, CAD_LUA).await?),
        Target::Baton => None,
    };
    let conns = open_many(common, connections).await?;
    let start = now_ns();
    let measure_from = start + secs_ns(warmup);
    let end = measure_from + secs_ns(duration);
    let mut set = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let sha = sha.clone();
        set.spawn(cycle_conn(conn, target, index, pipeline, measure_from, end, sha));
    }
    let mut hist = new_hist();
    let mut cycles = 0;
    for (count, part) in join_all(set).await? {
        cycles += count;
        hist.add(&part)?;
    }
    let seconds = (end - measure_from) as f64 / 1e9;
    let (id, workload) = if pipeline == 1 {
        ("w1.p1".to_owned(), format!("W1 uncontended cycle, {connections} conns, unpipelined"))
    } else {
        (format!("w1.p{pipeline}"), format!("W1 uncontended cycle, {connections} conns, pipeline {pipeline}"))
    };
    emit(&format!("{id}.rate"), target, cycles as f64 / seconds, Better::Higher, &workload, "cycles/s");
    emit_latencies(&format!("{id}.lat"), target, &hist, &workload, "cycle latency");
    Ok(())
}

async fn cycle_conn(
    mut conn: Conn,
    target: Target,
    index: usize,
    pipeline: usize,
    measure_from: u64,
    end: u64,
    sha: Option<Bytes>,
) -> Res<(u64, Histogram<u64>)> {
    let owner = format!("owner-{index}");
    let keys: Vec<String> = (0..pipeline).map(|slot| format!("cycle:{index}:{slot}")).collect();
    let sha = sha.unwrap_or_default();
    let mut tokens = vec![String::new(); pipeline];
    let mut hist = new_hist();
    let mut cycles = 0;
    loop {
        let t0 = now_ns();
        if t0 >= end {
            break;
        }
        for key in &keys {
            match target {
                Target::Baton => conn.cmd(&[b"LOCK.TRY", key.as_bytes(), owner.as_bytes()]),
                Target::Redis => conn.cmd(&[b"SET", key.as_bytes(), owner.as_bytes(), b"NX", b"PX", b"30000"]),
            }
        }
        conn.flush().await?;
        for token in tokens.iter_mut() {
            let reply = conn.read().await?;
            match target {
                Target::Baton => *token = token_of(&reply)?.to_string(),
                Target::Redis => expect_ok(&reply, "SET NX")?,
            }
        }
        for (key, token) in keys.iter().zip(&tokens) {
            match target {
                Target::Baton => {
                    conn.cmd(&[b"LOCK.UNLOCK", key.as_bytes(), owner.as_bytes(), token.as_bytes(), b"SUCCESS"])
                }
                Target::Redis => conn.cmd(&[b"EVALSHA", &sha, b"1", key.as_bytes(), owner.as_bytes()]),
            }
        }
        conn.flush().await?;
        for _ in 0..pipeline {
            let reply = conn.read().await?;
            let want = if target == Target::Baton { 0 } else { 1 };
            expect_int(&reply, want, "unlock")?;
        }
        let t1 = now_ns();
        if t0 >= measure_from && t1 <= end {
            cycles += pipeline as u64;
            hist.saturating_record_n(t1 - t0, pipeline as u64);
        }
    }
    Ok((cycles, hist))
}

// ---------------------------------------------------------------------------------------------
// W3: PING floor and hand-off latency

async fn ping_floor(common: &Common, pings: u64) -> Res<()> {
    let mut conn = Conn::open(common).await?;
    for _ in 0..pings.min(1000) {
        conn.call(&[b"PING"]).await?;
    }
    let mut hist = new_hist();
    for _ in 0..pings {
        let t0 = now_ns();
        conn.call(&[b"PING"]).await?;
        hist.saturating_record(now_ns() - t0);
    }
    let workload = "W3 hand-off: PING round trip, 1 conn (the floor)";
    emit("w3.ping.p50", common.target, quantile_us(&hist, 0.5), Better::Lower, workload, "PING p50 (µs)");
    emit("w3.ping.p99", common.target, quantile_us(&hist, 0.99), Better::Lower, workload, "PING p99 (µs)");
    Ok(())
}

struct HandoffShared {
    /// now_ns() when the current holder started sending its unlock.
    unlock_sent: AtomicU64,
    count: AtomicU64,
    target_count: u64,
    stop: AtomicBool,
    started: u64,
    stopped_at: AtomicU64,
    hist: Mutex<Histogram<u64>>,
    /// Bumped on every acquisition, so an old holder re-waits only once the lock has moved on
    /// (its re-WAIT then never competes with the hand-off being measured, on either server).
    generation: watch::Sender<u64>,
}

impl HandoffShared {
    fn new(target_count: u64) -> HandoffShared {
        HandoffShared {
            unlock_sent: AtomicU64::new(0),
            count: AtomicU64::new(0),
            target_count,
            stop: AtomicBool::new(false),
            started: now_ns(),
            stopped_at: AtomicU64::new(0),
            hist: Mutex::new(new_hist()),
            generation: watch::channel(0).0,
        }
    }

    /// Waits until somebody else has taken the lock (false: the run stopped meanwhile).
    async fn moved_on(&self, mut moved: watch::Receiver<u64>) -> bool {
        loop {
            match tokio::time::timeout(Duration::from_millis(200), moved.changed()).await {
                Ok(_) => return true,
                Err(_) if self.stop.load(Ordering::Acquire) => return false,
                Err(_) => {}
            }
        }
    }

    /// A waiter got the lock at `t1`; returns whether the run is over.
    fn acquired(&self, t1: u64) -> bool {
        self.generation.send_modify(|generation| *generation += 1);
        if self.stop.load(Ordering::Acquire) {
            return true;
        }
        let t0 = self.unlock_sent.load(Ordering::Acquire);
        if let Ok(mut hist) = self.hist.lock() {
            hist.saturating_record(t1.saturating_sub(t0));
        }
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 >= self.target_count {
            self.stopped_at.store(t1, Ordering::Release);
            self.stop.store(true, Ordering::Release);
            return true;
        }
        false
    }

    fn emit(&self, target: Target, waiters: usize) {
        let count = self.count.load(Ordering::Acquire);
        let elapsed = self.stopped_at.load(Ordering::Acquire).saturating_sub(self.started).max(1);
        let workload = format!("W3 hand-off, {waiters} waiters on one key");
        let hist = self.hist.lock().map(|hist| hist.clone()).unwrap_or_else(|_| new_hist());
        emit("w3.handoff.rate", target, count as f64 * 1e9 / elapsed as f64, Better::Higher, &workload, "hand-offs/s");
        emit_latencies("w3.handoff.lat", target, &hist, &workload, "hand-off");
        note(format!("{target}: {count} hand-offs"));
    }
}

async fn handoff_baton(common: &Common, waiters: usize, handoffs: u64) -> Res<()> {
    let key: &[u8] = b"bench:handoff";
    let mut holder = Conn::open(common).await?;
    let token = token_of(&holder.call(&[b"LOCK.TRY", key, b"hw0"]).await?)?;
    let mut conns = open_many(common, waiters).await?;
    for (index, conn) in conns.iter_mut().enumerate() {
        let owner = format!("hw{}", index + 1);
        conn.cmd(&[b"LOCK.WAIT", key, owner.as_bytes(), b"0"]);
        conn.flush().await?;
    }
    let mut observer = Conn::open(common).await?;
    await_waiters(&mut observer, Target::Baton, key, waiters, Duration::from_secs(10)).await?;
    let shared = Arc::new(HandoffShared::new(handoffs));
    let mut set = JoinSet::new();
    set.spawn(handoff_baton_participant(holder, "hw0".to_owned(), Some(token), Arc::clone(&shared)));
    for (index, conn) in conns.into_iter().enumerate() {
        set.spawn(handoff_baton_participant(conn, format!("hw{}", index + 1), None, Arc::clone(&shared)));
    }
    join_all(set).await?;
    shared.emit(Target::Baton, waiters);
    Ok(())
}

/// Holds (FAILURE-unlocks at once) or waits; a WAIT was already sent when `token` is None.
async fn handoff_baton_participant(
    mut conn: Conn,
    owner: String,
    mut token: Option<u64>,
    shared: Arc<HandoffShared>,
) -> Res<()> {
    let key: &[u8] = b"bench:handoff";
    loop {
        if let Some(held) = token.take() {
            let held = held.to_string();
            if shared.stop.load(Ordering::Acquire) {
                conn.call(&[b"LOCK.UNLOCK", key, owner.as_bytes(), held.as_bytes(), b"SUCCESS"]).await?;
                return Ok(());
            }
            let mut moved = shared.generation.subscribe();
            moved.borrow_and_update();
            shared.unlock_sent.store(now_ns(), Ordering::Release);
            let reply = conn.call(&[b"LOCK.UNLOCK", key, owner.as_bytes(), held.as_bytes(), b"FAILURE"]).await?;
            if !matches!(reply, Resp::Int(0 | 1)) {
                return fail(format!("LOCK.UNLOCK FAILURE answered {reply}"));
            }
            // Like the Redis recipe's old holder: back in line once the lock has moved on.
            let _ = shared.moved_on(moved).await;
            conn.cmd(&[b"LOCK.WAIT", key, owner.as_bytes(), b"0"]);
            conn.flush().await?;
        }
        let reply = conn.read().await?;
        let t1 = now_ns();
        match &reply {
            Resp::Array(items) if items.first().is_some_and(|item| item.bulk_is("DONE")) => return Ok(()),
            _ => {
                token = Some(token_of(&reply)?);
                shared.acquired(t1);
            }
        }
    }
}

async fn handoff_redis(common: &Common, waiters: usize, handoffs: u64) -> Res<()> {
    let key: &[u8] = b"bench:handoff";
    let channel: &[u8] = b"bench:handoff:released";
    let mut first = Conn::open(common).await?;
    let sha = load_script(&mut first, UNLOCK_LUA).await?;
    // A key left by an interrupted run would still be held for its lease.
    first.call(&[b"DEL", key]).await?;
    expect_ok(&first.call(&[b"SET", key, b"hw0", b"NX", b"PX", b"30000"]).await?, "SET NX")?;
    let shared = Arc::new(HandoffShared::new(handoffs));
    let mut participants = Vec::new();
    for _ in 0..=waiters {
        let cmd = Conn::open(common).await?;
        let mut sub = Conn::open(common).await?;
        let reply = sub.call(&[b"SUBSCRIBE", channel]).await?;
        if !matches!(&reply, Resp::Array(items) if items.first().is_some_and(|item| item.bulk_is("subscribe"))) {
            return fail(format!("SUBSCRIBE answered {reply}"));
        }
        participants.push((cmd, sub));
    }
    drop(first);
    // Every waiter learns the holder before anyone starts, so the first release wakes them all.
    let mut ready = Vec::new();
    for (index, (mut cmd, sub)) in participants.into_iter().enumerate() {
        let owner = format!("hw{index}");
        let state = if index == 0 {
            RedisState::Holding
        } else {
            match cmd.call(&[b"SET", key, owner.as_bytes(), b"NX", b"GET", b"PX", b"30000"]).await? {
                Resp::Bulk(holder) => RedisState::WaitFor(holder),
                other => return fail(format!("SET NX GET answered {other} while the lock is held")),
            }
        };
        ready.push((cmd, sub, owner, state));
    }
    let mut set = JoinSet::new();
    for (cmd, sub, owner, state) in ready {
        let participant = RedisParticipant { cmd, sub, owner, sha: sha.clone(), shared: Arc::clone(&shared) };
        set.spawn(participant.run(state));
    }
    join_all(set).await?;
    shared.emit(Target::Redis, waiters);
    Ok(())
}

enum RedisState {
    Holding,
    Try,
    WaitFor(Bytes),
}

/// One client of the Redisson-style recipe: SET NX to take the lock; on failure wait on the
/// lock's channel for the holder's release, then retry.
struct RedisParticipant {
    cmd: Conn,
    sub: Conn,
    owner: String,
    sha: Bytes,
    shared: Arc<HandoffShared>,
}

impl RedisParticipant {
    async fn run(mut self, mut state: RedisState) -> Res<()> {
        let key: &[u8] = b"bench:handoff";
        let channel: &[u8] = b"bench:handoff:released";
        loop {
            state = match state {
                RedisState::Holding => {
                    let stop = self.shared.stop.load(Ordering::Acquire);
                    let mut moved = self.shared.generation.subscribe();
                    moved.borrow_and_update();
                    self.shared.unlock_sent.store(now_ns(), Ordering::Release);
                    let owner = self.owner.as_bytes();
                    let reply = self.cmd.call(&[b"EVALSHA", &self.sha, b"1", key, owner, channel, owner]).await?;
                    expect_int(&reply, 1, "unlock script")?;
                    if stop {
                        return Ok(());
                    }
                    // Re-wait like baton's old holder: behind whoever takes the lock next.
                    if !self.shared.moved_on(moved).await {
                        return Ok(());
                    }
                    RedisState::Try
                }
                RedisState::Try => {
                    let owner = self.owner.as_bytes();
                    match self.cmd.call(&[b"SET", key, owner, b"NX", b"GET", b"PX", b"30000"]).await? {
                        Resp::Nil => {
                            self.shared.acquired(now_ns());
                            RedisState::Holding
                        }
                        Resp::Bulk(holder) => RedisState::WaitFor(holder),
                        other => return fail(format!("SET NX GET answered {other}")),
                    }
                }
                RedisState::WaitFor(holder) => {
                    loop {
                        let message = self.sub.read().await?;
                        if let Resp::Array(items) = &message
                            && items.len() == 3
                            && items[0].bulk_is("message")
                            && matches!(&items[2], Resp::Bulk(payload) if *payload == holder)
                        {
                            break;
                        }
                    }
                    RedisState::Try
                }
            };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// W4: fan-out

async fn fanout(common: &Common, count: usize, rounds: usize, pid: Option<u32>) -> Res<()> {
    let target = common.target;
    let key: &[u8] = b"bench:fanout";
    let rss_before = pid.map(rss_kb).transpose()?;
    let mut control = Conn::open(common).await?;
    let mut observer = Conn::open(common).await?;
    let mut conns = open_many(common, count).await?;
    let rss_idle = pid.map(rss_kb).transpose()?;
    if target == Target::Redis {
        futures_util::stream::iter(conns.iter_mut())
            .map(|conn| async move {
                let reply = conn.call(&[b"SUBSCRIBE", key]).await?;
                if !matches!(&reply, Resp::Array(items) if items.first().is_some_and(|item| item.bulk_is("subscribe")))
                {
                    return fail(format!("SUBSCRIBE answered {reply}"));
                }
                Ok::<(), BoxError>(())
            })
            .buffer_unordered(256)
            .try_collect::<Vec<()>>()
            .await?;
    }
    let (round_tx, round_rx) = watch::channel(0usize);
    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<u64>();
    let mut set = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let owner = format!("fw{index}");
        set.spawn(fanout_waiter(conn, target, owner, round_rx.clone(), report_tx.clone()));
    }
    drop(report_tx);
    let mut lasts = new_hist();
    let mut medians = new_hist();
    let mut rss_blocked = None;
    for round in 1..=rounds {
        let token = match target {
            Target::Baton => Some(token_of(&control.call(&[b"LOCK.TRY", key, b"fan-holder"]).await?)?),
            Target::Redis => None,
        };
        round_tx.send(round)?;
        await_waiters(&mut observer, target, key, count, Duration::from_secs(60)).await?;
        if round == 1 {
            rss_blocked = pid.map(rss_kb).transpose()?;
        }
        let t0 = now_ns();
        match token {
            Some(token) => {
                let token = token.to_string();
                control.cmd(&[b"LOCK.UNLOCK", key, b"fan-holder", token.as_bytes(), b"SUCCESS"]);
            }
            None => control.cmd(&[b"PUBLISH", key, b"done"]),
        }
        control.flush().await?;
        let mut times = Vec::with_capacity(count);
        while times.len() < count {
            match tokio::time::timeout(Duration::from_secs(60), report_rx.recv()).await {
                Ok(Some(at)) => times.push(at.saturating_sub(t0)),
                Ok(None) => {
                    // A waiter task ended early: surface its error.
                    while let Some(joined) = set.join_next().await {
                        joined??;
                    }
                    return fail("fan-out waiters ended early");
                }
                Err(_) => return fail(format!("only {} of {count} waiters answered within 60 s", times.len())),
            }
        }
        expect_int(&control.read().await?, count as i64, "waiters told / receivers")?;
        times.sort_unstable();
        let last = times.last().copied().unwrap_or(0);
        lasts.saturating_record(last);
        medians.saturating_record(times[times.len() / 2]);
        note(format!("{target} fan-out {count}: round {round}: last answered after {:.2} ms", last as f64 / 1e6));
    }
    set.abort_all();
    let workload = format!("W4 fan-out, {} waiters on one key", thousands(count as f64));
    let id = format!("w4.n{count}");
    emit(
        &format!("{id}.last"),
        target,
        lasts.value_at_quantile(0.5) as f64 / 1e6,
        Better::Lower,
        &workload,
        &format!("last answered (ms, median of {rounds} rounds)"),
    );
    emit(
        &format!("{id}.median"),
        target,
        medians.value_at_quantile(0.5) as f64 / 1e6,
        Better::Lower,
        &workload,
        "median waiter answered (ms)",
    );
    if let (Some(before), Some(idle), Some(blocked)) = (rss_before, rss_idle, rss_blocked) {
        let workload = format!("W6 memory, {} waiters (baton: LOCK.WAIT; Redis: SUBSCRIBE)", thousands(count as f64));
        let per = |from: u64| (blocked.saturating_sub(from) * 1024) as f64 / count as f64;
        note(format!("{target} RSS: before {before} kB, {count} idle conns {idle} kB, waiting {blocked} kB"));
        emit(
            "w6.waiter.total",
            target,
            per(before),
            Better::Lower,
            &workload,
            "RSS growth per waiter incl. connection (B)",
        );
        emit(
            "w6.waiter.wait",
            target,
            per(idle),
            Better::Lower,
            &workload,
            "RSS growth per waiter over an idle connection (B)",
        );
    }
    Ok(())
}

async fn fanout_waiter(
    mut conn: Conn,
    target: Target,
    owner: String,
    mut round: watch::Receiver<usize>,
    report: mpsc::UnboundedSender<u64>,
) -> Res<()> {
    let key: &[u8] = b"bench:fanout";
    loop {
        if round.changed().await.is_err() {
            return Ok(());
        }
        round.borrow_and_update();
        if target == Target::Baton {
            conn.cmd(&[b"LOCK.WAIT", key, owner.as_bytes(), b"120000"]);
            conn.flush().await?;
        }
        let reply = conn.read().await?;
        let at = now_ns();
        let Resp::Array(items) = &reply else {
            return fail(format!("waiter got {reply}"));
        };
        let expected = match target {
            Target::Baton => items.first().is_some_and(|item| item.bulk_is("DONE")),
            Target::Redis => items.first().is_some_and(|item| item.bulk_is("message")),
        };
        if !expected {
            return fail(format!("waiter got {reply}"));
        }
        if report.send(at).is_err() {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// W5: contended mix

#[derive(Clone, Copy)]
struct ContendedSettings {
    clients: usize,
    keys: usize,
    duration: f64,
    warmup: f64,
    wait_timeout_ms: u64,
    failure_pct: u64,
}

/// How a LOCK.WAIT ended, for the FIFO check: granted with a token, or told DONE by the holder
/// with this owner id (resolved to that holder's token afterwards).
#[derive(Clone, Copy)]
enum Answer {
    Granted(u64),
    DoneBy(u64),
}

#[derive(Clone, Copy)]
struct WaitRecord {
    key: u32,
    owner: u64,
    sent_start: u64,
    sent_end: u64,
    answer: Answer,
}

#[derive(Default)]
struct ContendedOut {
    ops: u64,
    acquired: u64,
    done: u64,
    timeouts: u64,
    max_wait: u64,
    hist: Option<Histogram<u64>>,
    records: Vec<WaitRecord>,
    /// owner id → token it was granted.
    grants: Vec<(u64, u64)>,
}

fn owner_id(client: usize, attempt: u64) -> u64 {
    ((client as u64) << 40) | attempt
}

fn owner_name(id: u64) -> String {
    format!("c{}.{}", id >> 40, id & ((1 << 40) - 1))
}

fn parse_owner(name: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(name).ok()?.strip_prefix('c')?;
    let (client, attempt) = text.split_once('.')?;
    Some(owner_id(client.parse().ok()?, attempt.parse().ok()?))
}

async fn contended(common: &Common, settings: ContendedSettings) -> Res<()> {
    let target = common.target;
    let sha = match target {
        Target::Redis => Some(load_script(&mut Conn::open(common).await?, UNLOCK_LUA).await?),
        Target::Baton => None,
    };
    let mut clients = Vec::new();
    for client in 0..settings.clients {
        let cmd = Conn::open(common).await?;
        let sub = match target {
            Target::Baton => None,
            Target::Redis => {
                let mut sub = Conn::open(common).await?;
                let channel = format!("contended:{}:released", client % settings.keys);
                sub.call(&[b"SUBSCRIBE", channel.as_bytes()]).await?;
                Some(sub)
            }
        };
        clients.push((cmd, sub));
    }
    let start = now_ns();
    let measure_from = start + secs_ns(settings.warmup);
    let end = measure_from + secs_ns(settings.duration);
    let observer = tokio::spawn(observe_queues(Conn::open(common).await?, target, settings.keys, end));
    let mut set = JoinSet::new();
    for (client, (cmd, sub)) in clients.into_iter().enumerate() {
        let run =
            ContendedClient { client, settings, measure_from, end, cmd, sub, sha: sha.clone().unwrap_or_default() };
        set.spawn(run.run());
    }
    let outs = join_all(set).await?;
    let snapshots = observer.await??;
    let mut hist = new_hist();
    let (mut ops, mut acquired, mut done, mut timeouts, mut max_wait) = (0, 0, 0, 0, 0);
    let mut records = Vec::new();
    let mut grants = HashMap::new();
    for out in outs {
        ops += out.ops;
        acquired += out.acquired;
        done += out.done;
        timeouts += out.timeouts;
        max_wait = max_wait.max(out.max_wait);
        if let Some(part) = &out.hist {
            hist.add(part)?;
        }
        records.extend(out.records);
        grants.extend(out.grants);
    }
    let seconds = (end - measure_from) as f64 / 1e9;
    let workload = format!(
        "W5 contended, {} clients over {} keys, {}% FAILURE",
        settings.clients, settings.keys, settings.failure_pct
    );
    note(format!("{target} contended: {ops} ops ({acquired} acquired, {done} DONE), {timeouts} timeouts"));
    emit("w5.rate", target, ops as f64 / seconds, Better::Higher, &workload, "completed operations/s");
    emit("w5.wait.p50", target, quantile_us(&hist, 0.5), Better::Lower, &workload, "wait p50 (µs)");
    emit("w5.wait.p99", target, quantile_us(&hist, 0.99), Better::Lower, &workload, "wait p99 (µs)");
    emit("w5.wait.max", target, max_wait as f64 / 1e6, Better::Lower, &workload, "max wait (ms)");
    emit(
        "w5.done",
        target,
        done as f64 / (acquired + done).max(1) as f64 * 100.0,
        Better::None,
        &workload,
        "answered DONE (%)",
    );
    emit("w5.timeouts", target, timeouts as f64, Better::Lower, &workload, "waits timed out");
    if target == Target::Baton {
        let epochs = resolve_epochs(&records, &grants);
        let (violations, checked) = fifo_against_snapshots(&epochs, &snapshots);
        let (strict, spaced) = send_order_inversions(&epochs);
        note(format!(
            "FIFO: {violations} violations over {checked} queue snapshots ({} answered waits); answered out of \
             client send order: {strict} (any gap), {spaced} (sends ≥ 1 ms apart)",
            epochs.len()
        ));
        emit(
            "w5.fifo",
            target,
            violations as f64,
            Better::Lower,
            &workload,
            "FIFO violations (vs LOCK.INFO queue order)",
        );
        emit(
            "w5.fifo.send1ms",
            target,
            spaced as f64,
            Better::None,
            &workload,
            "answered out of client send order, sends ≥ 1 ms apart",
        );
    }
    Ok(())
}

/// Where each answered wait falls in its key's history: a grant at its token, a DONE just after
/// the grant of the holder that succeeded. Within a key these order every answer.
#[derive(Clone, Copy)]
struct Epoched {
    key: u32,
    owner: u64,
    sent_start: u64,
    sent_end: u64,
    epoch: (u64, u8),
}

fn resolve_epochs(records: &[WaitRecord], grants: &HashMap<u64, u64>) -> Vec<Epoched> {
    records
        .iter()
        .filter_map(|record| {
            let epoch = match record.answer {
                Answer::Granted(token) => (token, 0),
                Answer::DoneBy(owner) => (*grants.get(&owner)?, 1),
            };
            Some(Epoched {
                key: record.key,
                owner: record.owner,
                sent_start: record.sent_start,
                sent_end: record.sent_end,
                epoch,
            })
        })
        .collect()
}

fn by_key(epochs: &[Epoched]) -> HashMap<u32, Vec<Epoched>> {
    let mut by_key: HashMap<u32, Vec<Epoched>> = HashMap::new();
    for epoched in epochs {
        by_key.entry(epoched.key).or_default().push(*epoched);
    }
    by_key
}

/// The exact FIFO check. A LOCK.INFO snapshot shows the queue in the server's order; the owners
/// in it must be answered in that order (grants in queue order, or DONE together), and no wait
/// sent after the snapshot arrived may be answered before any of them. Returns (distinct waits
/// answered out of order, snapshots checked).
fn fifo_against_snapshots(epochs: &[Epoched], snapshots: &[QueueSnapshot]) -> (usize, usize) {
    let mut keys = by_key(epochs);
    let mut suffix_min: HashMap<u32, Vec<(u64, u8)>> = HashMap::new();
    for (key, waits) in keys.iter_mut() {
        waits.sort_unstable_by_key(|wait| wait.sent_start);
        let mut mins = vec![(u64::MAX, u8::MAX); waits.len() + 1];
        for index in (0..waits.len()).rev() {
            mins[index] = mins[index + 1].min(waits[index].epoch);
        }
        suffix_min.insert(*key, mins);
    }
    let owner_epoch: HashMap<u64, (u64, u8)> = epochs.iter().map(|wait| (wait.owner, wait.epoch)).collect();
    let mut out_of_order = std::collections::HashSet::new();
    let mut checked = 0;
    for snapshot in snapshots {
        let (Some(waits), Some(mins)) = (keys.get(&snapshot.key), suffix_min.get(&snapshot.key)) else {
            continue;
        };
        checked += 1;
        let mut latest: Option<(u64, u8)> = None;
        for owner in &snapshot.queue {
            let Some(epoch) = owner_epoch.get(owner) else {
                continue;
            };
            if latest.is_some_and(|latest| *epoch < latest) {
                out_of_order.insert(*owner);
            }
            latest = latest.max(Some(*epoch));
        }
        let Some(latest) = latest else {
            continue;
        };
        let first_new = waits.partition_point(|wait| wait.sent_start <= snapshot.at);
        if mins[first_new] < latest {
            for wait in &waits[first_new..] {
                if wait.epoch < latest {
                    out_of_order.insert(wait.owner);
                }
            }
        }
    }
    (out_of_order.len(), checked)
}

/// The client-side view: if A's WAIT was fully sent before B's started (by more than a gap), was A
/// answered later than B? Not a FIFO test by itself: on a busy machine the server may read B's
/// socket before A's. Returns (inversions with any gap, with sends ≥ 1 ms apart).
fn send_order_inversions(epochs: &[Epoched]) -> (u64, u64) {
    let keys = by_key(epochs);
    let count = |gap: u64| {
        let mut inversions = 0;
        for waits in keys.values() {
            let mut by_start = waits.clone();
            by_start.sort_unstable_by_key(|wait| wait.sent_start);
            let mut by_end = waits.clone();
            by_end.sort_unstable_by_key(|wait| wait.sent_end);
            let mut next = 0;
            let mut latest: Option<(u64, u8)> = None;
            for wait in &by_start {
                while next < by_end.len() && by_end[next].sent_end + gap < wait.sent_start {
                    latest = latest.max(Some(by_end[next].epoch));
                    next += 1;
                }
                if latest.is_some_and(|latest| wait.epoch < latest) {
                    inversions += 1;
                }
            }
        }
        inversions
    };
    if std::env::var_os("BATON_BENCH_DEBUG").is_some() {
        for ms in [2u64, 4, 8, 16, 32] {
            note(format!("send-order inversions with sends >= {ms} ms apart: {}", count(ms * 1_000_000)));
        }
    }
    (count(0), count(1_000_000))
}

struct QueueSnapshot {
    key: u32,
    /// now_ns() when the reply arrived: the state it shows existed before then.
    at: u64,
    queue: Vec<u64>,
}

/// Every 5 ms, reads every key's queue with LOCK.INFO (baton) until `end`. Against Redis it sends
/// the same number of GETs, so both servers carry the same observer load.
async fn observe_queues(mut conn: Conn, target: Target, keys: usize, end: u64) -> Res<Vec<QueueSnapshot>> {
    let names: Vec<String> = (0..keys).map(|key| format!("contended:{key}")).collect();
    let mut snapshots = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while now_ns() < end {
        tick.tick().await;
        for name in &names {
            match target {
                Target::Baton => conn.cmd(&[b"LOCK.INFO", name.as_bytes()]),
                Target::Redis => conn.cmd(&[b"GET", name.as_bytes()]),
            }
        }
        conn.flush().await?;
        for key in 0..keys {
            let reply = conn.read().await?;
            let at = now_ns();
            if target == Target::Redis {
                continue;
            }
            let Resp::Array(items) = &reply else {
                return fail(format!("LOCK.INFO answered {reply}"));
            };
            let queue = items
                .chunks(2)
                .find(|pair| pair.len() == 2 && pair[0].bulk_is("queue"))
                .map(|pair| match &pair[1] {
                    Resp::Array(owners) => owners
                        .iter()
                        .filter_map(|owner| match owner {
                            Resp::Bulk(name) => parse_owner(name),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                })
                .unwrap_or_default();
            if !queue.is_empty() {
                snapshots.push(QueueSnapshot { key: key as u32, at, queue });
            }
        }
    }
    Ok(snapshots)
}

struct ContendedClient {
    client: usize,
    settings: ContendedSettings,
    measure_from: u64,
    end: u64,
    cmd: Conn,
    sub: Option<Conn>,
    sha: Bytes,
}

impl ContendedClient {
    async fn run(mut self) -> Res<ContendedOut> {
        let key_index = (self.client % self.settings.keys) as u32;
        let key = format!("contended:{key_index}");
        let channel = format!("{key}:released");
        let timeout = self.settings.wait_timeout_ms.to_string();
        let mut rng = Rng::new(self.client as u64 + 1);
        let mut out = ContendedOut { hist: Some(new_hist()), ..ContendedOut::default() };
        let mut attempt = 0;
        loop {
            let sent_start = now_ns();
            if sent_start >= self.end {
                break;
            }
            attempt += 1;
            let id = owner_id(self.client, attempt);
            let owner = owner_name(id);
            let (answer, sent_end) = match &mut self.sub {
                None => {
                    self.cmd.cmd(&[b"LOCK.WAIT", key.as_bytes(), owner.as_bytes(), timeout.as_bytes()]);
                    self.cmd.flush().await?;
                    let sent_end = now_ns();
                    let reply = self.cmd.read().await?;
                    (baton_answer(&reply)?, sent_end)
                }
                Some(sub) => {
                    let limit = Duration::from_millis(self.settings.wait_timeout_ms);
                    (redis_wait(&mut self.cmd, sub, key.as_bytes(), owner.as_bytes(), limit).await?, sent_start)
                }
            };
            let answered = now_ns();
            let waited = answered - sent_start;
            out.max_wait = out.max_wait.max(waited);
            let measured = sent_start >= self.measure_from;
            match answer {
                None => out.timeouts += 1,
                Some(Answer::Granted(token)) => {
                    let failure = rng.percent(self.settings.failure_pct);
                    let verdict: &[u8] = if failure { b"FAILURE" } else { b"SUCCESS" };
                    if self.sub.is_none() {
                        let token = token.to_string();
                        let reply = self
                            .cmd
                            .call(&[b"LOCK.UNLOCK", key.as_bytes(), owner.as_bytes(), token.as_bytes(), verdict])
                            .await?;
                        if !matches!(reply, Resp::Int(_)) {
                            return fail(format!("LOCK.UNLOCK answered {reply}"));
                        }
                        out.grants.push((id, token.parse()?));
                    } else {
                        let message = format!("{owner} {}", if failure { "F" } else { "S" });
                        let reply = self
                            .cmd
                            .call(&[
                                b"EVALSHA",
                                &self.sha,
                                b"1",
                                key.as_bytes(),
                                owner.as_bytes(),
                                channel.as_bytes(),
                                message.as_bytes(),
                            ])
                            .await?;
                        expect_int(&reply, 1, "unlock script")?;
                    }
                    if measured {
                        out.acquired += 1;
                    }
                }
                Some(Answer::DoneBy(_)) => {
                    if measured {
                        out.done += 1;
                    }
                }
            }
            if let Some(answer) = answer {
                if measured {
                    out.ops += 1;
                    if let Some(hist) = &mut out.hist {
                        hist.saturating_record(waited);
                    }
                }
                if self.sub.is_none() {
                    out.records.push(WaitRecord { key: key_index, owner: id, sent_start, sent_end, answer });
                }
            }
        }
        Ok(out)
    }
}

fn baton_answer(reply: &Resp) -> Res<Option<Answer>> {
    match reply {
        Resp::Nil => Ok(None),
        Resp::Array(items) if items.first().is_some_and(|item| item.bulk_is("ACQUIRED")) => {
            Ok(Some(Answer::Granted(token_of(reply)?)))
        }
        Resp::Array(items) if items.len() == 3 && items[0].bulk_is("DONE") => match &items[1] {
            Resp::Bulk(finisher) => match parse_owner(finisher) {
                Some(id) => Ok(Some(Answer::DoneBy(id))),
                None => fail(format!("DONE from an unknown finisher: {reply}")),
            },
            _ => fail(format!("bad DONE reply: {reply}")),
        },
        other => fail(format!("LOCK.WAIT answered {other}")),
    }
}

/// The Redis recipe's "wait": SET NX (GET tells who holds it); if held, wait on the key's channel
/// for that holder's release: "S" means it succeeded (DONE), "F" means retry. None on timeout.
async fn redis_wait(cmd: &mut Conn, sub: &mut Conn, key: &[u8], owner: &[u8], limit: Duration) -> Res<Option<Answer>> {
    let deadline = Instant::now() + limit;
    loop {
        let holder = match cmd.call(&[b"SET", key, owner, b"NX", b"GET", b"PX", b"30000"]).await? {
            Resp::Nil => return Ok(Some(Answer::Granted(0))),
            Resp::Bulk(holder) => holder,
            other => return fail(format!("SET NX GET answered {other}")),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(message) = sub.read_within(left).await? else {
                return Ok(None);
            };
            let Resp::Array(items) = &message else {
                return fail(format!("subscriber got {message}"));
            };
            let Some(Resp::Bulk(payload)) = items.get(2) else {
                continue;
            };
            let Some(split) = payload.iter().rposition(|&b| b == b' ') else {
                continue;
            };
            if payload[..split] != holder[..] {
                continue;
            }
            if &payload[split + 1..] == b"S" {
                return Ok(Some(Answer::DoneBy(0)));
            }
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// W6: memory per held lock

async fn memory(common: &Common, pid: u32, keys: usize, connections: usize, batch: usize) -> Res<()> {
    let target = common.target;
    let conns = open_many(common, connections).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kb(pid)?;
    let per_conn = keys.div_ceil(connections);
    let mut set = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        let from = index * per_conn;
        let to = ((index + 1) * per_conn).min(keys);
        set.spawn(memory_conn(conn, target, from, to, batch));
    }
    let started = now_ns();
    let conns = join_all(set).await?;
    let elapsed = (now_ns() - started) as f64 / 1e9;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kb(pid)?;
    drop(conns);
    note(format!(
        "{target}: {keys} held locks in {elapsed:.1} s; RSS {before} kB → {after} kB ({:.0} B per lock)",
        (after.saturating_sub(before) * 1024) as f64 / keys as f64
    ));
    let workload = format!(
        "W6 memory, {} held locks (baton: LOCK.TRY k o PX 3600000; Redis: SET k o NX PX 3600000)",
        thousands(keys as f64)
    );
    emit(
        "w6.lock",
        target,
        (after.saturating_sub(before) * 1024) as f64 / keys as f64,
        Better::Lower,
        &workload,
        "RSS growth per held lock (B)",
    );
    Ok(())
}

/// Takes keys `from..to`; returns the connection so it stays open (its locks stay held) until
/// RSS is measured.
async fn memory_conn(mut conn: Conn, target: Target, from: usize, to: usize, batch: usize) -> Res<Conn> {
    let mut index = from;
    while index < to {
        let upto = (index + batch).min(to);
        for key in index..upto {
            let key = format!("mem:{key}");
            match target {
                Target::Baton => conn.cmd(&[b"LOCK.TRY", key.as_bytes(), b"o", b"PX", b"3600000"]),
                Target::Redis => conn.cmd(&[b"SET", key.as_bytes(), b"o", b"NX", b"PX", b"3600000"]),
            }
        }
        conn.flush().await?;
        for _ in index..upto {
            let reply = conn.read().await?;
            match target {
                Target::Baton => {
                    token_of(&reply)?;
                }
                Target::Redis => expect_ok(&reply, "SET NX")?,
            }
        }
        index = upto;
    }
    Ok(conn)
}

// ---------------------------------------------------------------------------------------------
// Table

struct Row {
    id: String,
    workload: String,
    metric: String,
    better: String,
    baton: Option<f64>,
    redis: Option<f64>,
}

fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if rounded < 0 { format!("-{out}") } else { out }
}

fn number(value: Option<f64>) -> String {
    match value {
        None => "—".to_owned(),
        Some(value) if value.abs() >= 1000.0 => thousands(value),
        Some(value) if value.abs() >= 100.0 => format!("{value:.0}"),
        Some(value) if value.abs() >= 10.0 => format!("{value:.1}"),
        Some(value) if value == value.trunc() => format!("{value:.0}"),
        Some(value) => format!("{value:.2}"),
    }
}

fn table(files: &[PathBuf]) -> Res<()> {
    let mut text = String::new();
    if files.is_empty() {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
    }
    for file in files {
        text.push_str(&std::fs::read_to_string(file)?);
        text.push('\n');
    }
    let mut rows: Vec<Row> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 7 || fields[0] != "RESULT" {
            continue;
        }
        let value: f64 = fields[3].parse()?;
        let key = (fields[1], fields[5]);
        let index = match rows.iter().position(|row| (row.id.as_str(), row.workload.as_str()) == key) {
            Some(index) => index,
            None => {
                rows.push(Row {
                    id: fields[1].to_owned(),
                    workload: fields[5].to_owned(),
                    metric: fields[6].to_owned(),
                    better: fields[4].to_owned(),
                    baton: None,
                    redis: None,
                });
                rows.len() - 1
            }
        };
        match fields[2] {
            "baton" => rows[index].baton = Some(value),
            "redis" => rows[index].redis = Some(value),
            other => return fail(format!("unknown target {other}")),
        }
    }
    println!("| Workload | Metric | baton | Redis | baton ÷ Redis |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let mut last_workload = "";
    for row in &rows {
        let ratio = match (row.baton, row.redis) {
            (Some(baton), Some(redis)) if redis != 0.0 => format!("{:.2}×", baton / redis),
            _ => "—".to_owned(),
        };
        let arrow = match row.better.as_str() {
            "higher" => " ↑",
            "lower" => " ↓",
            _ => "",
        };
        let workload = if row.workload == last_workload { "" } else { row.workload.as_str() };
        last_workload = &row.workload;
        println!("| {workload} | {}{arrow} | {} | {} | {ratio} |", row.metric, number(row.baton), number(row.redis));
    }
    println!();
    println!("↑ higher is better, ↓ lower is better. Redis runs the equivalent recipe described for each workload.");
    println!();
    targets(&rows);
    Ok(())
}

/// The targets, each with its figures and whether it is met.
fn targets(rows: &[Row]) {
    let find = |id: &str| rows.iter().find(|row| row.id == id);
    let both = |id: &str| find(id).and_then(|row| Some((row.baton?, row.redis?)));
    let mut lines: Vec<(String, String, &str)> = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for (id, what) in [
        ("w1.p1.rate", "W1 unpipelined cycles/s ≥ 1.0× Redis"),
        ("w1.p16.rate", "W1 pipelined (16) cycles/s ≥ 1.0× Redis"),
        ("w2.p1.rps", "W2 redis-benchmark -P 1 requests/s ≥ 1.0× Redis"),
        ("w2.p16.rps", "W2 redis-benchmark -P 16 requests/s ≥ 1.0× Redis"),
    ] {
        if let Some((baton, redis)) = both(id) {
            let ratio = baton / redis;
            lines.push((
                what.to_owned(),
                format!("{} vs {} = {ratio:.2}×", number(Some(baton)), number(Some(redis))),
                verdict(ratio >= 1.0),
            ));
        }
    }
    let ping = find("w3.ping.p50").and_then(|row| row.baton);
    if let (Some(ping), Some((baton, redis))) = (ping, both("w3.handoff.lat.p50")) {
        let ratio = baton / ping;
        lines.push((
            "W3 hand-off p50 ≤ 1.5× PING p50 (baton, same run)".to_owned(),
            format!("{baton:.1} µs vs PING {ping:.1} µs = {ratio:.2}×"),
            verdict(ratio <= 1.5),
        ));
        let ratio = redis / baton;
        lines.push((
            "W3 hand-off p50 ≥ 2.5× lower than the Redis recipe".to_owned(),
            format!("Redis {redis:.1} µs ÷ baton {baton:.1} µs = {ratio:.2}×"),
            verdict(ratio >= 2.5),
        ));
    }
    if let Some((baton, redis)) = both("w4.n10000.last") {
        let ratio = baton / redis;
        let status = if ratio <= 0.5 {
            "met (and the aim of ½)"
        } else if ratio <= 1.0 {
            "met (aim of ½ missed)"
        } else {
            "MISSED"
        };
        lines.push((
            "W4 last of 10,000 waiters answered no later than the last of 10,000 Redis subscribers (aim: half)"
                .to_owned(),
            format!("{baton:.2} ms vs {redis:.2} ms = {ratio:.2}×"),
            status,
        ));
    }
    if let Some((baton, redis)) = both("w6.lock") {
        let ratio = baton / redis;
        lines.push((
            "W6 memory per held lock ≤ Redis".to_owned(),
            format!("{baton:.0} B vs {redis:.0} B = {ratio:.2}×"),
            verdict(ratio <= 1.0),
        ));
    }
    if let Some(fifo) = find("w5.fifo").and_then(|row| row.baton) {
        lines.push(("W5 FIFO violations = 0".to_owned(), format!("{fifo:.0}"), verdict(fifo == 0.0)));
    }
    if lines.is_empty() {
        return;
    }
    println!("| Target | Figures | Status |");
    println!("| --- | --- | --- |");
    for (what, figures, status) in lines {
        println!("| {what} | {figures} | {status} |");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_and_waits_for_complete_ones() {
        let buf = b"*2\r\n$8\r\nACQUIRED\r\n:42\r\n+OK\r\n";
        let (reply, used) = resp_parse(buf, 0).unwrap().unwrap();
        assert_eq!(token_of(&reply).unwrap(), 42);
        assert_eq!(resp_parse(buf, used).unwrap().unwrap().0, Resp::Simple(Bytes::from_static(b"OK")));
        assert!(resp_parse(b"*2\r\n$8\r\nACQUI", 0).unwrap().is_none());
        assert_eq!(resp_parse(b"$-1\r\n", 0).unwrap().unwrap().0, Resp::Nil);
        assert_eq!(resp_parse(b"*-1\r\n", 0).unwrap().unwrap().0, Resp::Nil);
        assert!(resp_parse(b"?\r\n", 0).is_err());
    }

    #[test]
    fn owner_names_round_trip() {
        let id = owner_id(63, 123_456);
        assert_eq!(parse_owner(owner_name(id).as_bytes()), Some(id));
        assert_eq!(parse_owner(b"hw1"), None);
    }

    fn wait(owner: u64, sent: u64, epoch: (u64, u8)) -> Epoched {
        Epoched { key: 0, owner, sent_start: sent, sent_end: sent + 1, epoch }
    }

    #[test]
    fn snapshot_check_flags_only_real_violations() {
        // Queue [1, 2] seen at t=10; owner 3 sent at t=20.
        let snapshot = QueueSnapshot { key: 0, at: 10, queue: vec![1, 2] };
        let fifo = [wait(1, 1, (100, 0)), wait(2, 2, (101, 0)), wait(3, 20, (102, 0))];
        assert_eq!(fifo_against_snapshots(&fifo, std::slice::from_ref(&snapshot)), (0, 1));
        // DONE together is in order.
        let done = [wait(1, 1, (99, 1)), wait(2, 2, (99, 1)), wait(3, 20, (99, 1))];
        assert_eq!(fifo_against_snapshots(&done, std::slice::from_ref(&snapshot)).0, 0);
        // 2 granted before 1.
        let swapped = [wait(1, 1, (101, 0)), wait(2, 2, (100, 0)), wait(3, 20, (102, 0))];
        assert_eq!(fifo_against_snapshots(&swapped, std::slice::from_ref(&snapshot)).0, 1);
        // The newcomer 3 granted before 2.
        let jumped = [wait(1, 1, (100, 0)), wait(2, 2, (102, 0)), wait(3, 20, (101, 0))];
        assert_eq!(fifo_against_snapshots(&jumped, std::slice::from_ref(&snapshot)).0, 1);
    }

    #[test]
    fn send_order_inversions_need_the_gap() {
        let waits = [wait(1, 0, (101, 0)), wait(2, 500_000, (100, 0)), wait(3, 5_000_000, (99, 1))];
        let (any, spaced) = send_order_inversions(&waits);
        assert_eq!((any, spaced), (2, 1));
    }
}
