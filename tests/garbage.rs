//! Garbage in, nothing breaks: random and mutated frames over real sockets to the real binary.
//!
//! - `garbage_never_breaks_the_server` (property test): each case writes random bytes, mutated
//!   valid requests or mixes of both, in random pieces, then closes its write side. The server
//!   must answer only well-formed RESP (errors in Redis style), close the connection (never hang
//!   on it), stay alive, and keep answering another client.
//! - `a_garbage_flood_keeps_memory_bounded`: about 50 MB of garbage (`BATON_GARBAGE_MB`) over
//!   several connections at once while a canary client keeps being served; the server's resident
//!   memory (VmRSS) grows by less than a generous bound.
//! - `limits_answer_with_redis_style_errors`: every size limit, at and past the limit.

// A test binary has no outside users: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "support/baton.rs"]
mod baton_process;

use baton_process::start_baton;
use baton_testkit::pieces::split;
use baton_testkit::reply::{parse, parse_stream};
use baton_testkit::{Resp, encode};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------------------
// The server process

const LIMIT_FLAGS: &[&str] = &[
    "--max-key-bytes",
    "16",
    "--max-result-bytes",
    "32",
    "--max-bulk-bytes",
    "1024",
    "--max-args",
    "16",
    "--max-inline-bytes",
    "256",
    "--max-query-buffer-bytes",
    "4096",
];

// ---------------------------------------------------------------------------------------------
// Talking to it

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// A request; arguments of mixed lengths coerce to `&[u8]` here.
fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    encode(args)
}

/// Checks a whole reply stream (well-formed RESP, every error with a Redis-style code) and returns
/// how many replies it holds; a reset connection may have cut the last one short.
fn check_replies(buf: &[u8], reset: bool) -> Result<usize, String> {
    let (replies, rest) = parse_stream(buf)?;
    if !rest.is_empty() && !reset {
        return Err(format!("incomplete reply at the end: {:?}", String::from_utf8_lossy(rest)));
    }
    if let Some(error) = replies.iter().find_map(Resp::error_without_code) {
        return Err(format!("error without a code: {error:?}"));
    }
    Ok(replies.len())
}

/// Reads until the server closes. Returns the bytes and whether the close was a reset.
fn read_to_close(stream: &mut TcpStream, within: Duration) -> Result<(Vec<u8>, bool), String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok((got, false)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => return Ok((got, true)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if Instant::now() > deadline {
            return Err(format!("connection still open after {within:?}; got {} bytes", got.len()));
        }
    }
}

/// A connection that must keep being served whatever the others send.
struct Canary {
    stream: TcpStream,
    rounds: u64,
}

impl Canary {
    fn new(addr: SocketAddr) -> Canary {
        Canary { stream: connect(addr), rounds: 0 }
    }

    fn reply(&mut self, request: &[u8]) -> Vec<u8> {
        self.stream.write_all(request).expect("canary write");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while parse(&got).expect("canary reply").is_none() {
            let n = self.stream.read(&mut buf).expect("canary is answered");
            assert!(n > 0, "the server closed the canary connection");
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// PING, then take and give back a lock of its own.
    fn check(&mut self) {
        let started = Instant::now();
        assert_eq!(self.reply(b"PING\r\n"), b"+PONG\r\n");
        let acquired = self.reply(&multibulk(&[b"LOCK.TRY", b"canary:key", b"canary"]));
        let text = String::from_utf8_lossy(&acquired).into_owned();
        let token = text.rsplit(':').next().and_then(|t| t.trim().parse::<u64>().ok()).expect("canary token");
        assert!(text.starts_with("*2\r\n$8\r\nACQUIRED\r\n:"), "canary got {text:?}");
        let unlock = self.reply(&multibulk(&[
            b"LOCK.UNLOCK",
            b"canary:key",
            b"canary",
            token.to_string().as_bytes(),
            b"SUCCESS",
        ]));
        assert_eq!(unlock, b":0\r\n");
        assert!(started.elapsed() < Duration::from_secs(2), "canary round took {:?}", started.elapsed());
        self.rounds += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Garbage

/// Valid requests the mutations start from (no CLIENT KILL: a mutated one could hit the canary).
fn templates() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        &[&b"LOCK.TRY"[..], b"k", b"o", b"PX", b"100", b"NOQUEUE"][..],
        &[b"LOCK.TRY", b"k", b"p"],
        &[b"LOCK.WAIT", b"k", b"q", b"5", b"PX", b"50"],
        &[b"LOCK.UNLOCK", b"k", b"o", b"1", b"SUCCESS", b"RESULT", b"r", b"KEEP", b"5"],
        &[b"LOCK.UNLOCK", b"k", b"o", b"1", b"FAILURE", b"REASON", b"why"],
        &[b"LOCK.EXTEND", b"k", b"o", b"1", b"100"],
        &[b"LOCK.CANCEL", b"k", b"p"],
        &[b"LOCK.INFO", b"k"],
        &[b"PING", b"hello"],
        &[b"ECHO", b"x"],
        &[b"HELLO", b"3", b"SETNAME", b"g"],
        &[b"HELLO", b"2"],
        &[b"CLIENT", b"SETNAME", b"garbage"],
        &[b"CLIENT", b"INFO"],
        &[b"CLIENT", b"LIST"],
        &[b"CLIENT", b"SETINFO", b"LIB-NAME", b"x"],
        &[b"COMMAND", b"DOCS", b"lock.try"],
        &[b"COMMAND", b"INFO", b"client|list"],
        &[b"CONFIG", b"GET", b"*"],
        &[b"INFO", b"server"],
        &[b"SELECT", b"0"],
        &[b"AUTH", b"pw"],
        &[b"RESET"],
    ]
    .iter()
    .map(|args| multibulk(args))
    .collect();
    out.extend(
        [
            &b"LOCK.TRY k o PX 10\r\n"[..],
            b"LOCK.WAIT \"k\" 'o' 3\r\n",
            b"PING \"a\\x41\\n\" 'b\\'c'\n",
            b"\r\n\r\n",
            b"*0\r\n*-1\r\n",
        ]
        .iter()
        .map(|t| t.to_vec()),
    );
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    /// Replaces the digit run at (about) this position with a number.
    Number(usize, &'static str),
    Duplicate(usize, usize),
}

const HEADS: &[&[u8]] = &[b"*", b"$", b"*1\r\n$", b"*2\r\n$4\r\nPING\r\n$"];
const SPECIAL: &[u8] = b"\r\n*$\"'\\ 0-9:+\x00\xff";
const NUMBERS: &[&str] =
    &["0", "-1", "-0", "01", "99999999999999999999", "9223372036854775807", "4097", "1025", "17", ""];

fn mutate(mut frame: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        if frame.is_empty() {
            break;
        }
        let len = frame.len();
        match *mutation {
            Mutation::Flip(at, bits) => frame[at % len] ^= bits.max(1),
            Mutation::Insert(at, byte) => frame.insert(at % (len + 1), byte),
            Mutation::Delete(at) => {
                frame.remove(at % len);
            }
            Mutation::Number(at, number) => {
                let Some(start) = (0..len).map(|i| (at + i) % len).find(|&i| frame[i].is_ascii_digit()) else {
                    continue;
                };
                let end = (start..len).find(|&i| !frame[i].is_ascii_digit()).unwrap_or(len);
                frame.splice(start..end, number.bytes());
            }
            Mutation::Duplicate(at, span) => {
                let start = at % len;
                let end = (start + span % 64).min(len);
                let copy = frame[start..end].to_vec();
                frame.splice(end..end, copy);
            }
        }
    }
    frame
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (any::<usize>(), prop::sample::select(SPECIAL)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), prop::sample::select(NUMBERS)).prop_map(|(a, n)| Mutation::Number(a, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, s)| Mutation::Duplicate(a, s)),
    ]
}

fn garbage_strategy() -> impl Strategy<Value = Vec<u8>> {
    let count = templates().len();
    let mutated = || {
        (0..count, prop::collection::vec(mutation_strategy(), 1..6))
            .prop_map(|(t, mutations)| mutate(templates()[t].clone(), &mutations))
    };
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..600),
        4 => mutated(),
        3 => prop::collection::vec(prop_oneof![mutated(), (0..count).prop_map(|t| templates()[t].clone())], 1..8)
            .prop_map(|parts| parts.concat()),
        1 => (prop::sample::select(HEADS), prop::sample::select(NUMBERS))
            .prop_map(|(head, n)| [head, n.as_bytes(), b"\r\n"].concat()),
    ]
}

fn send_garbage(addr: SocketAddr, garbage: &[u8], pieces: &[usize]) -> Result<(), String> {
    let mut stream = connect(addr);
    for piece in split(garbage, pieces.iter().copied().cycle()) {
        if stream.write_all(piece).is_err() {
            break; // The server closed on a protocol error: fine.
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    let (replies, reset) = read_to_close(&mut stream, Duration::from_secs(5))?;
    check_replies(&replies, reset).map_err(|e| format!("{e}; replies: {:?}", String::from_utf8_lossy(&replies)))?;
    Ok(())
}

/// One server (with small limits) for every case; its guard lives in the test, so the process is
/// killed when the test ends, however it ends.
#[test]
fn garbage_never_breaks_the_server() {
    use proptest::test_runner::TestRunner;
    use std::cell::RefCell;
    let cases = std::env::var("BATON_GARBAGE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let baton = RefCell::new(start_baton(LIMIT_FLAGS, "warn,baton::server=info"));
    let addr = baton.borrow().addr;
    let canary = RefCell::new(Canary::new(addr));
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    });
    let strategy = (garbage_strategy(), prop::collection::vec(1usize..64, 1..8));
    let outcome = runner.run(&strategy, |(garbage, pieces)| {
        let result = send_garbage(addr, &garbage, &pieces);
        prop_assert!(baton.borrow_mut().alive(), "the server died on {:?}", String::from_utf8_lossy(&garbage));
        if let Err(error) = result {
            return Err(TestCaseError::fail(format!("{error}\ngarbage: {:?}", String::from_utf8_lossy(&garbage))));
        }
        canary.borrow_mut().check();
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    println!("garbage: {cases} cases, canary served {} rounds", canary.borrow().rounds);
}

// ---------------------------------------------------------------------------------------------
// The flood

/// One kind of garbage, about `size` bytes of it.
fn flood_chunk(rng: &mut StdRng, size: usize) -> Vec<u8> {
    match rng.random_range(0..6) {
        // Random bytes: inline "commands" and protocol errors.
        0 => (0..size).map(|_| rng.random()).collect(),
        // Requests at the size limits, answered (PING echoes its argument).
        1 => {
            let arg: Vec<u8> = (0..1024).map(|_| rng.random_range(b'a'..=b'z')).collect();
            multibulk(&[b"PING", &arg]).repeat(size / 1040 + 1)
        }
        // An incomplete request that outgrows the query buffer.
        2 => {
            let mut out = b"*16\r\n".to_vec();
            while out.len() < size.min(64 * 1024) {
                out.extend_from_slice(b"$1000\r\n");
                out.extend(std::iter::repeat_n(b'x', 1000));
                out.extend_from_slice(b"\r\n");
            }
            out
        }
        // Lengths far beyond the limits.
        3 => {
            const HUGE: [&[u8]; 3] = [b"*999999999\r\n", b"*1\r\n$999999999\r\n", b"*2\r\n$4\r\nPING\r\n$-7\r\n"];
            HUGE[rng.random_range(0..HUGE.len())].to_vec()
        }
        // A line that never ends.
        4 => std::iter::repeat_n(b'A', size.min(64 * 1024)).collect(),
        // Mutated valid requests.
        _ => {
            let templates = templates();
            let mut out = Vec::new();
            while out.len() < size.min(16 * 1024) {
                let mut frame = templates[rng.random_range(0..templates.len())].clone();
                for _ in 0..rng.random_range(0..3) {
                    let at = rng.random_range(0..frame.len());
                    frame[at] = SPECIAL[rng.random_range(0..SPECIAL.len())];
                }
                out.extend(frame);
            }
            out
        }
    }
}

fn flood(addr: SocketAddr, seed: u64, budget: u64, sent: &AtomicU64, stop: &AtomicBool) {
    let mut rng = StdRng::seed_from_u64(seed);
    while sent.load(Ordering::Relaxed) < budget && !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr) else { continue };
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let reader = stream.try_clone().expect("clone");
        // Drain replies so the server never stalls on output.
        let drain = std::thread::spawn(move || {
            let mut reader = reader;
            let _ = reader.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 64 * 1024];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        });
        for _ in 0..rng.random_range(1..20) {
            let size = rng.random_range(16..256 * 1024);
            let chunk = flood_chunk(&mut rng, size);
            if stream.write_all(&chunk).is_err() {
                break;
            }
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = stream.shutdown(Shutdown::Both);
        let _ = drain.join();
    }
}

#[test]
fn a_garbage_flood_keeps_memory_bounded() {
    let megabytes: u64 = std::env::var("BATON_GARBAGE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let mut baton = start_baton(LIMIT_FLAGS, "warn,baton::server=info");
    let addr = baton.addr;
    let mut canary = Canary::new(addr);
    // Warm up allocator and runtime with a little of the same, then take the baseline.
    let warm = AtomicU64::new(0);
    flood(addr, 1, 2 << 20, &warm, &AtomicBool::new(false));
    canary.check();
    std::thread::sleep(Duration::from_millis(200));
    let before = baton.rss_kb();

    let budget = megabytes << 20;
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..6u64)
        .map(|i| {
            let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
            std::thread::spawn(move || flood(addr, 100 + i, budget, &sent, &stop))
        })
        .collect();
    let mut peak = before;
    while workers.iter().any(|w| !w.is_finished()) {
        if started.elapsed() > Duration::from_secs(90) {
            stop.store(true, Ordering::Relaxed);
        }
        canary.check();
        peak = peak.max(baton.rss_kb());
        assert!(baton.alive(), "the server died during the flood");
        std::thread::sleep(Duration::from_millis(20));
    }
    for worker in workers {
        worker.join().expect("flood worker");
    }
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    canary.check();
    let after = baton.rss_kb();
    let total = sent.load(Ordering::Relaxed);
    println!(
        "garbage flood: {} MB in {elapsed:?} over 6 connections at a time; canary served {} rounds; \
         VmRSS {before} kB before, peak {peak} kB, {after} kB after",
        total >> 20,
        canary.rounds
    );
    assert!(total >= budget.min(10 << 20), "only {total} bytes sent");
    // Generous: every buffer is bounded by the limits (4 KiB of query, one reply batch).
    assert!(after < before + 48 * 1024, "VmRSS grew from {before} kB to {after} kB");
    assert!(peak < before + 96 * 1024, "VmRSS peaked at {peak} kB from {before} kB");
}

// ---------------------------------------------------------------------------------------------
// Limits

fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(request).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while check_replies(&got, false).is_err() || got.is_empty() {
        let n = stream.read(&mut buf).expect("a reply");
        assert!(n > 0, "closed without a reply");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// The request is refused with `error` and the connection closed.
fn refused_and_closed(addr: SocketAddr, request: &[u8], error: &str) {
    let mut stream = connect(addr);
    let _ = stream.write_all(request);
    let (got, _) = read_to_close(&mut stream, Duration::from_secs(5)).expect("closed");
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("-{error}\r\n"),
        "for {:?}",
        String::from_utf8_lossy(&request[..request.len().min(80)])
    );
}

#[test]
fn limits_answer_with_redis_style_errors() {
    let baton = start_baton(LIMIT_FLAGS, "warn,baton::server=info");
    let addr = baton.addr;
    let key16 = [b'k'; 16];
    let key17 = [b'k'; 17];
    // A key and owner of exactly the limit, held on a connection that stays open.
    let mut holder = connect(addr);
    holder.write_all(&multibulk(&[b"LOCK.TRY", &key16, &key16])).expect("write");
    let mut buf = [0u8; 256];
    let n = holder.read(&mut buf).expect("read");
    assert!(buf[..n].starts_with(b"*2\r\n$8\r\nACQUIRED"), "{}", String::from_utf8_lossy(&buf[..n]));
    // Argument errors: answered, the connection stays usable.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (multibulk(&[b"LOCK.TRY", &key17, b"o"]), "-ERR key is longer than the limit of 16 bytes\r\n"),
        (multibulk(&[b"LOCK.WAIT", b"k", &key17, b"0"]), "-ERR owner is longer than the limit of 16 bytes\r\n"),
        (multibulk(&[b"LOCK.INFO", &key17]), "-ERR key is longer than the limit of 16 bytes\r\n"),
        (multibulk(&[b"LOCK.TRY", b"", b"o"]), "-ERR key must not be empty\r\n"),
        (
            multibulk(&[b"LOCK.UNLOCK", b"k", b"o", b"1", b"SUCCESS", b"RESULT", &[b'r'; 33]]),
            "-ERR result is longer than the limit of 32 bytes\r\n",
        ),
        (
            multibulk(&[b"LOCK.UNLOCK", b"k", b"o", b"1", b"FAILURE", b"REASON", &[b'r'; 33]]),
            "-ERR reason is longer than the limit of 32 bytes\r\n",
        ),
    ];
    for (request, error) in &cases {
        let mut both = request.clone();
        both.extend_from_slice(b"PING\r\n");
        assert_eq!(String::from_utf8_lossy(&exchange_n(addr, &both, 2)), format!("{error}+PONG\r\n"));
    }
    // At the limits: accepted.
    let at_limit = exchange(addr, &multibulk(&[b"LOCK.UNLOCK", b"k", b"o", b"1", b"SUCCESS", b"RESULT", &[b'r'; 32]]));
    assert!(at_limit.starts_with(b"-NOLOCK"), "{}", String::from_utf8_lossy(&at_limit));
    let sixteen: Vec<&[u8]> = std::iter::once(&b"INFO"[..]).chain(std::iter::repeat_n(&b"server"[..], 15)).collect();
    let info16 = exchange(addr, &multibulk(&sixteen));
    assert!(info16.starts_with(b"$"), "16 arguments are fine: {}", String::from_utf8_lossy(&info16));
    let bulk1024 = vec![b'b'; 1024];
    let echoed = exchange(addr, &multibulk(&[b"ECHO", &bulk1024]));
    assert_eq!(echoed.len(), 1024 + 9);
    let inline = format!("ECHO {}\r\n", "i".repeat(200));
    assert_eq!(exchange(addr, inline.as_bytes()), format!("$200\r\n{}\r\n", "i".repeat(200)).into_bytes());

    // Framing errors: answered, then the connection is closed (as Redis does).
    let seventeen: Vec<&[u8]> = std::iter::once(&b"PING"[..]).chain(std::iter::repeat_n(&b"a"[..], 16)).collect();
    refused_and_closed(addr, &multibulk(&seventeen), "ERR Protocol error: invalid multibulk length");
    refused_and_closed(addr, b"*2\r\n$4\r\nECHO\r\n$1025\r\n", "ERR Protocol error: invalid bulk length");
    refused_and_closed(addr, b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length");
    refused_and_closed(addr, b"*abc\r\n", "ERR Protocol error: invalid multibulk length");
    refused_and_closed(addr, b"*1\r\n+PING\r\n", "ERR Protocol error: expected '$', got '+'");
    refused_and_closed(addr, "x".repeat(300).as_bytes(), "ERR Protocol error: too big inline request");
    refused_and_closed(addr, b"PING \"unbalanced\r\n", "ERR Protocol error: unbalanced quotes in request");
    let mut big = b"*16\r\n".to_vec();
    for _ in 0..5 {
        big.extend_from_slice(b"$1000\r\n");
        big.extend(std::iter::repeat_n(b'x', 1000));
        big.extend_from_slice(b"\r\n");
    }
    refused_and_closed(addr, &big, "ERR Protocol error: query buffer limit exceeded");
    // Requests piled up behind a blocked LOCK.WAIT count too; the waiter leaves the line.
    let mut blocked = multibulk(&[b"LOCK.WAIT", &key16, b"piler", b"0"]);
    for _ in 0..200 {
        blocked.extend(multibulk(&[b"PING", &[b'p'; 100]]));
    }
    refused_and_closed(addr, &blocked, "ERR Protocol error: query buffer limit exceeded");
    let info = exchange(addr, &multibulk(&[b"LOCK.INFO", &key16]));
    let info = String::from_utf8_lossy(&info);
    assert!(info.contains("$7\r\nwaiters\r\n:0\r\n"), "the piler left the line: {info}");
    drop(holder);
}

/// Sends `request` and reads until `frames` complete replies have come.
fn exchange_n(addr: SocketAddr, request: &[u8], frames: usize) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(request).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while check_replies(&got, false).map_or(true, |n| n < frames) {
        let n = stream.read(&mut buf).expect("a reply");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

// ---------------------------------------------------------------------------------------------
// The decoder alone (the fuzz target's property, on stable, in CI)

mod decoder {
    use baton::codec::{CodecError, Limits, Request, RespCodec};
    use baton_testkit::decode::decode_pieces;

    const WIDE: Limits =
        Limits { max_args: 1 << 20, max_bulk_bytes: 1 << 24, max_inline_bytes: 1 << 24, max_buffer_bytes: 1 << 24 };

    /// Every request decoded from `pieces` fed in order, then the protocol error if any.
    pub fn run<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Request>, Option<String>) {
        let decoded = decode_pieces(&mut RespCodec::new(WIDE), pieces);
        let error = decoded.error.map(|error| match error {
            CodecError::Protocol(text) => text.into_owned(),
            CodecError::Io(err) => panic!("scanner and redis-protocol disagree: {err}"),
        });
        (decoded.items, error)
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    })]

    /// Decoding a byte stream in pieces gives exactly what decoding it at once gives.
    #[test]
    fn decoding_in_pieces_matches_decoding_at_once(
        garbage in garbage_strategy(),
        pieces in prop::collection::vec(1usize..16, 1..8),
    ) {
        let whole = decoder::run([&garbage[..]]);
        let cut = decoder::run(split(&garbage, pieces.iter().copied().cycle()));
        prop_assert_eq!(whole, cut);
    }
}
