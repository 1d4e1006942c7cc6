//! The operator surface: INFO figures move with real traffic, the Prometheus endpoint exports the
//! same figures, and a client that stops reading its replies is disconnected without hurting others.

use std::time::{Duration, Instant};

use baton::config::Config;
use baton::server::RunningServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{LockInfo, POLL_DEADLINE, Raw, Resp, args, cmd_out, encode, read_out, start_wait};

fn field(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("INFO has no {name}: {info}"))
        .trim()
        .parse()
        .unwrap()
}

/// A server serving Prometheus metrics, and the port of its metrics endpoint.
async fn start_with_metrics() -> (RunningServer, u16) {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = crate::common::start_with(|config| {
        config.metrics_addr = Some(format!("127.0.0.1:{metrics_port}").parse().unwrap());
    })
    .await;
    (server, metrics_port)
}

async fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut body)).await.unwrap().unwrap();
    body
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A hand-off: `holder` takes `key`, a waiter blocks, the holder fails, the waiter is granted.
async fn hand_off(holder: &mut Raw, addr: std::net::SocketAddr, key: &str) -> Raw {
    let token = cmd_out(holder, args!["LOCK.TRY", key, "holder"]).await.token();
    let mut waiter = start_wait(addr, key, "waiter", 5_000).await;
    holder.wait_blocked(key, 1).await;
    assert_eq!(holder.cmd(args!["LOCK.UNLOCK", key, "holder", token, "FAILURE"]).await.int(), 1);
    assert!(read_out(&mut waiter).await.token() > token);
    waiter
}

/// A FAILURE's grant is written to the waiter's socket by the unlocking connection when it can
/// (src/direct.rs), and INFO counts those. Whoever writes it, the waiter reads its ACQUIRED whole
/// and then the reply of the PING it pipelined behind its WAIT, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_written_by_the_unlocking_connection_arrive_whole_and_in_order() {
    const ROUNDS: usize = 20;
    let server = RunningServer::start(Config::default_for_tests()).await.unwrap();
    let mut ctl = Raw::connect(server.addr).await;
    let mut token = cmd_out(&mut ctl, args!["LOCK.TRY", "k", "h0"]).await.token();
    // Kept open: a holder whose connection closes releases its lock.
    let mut holders = vec![ctl];
    for round in 1..=ROUNDS {
        let mut waiter = start_wait(server.addr, "k", &format!("h{round}"), 0).await;
        waiter.send(args!["PING"]).await;
        let previous = holders.last_mut().unwrap();
        previous.wait_blocked("k", 1).await;
        let unlock = args!["LOCK.UNLOCK", "k", format!("h{}", round - 1), token, "FAILURE"];
        assert_eq!(previous.cmd(unlock).await.int(), 1, "round {round}: handed off");
        let granted = read_out(&mut waiter).await.token();
        assert!(granted > token, "round {round}: token {granted} after {token}");
        assert_eq!(waiter.read().await, Resp::Simple("PONG".into()), "round {round}");
        token = granted;
        holders.push(waiter);
    }
    let info = holders[0].cmd(args!["INFO", "locks"]).await.text();
    assert_eq!(field(&info, "lock_handoffs"), ROUNDS as u64);
    let written = field(&info, "lock_handoffs_written_by_unlocker");
    // The waiter's own task writes the grant when the unlock came before its WAIT had lent its
    // mailbox the writer (it lends it once the replies before the WAIT are written).
    assert!((1..=ROUNDS as u64).contains(&written), "{written} of {ROUNDS} written by the unlocker: {info}");
    assert_eq!(field(&info, "lock_handoff_latency_samples"), ROUNDS as u64, "each hand-off measured once");
    // The waiters' tasks, left asleep while their grants were written for them, were woken after.
    let deadline = Instant::now() + POLL_DEADLINE;
    while field(&holders[0].cmd(args!["INFO", "clients"]).await.text(), "blocked_clients") != 0 {
        assert!(Instant::now() < deadline, "a waiter whose grant was written still counts as blocked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_prometheus_report_the_same_traffic() {
    let (server, metrics_port) = start_with_metrics().await;
    let mut holder = Raw::connect(server.addr).await;
    let mut waiters = Vec::new();
    for round in 0..3 {
        waiters.push(hand_off(&mut holder, server.addr, &format!("key{round}")).await);
    }

    let info = holder.cmd(args!["INFO"]).await.text();
    assert!(field(&info, "lock_grants") >= 6);
    assert_eq!(field(&info, "lock_handoffs"), 3);
    assert_eq!(field(&info, "lock_failures"), 3);
    assert_eq!(field(&info, "lock_handoff_latency_samples"), 3);
    assert!(field(&info, "lock_handoff_latency_p50_usec") > 0);
    assert_eq!(field(&info, "locks_held"), 3, "the waiters hold the three keys");
    assert_eq!(field(&info, "connected_clients"), 4);
    assert!(field(&info, "total_commands_processed") >= 12);
    assert_eq!(field(&info, "loading"), 0);
    assert!(info.contains("redis_version:"));

    // The exporter publishes every 500 ms; poll until it has caught up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(metrics_port).await;
        if metric(&text, "baton_lock_handoffs_total") == Some(3.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "exporter never showed 3 hand-offs:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(metric(&text, "baton_lock_failures_total"), Some(3.0));
    assert_eq!(metric(&text, "baton_locks_held"), Some(3.0));
    assert_eq!(metric(&text, "baton_connected_clients"), Some(4.0));
    assert!(text.contains("baton_handoff_latency_seconds{quantile=\"0.5\"}"), "{text}");
    server.stop().await.unwrap();
}

/// INFO `# CPU` in Redis's names and format, and `process_cpu_seconds_total`: the server runs in
/// this test's process, so what they report lies between this process's CPU time read before
/// and after (its CPU-time clock, which counts the same threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_cpu_and_prometheus_report_the_process_cpu_time() {
    let (server, metrics_port) = start_with_metrics().await;
    let mut client = Raw::connect(server.addr).await;
    let own_cpu = || baton_testkit::process::cpu_seconds(std::process::id()).unwrap();
    let seconds = |text: &str, name: &str| -> f64 {
        let value = text.lines().find_map(|line| line.strip_prefix(&format!("{name}:"))).expect(name);
        let (whole, micros) = value.split_once('.').expect("seconds with a fraction");
        assert_eq!(micros.len(), 6, "{name}:{value} has six decimals, as in Redis");
        format!("{whole}.{micros}").parse().unwrap()
    };

    let before = own_cpu();
    let info = client.cmd(args!["INFO", "cpu"]).await.text();
    let after = own_cpu();
    assert!(info.starts_with("# CPU\r\n"), "{info}");
    assert!(!info.contains("# Server"), "only the section asked for: {info}");
    let used = seconds(&info, "used_cpu_sys") + seconds(&info, "used_cpu_user");
    assert!(before - 1e-5 <= used && used <= after + 1e-5, "{before} <= {used} <= {after}");
    assert_eq!(seconds(&info, "used_cpu_sys_children") + seconds(&info, "used_cpu_user_children"), 0.0);
    assert!(client.cmd(args!["INFO"]).await.text().contains("\r\n# CPU\r\nused_cpu_sys:"), "in the default INFO");

    let before = own_cpu();
    let text = scrape(metrics_port).await;
    let after = own_cpu();
    let used = metric(&text, "process_cpu_seconds_total").expect("process_cpu_seconds_total");
    assert!(before - 1e-5 <= used && used <= after + 1e-5, "{before} <= {used} <= {after}");
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"), "{text}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instantaneous_ops_per_sec_follows_load() {
    let server = RunningServer::start(Config::default_for_tests()).await.unwrap();
    let mut client = Raw::connect(server.addr).await;
    let batch: Vec<u8> = (0..200).flat_map(|_| encode(&args!["PING"])).collect();
    let until = Instant::now() + Duration::from_millis(800);
    while Instant::now() < until {
        client.write(&batch).await;
        for _ in 0..200 {
            client.read().await;
        }
    }
    let info = client.cmd(args!["INFO", "stats"]).await.text();
    assert!(field(&info, "instantaneous_ops_per_sec") > 100, "{info}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_reads_is_disconnected_and_others_are_served() {
    let mut config = Config::default_for_tests();
    config.output_stall_timeout_ms = 300;
    let server = RunningServer::start(config).await.unwrap();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let mut other = Raw::connect(server.addr).await;
    assert_eq!(other.client_id().await, 2);

    // Ask for far more reply bytes than socket buffers hold (each INFO is about 1.5 KB), never reading.
    let flood: Vec<u8> = (0..2_000).flat_map(|_| encode(&args!["INFO"])).collect();
    let writer = tokio::spawn(async move {
        for _ in 0..100 {
            if tokio::time::timeout(Duration::from_secs(2), slow.write_all(&flood)).await.map_or(true, |r| r.is_err()) {
                break;
            }
        }
        slow
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = other.cmd(args!["CLIENT", "LIST"]).await.text();
        if !list.contains("id=1 ") {
            break;
        }
        assert!(Instant::now() < deadline, "the slow client was never disconnected: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(other.cmd(args!["PING"]).await.text(), "PONG");
    // The slow client's connection is gone: reading drains what was sent, then ends.
    let mut slow = writer.await.unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the slow client's connection was not closed");
    server.stop().await.unwrap();
}

/// BGREWRITEAOF rewrites the journal as a snapshot in the background, as Redis's does its AOF;
/// INFO shows it done (never a new snapshot while the rewrite still shows as running), the
/// Prometheus page counts it with the journal's records, bytes and fsyncs, and without a journal
/// it is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bgrewriteaof_writes_a_snapshot_of_the_journal() {
    let (server, metrics_port) = start_with_metrics().await;
    let mut con = Raw::connect(server.addr).await;
    cmd_out(&mut con, args!["LOCK.TRY", "kept", "a"]).await.token();
    let started = con.cmd(args!["BGREWRITEAOF"]).await;
    assert_eq!(started.text(), "Background append only file rewriting started");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = con.cmd(args!["INFO", "persistence"]).await.text();
        let running = field(&info, "aof_rewrite_in_progress") == 1 || field(&info, "aof_rewrite_scheduled") == 1;
        let written = field(&info, "journal_snapshots_written");
        assert!(!(running && written > 0), "a snapshot counted while its rewrite shows as running: {info}");
        if written > 0 {
            assert_eq!(written, 1, "{info}");
            assert!(info.contains("aof_last_bgrewrite_status:ok"), "{info}");
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot written: {info}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let page = scrape(metrics_port).await;
    assert_eq!(metric(&page, "baton_journal_rewrites_total"), Some(1.0), "{page}");
    assert!(metric(&page, "baton_journal_records_written_total").is_some_and(|records| records >= 1.0), "{page}");
    assert!(metric(&page, "baton_journal_bytes_written_total").is_some_and(|bytes| bytes > 0.0), "{page}");
    // The rewrite syncs the journal up to where its snapshot takes over.
    let fsyncs = metric(&page, "baton_journal_fsync_seconds_count").expect("the fsync histogram is exported");
    assert!(fsyncs >= 1.0, "{page}");
    assert_eq!(metric(&page, r#"baton_journal_fsync_seconds_bucket{le="+Inf"}"#), Some(fsyncs), "{page}");
    let buckets: Vec<f64> = page
        .lines()
        .filter(|line| line.starts_with("baton_journal_fsync_seconds_bucket"))
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.len() > 2 && buckets.windows(2).all(|pair| pair[0] <= pair[1]), "cumulative buckets: {page}");
    assert!(metric(&page, "baton_journal_fsync_seconds_sum").is_some_and(|sum| sum > 0.0), "{page}");
    server.stop().await.unwrap();

    let server = crate::common::start_with(|config| config.appendonly = baton::config::YesNo::No).await;
    let mut con = Raw::connect(server.addr).await;
    assert!(con.cmd(args!["BGREWRITEAOF"]).await.err().starts_with("ERR the journal is off"));
    server.stop().await.unwrap();
}
