//! The HTTP side of the Prometheus endpoint: just enough HTTP/1.1 to answer `GET /metrics`, with a
//! bound wherever a client could hold the server. Connections are limited in number and closed
//! when their request head does not arrive in time, so idle connections cannot use up file
//! descriptors; accept errors (out of descriptors) are retried with a growing pause instead of in a
//! busy loop. Every response closes its connection: a scraper asks once every few seconds.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    pub(crate) max_connections: usize,
    /// From accept until the whole request head has arrived.
    pub(crate) head_timeout: Duration,
    /// For the whole response: a scraper that stops reading is dropped.
    pub(crate) write_timeout: Duration,
}

impl HttpLimits {
    /// A few scrapers at once is plenty; each counts against the file descriptors kept out of
    /// `--maxclients`.
    pub(crate) const METRICS: HttpLimits =
        HttpLimits { max_connections: 8, head_timeout: Duration::from_secs(5), write_timeout: Duration::from_secs(10) };
}

/// Longer heads are refused: a scraper's is a few hundred bytes.
const MAX_HEAD_BYTES: usize = 8 * 1024;
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Serves `page()` at `path` until the future is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    path: &'static str,
    limits: HttpLimits,
    page: impl Fn() -> String + Send + Sync + 'static,
) {
    let page = Arc::new(page);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = FIRST_ACCEPT_BACKOFF;
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => {
                backoff = FIRST_ACCEPT_BACKOFF;
                socket
            }
            Err(error) => {
                warn!(%error, retry_in_ms = backoff.as_millis() as u64, "metrics endpoint: accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Said and closed at once, rather than left waiting in the backlog: the descriptor
            // is free again straight away. Best effort: the reply fits any socket buffer.
            debug!("metrics endpoint: connection limit reached");
            let _ = socket.try_write(BUSY);
            continue;
        };
        let page = Arc::clone(&page);
        tokio::spawn(async move {
            answer(socket, path, limits, &*page).await;
            drop(permit);
        });
    }
}

async fn answer(mut socket: TcpStream, path: &str, limits: HttpLimits, page: &(dyn Fn() -> String + Sync)) {
    let head = match tokio::time::timeout(limits.head_timeout, read_head(&mut socket)).await {
        Ok(Ok(head)) => head,
        // Silent or too slow, or gone: nothing to answer.
        Ok(Err(_)) | Err(_) => return,
    };
    let response = respond(head.as_deref(), path, page);
    let _ = tokio::time::timeout(limits.write_timeout, async {
        socket.write_all(&response).await?;
        socket.shutdown().await
    })
    .await;
}

/// The request head up to its blank line; `None` when it is longer than [`MAX_HEAD_BYTES`].
async fn read_head(socket: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = socket.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..read]);
        if head.windows(4).any(|window| window == b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD_BYTES {
            return Ok(None);
        }
    }
}

/// The whole response to a request head (`None`: too long).
fn respond(head: Option<&[u8]>, path: &str, page: impl FnOnce() -> String) -> Vec<u8> {
    let Some(head) = head else {
        return response("431 Request Header Fields Too Large", "", "");
    };
    let request_line = head.split(|&byte| byte == b'\n').next().unwrap_or_default().trim_ascii_end();
    let mut parts = request_line.split(|&byte| byte == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return response("400 Bad Request", "", "");
    };
    if !version.starts_with(b"HTTP/1.") {
        return response("400 Bad Request", "", "");
    }
    let head_only = method == b"HEAD";
    if method != b"GET" && !head_only {
        return response("405 Method Not Allowed", "Allow: GET, HEAD\r\n", "");
    }
    let target_path = target.split(|&byte| byte == b'?').next().unwrap_or_default();
    if target_path != path.as_bytes() {
        return response("404 Not Found", "", "");
    }
    let body = page();
    let content_type = "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n";
    if head_only {
        let mut head = response("200 OK", content_type, &body);
        head.truncate(head.len() - body.len());
        return head;
    }
    response("200 OK", content_type, &body)
}

fn response(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_line(response: &[u8]) -> String {
        String::from_utf8_lossy(response).lines().next().unwrap_or_default().to_owned()
    }

    fn answer_to(request: &[u8]) -> Vec<u8> {
        respond(Some(request), "/metrics", || "baton_up 1\n".to_owned())
    }

    #[test]
    fn answers_get_and_head_on_its_path_only() {
        let ok = String::from_utf8(answer_to(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 11\r\n") && ok.ends_with("\r\n\r\nbaton_up 1\n"), "{ok}");
        let with_query = answer_to(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n");
        assert_eq!(status_line(&with_query), "HTTP/1.1 200 OK");
        let head = String::from_utf8(answer_to(b"HEAD /metrics HTTP/1.1\r\n\r\n")).unwrap();
        assert!(head.contains("Content-Length: 11\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        assert_eq!(status_line(&answer_to(b"GET / HTTP/1.1\r\n\r\n")), "HTTP/1.1 404 Not Found");
        assert_eq!(status_line(&answer_to(b"POST /metrics HTTP/1.1\r\n\r\n")), "HTTP/1.1 405 Method Not Allowed");
        for garbage in [&b"\r\n\r\n"[..], b"GET /metrics\r\n\r\n", b"GET /metrics SPDY/3\r\n\r\n", b"A B C D\r\n\r\n"] {
            assert_eq!(status_line(&answer_to(garbage)), "HTTP/1.1 400 Bad Request", "{garbage:?}");
        }
        let too_long = respond(None, "/metrics", || unreachable!("no page for a refused request"));
        assert_eq!(status_line(&too_long), "HTTP/1.1 431 Request Header Fields Too Large");
    }

    async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
        let mut bytes = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes)).await.expect("closed");
        bytes
    }

    #[tokio::test]
    async fn idle_connections_are_limited_and_timed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = HttpLimits {
            max_connections: 2,
            head_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
        };
        let server = tokio::spawn(serve(listener, "/metrics", limits, || "baton_up 1\n".to_owned()));
        // Accepted in the order they connect: the two idle ones take both places.
        let mut idle = [TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap()];
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let refusal = read_to_end(&mut refused).await;
        assert_eq!(status_line(&refusal), "HTTP/1.1 503 Service Unavailable");
        for stream in &mut idle {
            assert_eq!(read_to_end(stream).await, b"", "an idle connection is closed without an answer");
        }
        let mut scraper = TcpStream::connect(addr).await.unwrap();
        scraper.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let answer = read_to_end(&mut scraper).await;
        assert!(answer.ends_with(b"baton_up 1\n"), "{}", String::from_utf8_lossy(&answer));
        server.abort();
    }
}
