//! Operations hardening (issue 10, items 8-13) seen from a client: CONFIG GET tcp-keepalive, the
//! INFO count of dropped log lines, the bounded metrics endpoint, and the output-stall timeout,
//! which cuts off a client that stopped reading but not one that reads slowly.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;

#[tokio::test]
async fn config_get_reports_tcp_keepalive() {
    for (flag, expected) in [(None, "300"), (Some(0), "0"), (Some(60), "60")] {
        let server = start_with(|config| {
            if let Some(seconds) = flag {
                config.tcp_keepalive = seconds;
            }
        })
        .await;
        let mut raw = Raw::connect(server.addr).await;
        let reply = raw.cmd(args!["CONFIG", "GET", "tcp-keepalive"]).await;
        let expected = Resp::Array(vec![Resp::Bulk(b"tcp-keepalive".to_vec()), Resp::Bulk(expected.into())]);
        assert_eq!(reply, expected, "{flag:?}");
        server.stop().await.unwrap();
    }
}

/// The event loops in use: the flag's, or the default's count for this machine's cores.
#[tokio::test]
async fn config_get_reports_the_event_loop_count() {
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    for (flag, expected) in [(Some(3), 3), (None, cores.saturating_sub(1).max(1))] {
        let server = start_with(|config| config.threads = flag).await;
        let mut raw = Raw::connect(server.addr).await;
        let reply = raw.cmd(args!["CONFIG", "GET", "threads"]).await;
        let expected = Resp::Array(vec![Resp::Bulk(b"threads".to_vec()), Resp::Bulk(expected.to_string().into())]);
        assert_eq!(reply, expected, "{flag:?}");
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn info_stats_reports_dropped_log_lines() {
    let server = start().await;
    let mut raw = Raw::connect(server.addr).await;
    let stats = raw.cmd(args!["INFO", "stats"]).await.text();
    // This test process has no log queue of its own, so nothing was dropped.
    assert!(stats.contains("\r\nlog_lines_dropped:0\r\n"), "{stats}");
    server.stop().await.unwrap();
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the metrics endpoint");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: baton\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the endpoint closes after answering")
        .unwrap();
    String::from_utf8(response).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_current_figures_and_nothing_else() {
    let server = start_with(|config| config.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics = server.metrics_addr.expect("the endpoint is bound");
    let mut holder = Raw::connect(server.addr).await;
    assert!(matches!(cmd_out(&mut holder, args!["LOCK.TRY", "scraped", "me"]).await, Out::Acquired(_)));
    // Read when scraped, not up to 500 ms late.
    let page = http_get(metrics, "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("\nbaton_locks_held 1\n"), "{page}");
    assert!(page.contains("\nbaton_connected_clients 1\n"), "{page}");
    assert!(page.contains("\nbaton_log_lines_dropped_total 0\n"), "{page}");
    assert!(http_get(metrics, "/").await.starts_with("HTTP/1.1 404 Not Found\r\n"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_metrics_connections_do_not_shut_out_the_scraper_for_long() {
    let server = start_with(|config| config.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let metrics = server.metrics_addr.expect("the endpoint is bound");
    // Far more idle connections than the endpoint serves at once.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(metrics).await.unwrap());
    }
    // The surplus is told at once and closed; those let in are closed, unanswered, after the
    // head timeout. Either way every connection ends.
    let answers = futures_util::future::join_all(idle.into_iter().map(|mut stream| async move {
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
        assert!(closed.is_ok(), "an idle metrics connection was never closed");
        answer
    }))
    .await;
    let refused = answers.iter().filter(|answer| answer.starts_with(b"HTTP/1.1 503 ")).count();
    let unanswered = answers.iter().filter(|answer| answer.is_empty()).count();
    assert_eq!(refused + unanswered, 64, "every idle connection was refused or closed unanswered");
    assert!(unanswered >= 1 && refused >= 64 - 8, "{unanswered} timed out, {refused} refused");
    let page = http_get(metrics, "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    server.stop().await.unwrap();
}

/// A bigger reply than the socket buffers hold, so writing it takes as long as the client reads.
const BIG_REPLY_BYTES: usize = 8 << 20;
const STALL_MS: u64 = 1_000;

async fn start_for_big_replies() -> baton::server::RunningServer {
    start_with(|config| {
        config.max_bulk_bytes = BIG_REPLY_BYTES;
        config.max_result_bytes = BIG_REPLY_BYTES;
        config.max_query_buffer_bytes = 2 * BIG_REPLY_BYTES;
        config.output_stall_timeout_ms = STALL_MS;
    })
    .await
}

/// A connection with a small receive window (so the server's writes wait on this client's
/// reads) that has asked for one ECHO of [`BIG_REPLY_BYTES`].
async fn ask_for_a_big_reply(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(32 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let payload = vec![b'x'; BIG_REPLY_BYTES];
    stream.write_all(&encode(&args!["ECHO", payload])).await.unwrap();
    stream
}

fn big_reply_len() -> usize {
    format!("${BIG_REPLY_BYTES}\r\n").len() + BIG_REPLY_BYTES + 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_slowly_but_steadily_gets_its_whole_reply() {
    let server = start_for_big_replies().await;
    let mut stream = ask_for_a_big_reply(server.addr).await;
    // At most 32 KiB per 10 ms: 8 MiB takes over 2.5 s, several stall timeouts, and the socket
    // takes bytes at every step.
    let mut received = 0;
    let mut chunk = vec![0u8; 32 * 1024];
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    while received < big_reply_len() {
        ticker.tick().await;
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!("cut off after {received} of {} bytes", big_reply_len()),
            Ok(Ok(read)) => received += read,
            Err(_) => panic!("no reply bytes for 10 s after {received}"),
        }
    }
    assert_eq!(received, big_reply_len());
    let mut raw_after = Raw::connect(server.addr).await;
    assert_eq!(raw_after.cmd(args!["PING"]).await, Resp::Simple("PONG".into()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    let server = start_for_big_replies().await;
    let mut stream = ask_for_a_big_reply(server.addr).await;
    // No reads for longer than the cut-off can take (between one and two stall timeouts).
    tokio::time::sleep(Duration::from_millis(3 * STALL_MS)).await;
    let mut received = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;
    assert!(ended.is_ok(), "the server kept the connection open");
    assert!(received.len() < big_reply_len(), "the whole reply fit in the socket buffers: the test proves nothing");
    server.stop().await.unwrap();
}

/// `b` is queued on `key` behind `a`, who then reports success with `result`: `b` is owed DONE.
async fn owe_done(addr: SocketAddr, key: &str, result: &[u8]) {
    let mut raw = Raw::connect(addr).await;
    let token = cmd_out(&mut raw, args!["LOCK.TRY", key, "a"]).await.token();
    assert_eq!(cmd_out(&mut raw, args!["LOCK.TRY", key, "b", "PX", "60000"]).await, Out::Queued(1));
    let unlocked = raw.cmd(args!["LOCK.UNLOCK", key, "a", token, "SUCCESS", "RESULT", result]).await;
    assert_eq!(unlocked, Resp::Int(1), "one waiter told");
}

/// Sends `requests` pipelined on a connection with a small receive window, never reads, and
/// waits until the server has cut it off for not reading.
async fn pipeline_never_read(addr: SocketAddr, requests: &[Vec<Vec<u8>>]) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(32 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let pipeline: Vec<u8> = requests.iter().flat_map(|request| encode(request)).collect();
    stream.write_all(&pipeline).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3 * STALL_MS)).await;
    let mut received = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;
    assert!(ended.is_ok(), "the server kept the connection open");
    assert!(received.len() < big_reply_len(), "the whole reply fit in the socket buffers: the test proves nothing");
}

/// b is owed a DONE on `small` (a short reply) and on `big` (8 MiB). A client of b's asks for
/// both in one pipeline, in the order given, and stops reading.
async fn pay_both_and_stop_reading(small_first: bool) -> (baton::server::RunningServer, Raw) {
    let server = start_for_big_replies().await;
    owe_done(server.addr, "small", b"r").await;
    owe_done(server.addr, "big", &vec![b'r'; BIG_REPLY_BYTES]).await;
    let (small, big) = (args!["LOCK.TRY", "small", "b"], args!["LOCK.TRY", "big", "b"]);
    let pipeline = if small_first { [small, big] } else { [big, small] };
    pipeline_never_read(server.addr, &pipeline).await;
    let raw = Raw::connect(server.addr).await;
    (server, raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_written_before_the_client_stopped_reading_is_told_once_and_one_cut_short_again() {
    let (server, mut raw) = pay_both_and_stop_reading(true).await;
    // The short DONE went out whole: the client could have read it, so b starts a new round.
    assert!(matches!(cmd_out(&mut raw, args!["LOCK.TRY", "small", "b"]).await, Out::Acquired(_)));
    // The long one was cut short: still owed, once.
    let told = cmd_out(&mut raw, args!["LOCK.TRY", "big", "b"]).await;
    assert_eq!(told, Out::Done { finisher: b"a".to_vec(), result: Some(vec![b'r'; BIG_REPLY_BYTES]) });
    assert!(matches!(cmd_out(&mut raw, args!["LOCK.TRY", "big", "b"]).await, Out::Acquired(_)));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_queued_behind_a_reply_never_read_is_owed_again() {
    let (server, mut raw) = pay_both_and_stop_reading(false).await;
    assert_eq!(cmd_out(&mut raw, args!["LOCK.TRY", "small", "b"]).await, Out::done("a", Some("r")));
    let told = cmd_out(&mut raw, args!["LOCK.TRY", "big", "b"]).await;
    assert!(matches!(told, Out::Done { .. }), "{told:?}");
    server.stop().await.unwrap();
}
