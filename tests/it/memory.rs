//! Memory a client can make the server hold: Redis's caps on requests before AUTH, requests
//! queued behind a blocked LOCK.WAIT counted at what they hold, `--maxmemory` refusing what adds
//! state while releases go on, and INFO's `# Memory` section.

use std::time::{Duration, Instant};

use crate::common::{LockInfo, Out, POLL_DEADLINE, Raw, Resp, args, cmd_out, read_out, start, start_wait, start_with};

const UNAUTHENTICATED_MULTIBULK: &str = "ERR Protocol error: unauthenticated multibulk length";
const UNAUTHENTICATED_BULK: &str = "ERR Protocol error: unauthenticated bulk length";
const QUERY_BUFFER: &str = "ERR Protocol error: query buffer limit exceeded";
const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

fn error_line(text: &str) -> Vec<u8> {
    format!("-{text}\r\n").into_bytes()
}

/// `name:value` lines of an INFO reply, in order.
fn info_fields(info: &str) -> Vec<(String, String)> {
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

fn info_number(info: &str, name: &str) -> u64 {
    let fields = info_fields(info);
    let value = fields.iter().find(|(field, _)| field == name).unwrap_or_else(|| panic!("INFO has no {name}: {info}"));
    value.1.parse().unwrap_or_else(|_| panic!("{name} is not a number: {info}"))
}

/// Sends `request` until its reply satisfies `accept`, for up to [`POLL_DEADLINE`].
async fn poll_reply(raw: &mut Raw, request: &[Vec<u8>], what: &str, accept: impl Fn(&Resp) -> bool) {
    let deadline = Instant::now() + POLL_DEADLINE;
    loop {
        let reply = raw.cmd(request.to_vec()).await;
        if accept(&reply) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last reply {reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn before_auth_large_requests_are_refused_and_the_connection_closed() {
    let server = start_with(|config| config.requirepass = Some("pw".into())).await;
    let mut raw = Raw::connect(server.addr).await;
    raw.write(b"*11\r\n").await;
    assert_eq!(raw.read_until_closed().await, error_line(UNAUTHENTICATED_MULTIBULK));

    // The bulk header alone is enough: the 16 KiB + 1 bytes are never waited for.
    let mut raw = Raw::connect(server.addr).await;
    raw.write(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n").await;
    assert_eq!(raw.read_until_closed().await, error_line(UNAUTHENTICATED_BULK));

    // Up to the caps, a request is answered as usual.
    let mut raw = Raw::connect(server.addr).await;
    let largest = "p".repeat(16 * 1024);
    assert!(raw.cmd(args!["AUTH", largest]).await.is_error());
    assert!(raw.cmd(args!["PING", "1", "2", "3", "4", "5", "6", "7", "8", "9"]).await.is_error());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn authenticating_lifts_the_caps_and_reset_restores_them() {
    let server = start_with(|config| config.requirepass = Some("pw".into())).await;
    let mut raw = Raw::connect(server.addr).await;
    assert_eq!(raw.cmd(args!["AUTH", "pw"]).await.text(), "OK");
    let eleven = args!["CLIENT", "LIST", "ID", 1, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(eleven.len(), 11);
    raw.cmd(eleven.clone()).await.text();
    let echo = raw.cmd(args!["ECHO", "e".repeat(100_000)]).await;
    assert_eq!(echo.text().len(), 100_000);

    assert_eq!(raw.cmd(args!["RESET"]).await.text(), "RESET");
    raw.send(eleven).await;
    assert_eq!(raw.read_until_closed().await, error_line(UNAUTHENTICATED_MULTIBULK));

    // A server without a password has nobody to authenticate: its clients get the full limits.
    let open = start().await;
    let mut raw = Raw::connect(open.addr).await;
    assert_eq!(raw.cmd(args!["ECHO", "e".repeat(100_000)]).await.text().len(), 100_000);
    server.stop().await.unwrap();
    open.stop().await.unwrap();
}

/// 2,000 PINGs are 28 kB on the wire but each holds an argument table and an allocation of its
/// own while it waits, far more than 64 KiB in all; 100 of them fit.
#[tokio::test]
async fn requests_queued_behind_a_blocked_wait_count_what_they_hold() {
    let limit = 64 * 1024;
    let server = start_with(|config| config.max_query_buffer_bytes = limit).await;
    let mut holder = Raw::connect(server.addr).await;
    cmd_out(&mut holder, args!["LOCK.TRY", "k", "holder"]).await.token();

    let ping = b"*1\r\n$4\r\nPING\r\n";
    let mut few = start_wait(server.addr, "k", "few", 0).await;
    few.write(&ping.repeat(100)).await;
    let mut many = start_wait(server.addr, "k", "many", 0).await;
    let pipeline = ping.repeat(2_000);
    assert!(pipeline.len() < limit / 2);
    many.write(&pipeline).await;
    assert_eq!(many.read_until_closed().await, error_line(QUERY_BUFFER));

    holder.wait_blocked("k", 1).await;
    few.assert_quiet("the WAIT is still blocked").await;
    assert_eq!(holder.cmd(args!["LOCK.CANCEL", "k", "few"]).await.int(), 1);
    assert_eq!(read_out(&mut few).await, Out::Nil);
    for _ in 0..100 {
        assert_eq!(few.read().await.text(), "PONG");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn over_maxmemory_what_adds_state_is_refused_and_the_rest_goes_on() {
    // One byte: always over, whatever the rest of the test process holds.
    let server = start_with(|config| config.maxmemory = 1).await;
    let mut raw = Raw::connect(server.addr).await;
    for refused in [
        args!["LOCK.TRY", "k", "o"],
        args!["LOCK.TRY", "k", "o", "NOQUEUE"],
        args!["LOCK.WAIT", "k", "o", 0],
        args!["LOCK.UNLOCK", "k", "o", 1, "SUCCESS", "RESULT", "r", "KEEP", 1000],
    ] {
        assert_eq!(raw.cmd(refused.clone()).await.err(), OOM, "{refused:?}");
    }
    let nolock = |reply: Resp| reply.err().starts_with("NOLOCK");
    assert!(nolock(raw.cmd(args!["LOCK.UNLOCK", "k", "o", 1, "SUCCESS", "RESULT", "r"]).await));
    assert!(nolock(raw.cmd(args!["LOCK.UNLOCK", "k", "o", 1, "FAILURE", "REASON", "r"]).await));
    assert!(nolock(raw.cmd(args!["LOCK.EXTEND", "k", "o", 1, 1000]).await));
    assert_eq!(raw.cmd(args!["LOCK.CANCEL", "k", "o"]).await.int(), 0);
    assert_eq!(raw.info("k").await.state, "free");
    assert_eq!(raw.cmd(args!["PING"]).await.text(), "PONG");
    // Argument errors are still told as such.
    assert_eq!(
        raw.cmd(args!["LOCK.TRY", "k", "o", "PX", 0]).await.err(),
        "ERR invalid expire time in 'lock.try' command"
    );
    let config = raw.cmd(args!["CONFIG", "GET", "maxmemory*"]).await;
    assert_eq!(config.field("maxmemory").text(), "1");
    assert_eq!(config.field("maxmemory-policy").text(), "noeviction");
    let info = raw.cmd(args!["INFO", "memory"]).await.text();
    assert_eq!(info_number(&info, "maxmemory"), 1);
    server.stop().await.unwrap();
}

/// A holder and a waiter are in place when memory runs out: the holder can still fail over to
/// the waiter, which can renew and finish, while newcomers are refused until memory is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_maxmemory_the_server_drains_and_recovers() {
    let probe = start().await;
    let used = info_number(&Raw::connect(probe.addr).await.cmd(args!["INFO", "memory"]).await.text(), "used_memory");
    probe.stop().await.unwrap();
    let headroom = 256 << 20;
    let server = start_with(|config| config.maxmemory = used + headroom).await;
    let addr = server.addr;
    let mut holder = Raw::connect(addr).await;
    let token = cmd_out(&mut holder, args!["LOCK.TRY", "k", "holder"]).await.token();
    let mut waiter = start_wait(addr, "k", "waiter", 0).await;
    holder.wait_blocked("k", 1).await;

    // Zeroed pages are counted as allocated without being touched.
    let ballast = std::hint::black_box(vec![0u8; usize::try_from(2 * headroom).unwrap()]);
    let mut newcomer = Raw::connect(addr).await;
    let try_other = args!["LOCK.TRY", "other", "newcomer"];
    poll_reply(&mut newcomer, &try_other, "memory over --maxmemory", |reply| reply.is_error() && reply.err() == OOM)
        .await;

    assert_eq!(holder.cmd(args!["LOCK.UNLOCK", "k", "holder", token, "FAILURE", "REASON", "oom"]).await.int(), 1);
    let next = read_out(&mut waiter).await.token();
    assert_eq!(waiter.cmd(args!["LOCK.EXTEND", "k", "waiter", next, 60_000]).await.int(), 1);
    assert_eq!(waiter.cmd(args!["LOCK.UNLOCK", "k", "waiter", next, "SUCCESS", "KEEP", 1000]).await.err(), OOM);
    assert_eq!(waiter.cmd(args!["LOCK.UNLOCK", "k", "waiter", next, "SUCCESS", "RESULT", "r"]).await.int(), 0);
    assert_eq!(newcomer.info("k").await.state, "free");

    drop(ballast);
    poll_reply(&mut newcomer, &try_other, "memory under --maxmemory again", |reply| !reply.is_error()).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn info_memory_uses_redis_field_names() {
    let server = start_with(|config| config.maxmemory = 100 << 20).await;
    let mut raw = Raw::connect(server.addr).await;
    let info = raw.cmd(args!["INFO", "memory"]).await.text();
    assert!(info.starts_with("# Memory\r\n"), "{info}");
    let fields = info_fields(&info);
    let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "used_memory",
            "used_memory_human",
            "used_memory_rss",
            "used_memory_rss_human",
            "used_memory_peak",
            "used_memory_peak_human",
            "maxmemory",
            "maxmemory_human",
            "maxmemory_policy",
            "mem_fragmentation_ratio",
            "mem_allocator",
        ]
    );
    let value = |name: &str| fields.iter().find(|(field, _)| field == name).unwrap().1.clone();
    let used = info_number(&info, "used_memory");
    assert!(used > 0, "{info}");
    assert!(info_number(&info, "used_memory_rss") > 0, "{info}");
    assert!(info_number(&info, "used_memory_peak") >= used, "{info}");
    assert_eq!(info_number(&info, "maxmemory"), 100 << 20);
    assert_eq!(value("maxmemory_human"), "100.00M");
    assert_eq!(value("maxmemory_policy"), "noeviction");
    assert!(value("mem_fragmentation_ratio").parse::<f64>().unwrap() > 0.0, "{info}");
    assert!(value("mem_allocator").starts_with("jemalloc-5."), "{info}");
    for human in ["used_memory_human", "used_memory_rss_human", "used_memory_peak_human"] {
        let text = value(human);
        assert!(text.ends_with(['B', 'K', 'M', 'G']), "{human}: {text}");
    }

    // Part of the default INFO, between Clients and Persistence as in Redis.
    let everything = raw.cmd(args!["INFO"]).await.text();
    let at = |title: &str| everything.find(title).unwrap_or_else(|| panic!("no {title} in {everything}"));
    assert!(at("# Clients") < at("# Memory") && at("# Memory") < at("# Persistence"));
    // Another section alone leaves it out.
    assert!(!raw.cmd(args!["INFO", "server"]).await.text().contains("used_memory"));
    server.stop().await.unwrap();
}
