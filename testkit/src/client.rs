//! A raw RESP connection: exact bytes in and out, pipelining, a timeout on every step.
//!
//! [`Connection`] returns errors (the load generator reports them and goes on); [`Raw`] wraps it
//! for tests, where anything unexpected is a panic that says what happened.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::reply::{self, Resp};
use crate::request::encode_into;

fn error(kind: io::ErrorKind, message: String) -> io::Error {
    io::Error::new(kind, message)
}

/// One TCP connection; requests are queued with [`Connection::queue`] and sent together by
/// [`Connection::flush`], so a pipeline is a few queues and one flush.
pub struct Connection {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    io_timeout: Duration,
}

impl Connection {
    /// Connects with TCP_NODELAY; `io_timeout` bounds the connect and every later write and read.
    pub async fn connect(addr: SocketAddr, io_timeout: Duration) -> io::Result<Connection> {
        let stream = match tokio::time::timeout(io_timeout, TcpStream::connect(addr)).await {
            Ok(stream) => stream?,
            Err(_) => return Err(error(io::ErrorKind::TimedOut, format!("connect to {addr} timed out"))),
        };
        stream.set_nodelay(true)?;
        Ok(Connection { stream, rbuf: BytesMut::with_capacity(4096), wbuf: Vec::with_capacity(256), io_timeout })
    }

    /// Queues one request.
    pub fn queue(&mut self, args: &[&[u8]]) {
        encode_into(&mut self.wbuf, args);
    }

    /// Queues bytes as they are (inline commands, broken frames).
    pub fn queue_bytes(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Sends everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(self.io_timeout, self.stream.write_all(&self.wbuf)).await {
            Ok(result) => result?,
            Err(_) => return Err(error(io::ErrorKind::TimedOut, "write timed out".into())),
        }
        self.wbuf.clear();
        Ok(())
    }

    fn parsed(&mut self) -> io::Result<Option<(Resp, Bytes)>> {
        match reply::parse(&self.rbuf) {
            Ok(Some((reply, used))) => Ok(Some((reply, self.rbuf.split_to(used).freeze()))),
            Ok(None) => Ok(None),
            Err(text) => Err(error(
                io::ErrorKind::InvalidData,
                format!("malformed reply ({text}): {:?}", String::from_utf8_lossy(&self.rbuf)),
            )),
        }
    }

    /// The next reply and its exact bytes, or None if `limit` passes first. Cancel-safe: nothing
    /// read is lost. A closed connection is an `UnexpectedEof` error.
    pub async fn read_frame_within(&mut self, limit: Duration) -> io::Result<Option<(Resp, Bytes)>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = self.parsed()? {
                return Ok(Some(frame));
            }
            self.rbuf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Ok(Ok(0)) => {
                    return Err(error(io::ErrorKind::UnexpectedEof, "connection closed by the server".into()));
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(err),
                Err(_) => return Ok(None),
            }
        }
    }

    /// The next reply, or None if `limit` passes first.
    pub async fn read_within(&mut self, limit: Duration) -> io::Result<Option<Resp>> {
        Ok(self.read_frame_within(limit).await?.map(|(reply, _)| reply))
    }

    async fn read_frame(&mut self) -> io::Result<(Resp, Bytes)> {
        match self.read_frame_within(self.io_timeout).await? {
            Some(frame) => Ok(frame),
            None => Err(error(io::ErrorKind::TimedOut, format!("no reply within {:?}", self.io_timeout))),
        }
    }

    /// The next reply, within the I/O timeout.
    pub async fn read(&mut self) -> io::Result<Resp> {
        Ok(self.read_frame().await?.0)
    }

    /// Sends one request and reads its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> io::Result<Resp> {
        self.queue(args);
        self.flush().await?;
        self.read().await
    }

    /// Reads until the server closes the connection (a reset counts as closed); returns every
    /// byte received, including any not yet taken as replies. A `TimedOut` error if it stays
    /// open past the I/O timeout.
    pub async fn read_until_closed(&mut self) -> io::Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + self.io_timeout;
        loop {
            self.rbuf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
                Err(_) => {
                    let got = String::from_utf8_lossy(&self.rbuf);
                    return Err(error(io::ErrorKind::TimedOut, format!("still open; received so far: {got:?}")));
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(self.rbuf.split().to_vec()),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// How long any single expected reply may take before a [`Raw`] call fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Raw::assert_quiet`] listens to conclude that nothing is coming.
pub const QUIET: Duration = Duration::from_millis(200);

/// A [`Connection`] for tests: every failure panics with what happened. One socket per instance,
/// closed at once when dropped (as a client that dies).
pub struct Raw {
    conn: Connection,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw { conn: Connection::connect(addr, READ_TIMEOUT).await.expect("connect to the server") }
    }

    /// Connects and switches to RESP3 with `HELLO 3`.
    pub async fn connect_resp3(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let (hello, bytes) = raw.cmd_frame(crate::args!["HELLO", "3"]).await;
        assert!(bytes.starts_with(b"%"), "HELLO 3 answers with a RESP3 map: {:?}", String::from_utf8_lossy(&bytes));
        assert_eq!(hello.field("proto"), Resp::Int(3));
        raw
    }

    /// Writes bytes as they are.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.conn.queue_bytes(bytes);
        self.conn.flush().await.expect("write to the server");
    }

    pub async fn send(&mut self, args: Vec<Vec<u8>>) {
        let mut request = Vec::new();
        encode_into(&mut request, &args);
        self.write(&request).await;
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

    pub async fn read_frame(&mut self) -> (Resp, Vec<u8>) {
        match self.conn.read_frame().await {
            Ok((reply, bytes)) => (reply, bytes.to_vec()),
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                panic!("the server closed the connection instead of replying")
            }
            Err(err) => panic!("no reply: {err}"),
        }
    }

    pub async fn read(&mut self) -> Resp {
        self.read_frame().await.0
    }

    /// A reply if one arrives within `wait` (None if none does, or the connection closed).
    pub async fn read_within(&mut self, wait: Duration) -> Option<Resp> {
        match self.conn.read_within(wait).await {
            Ok(reply) => reply,
            Err(err) if err.kind() == io::ErrorKind::InvalidData => panic!("{err}"),
            Err(_) => None,
        }
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
        self.conn
            .read_until_closed()
            .await
            .unwrap_or_else(|err| panic!("the server did not close the connection: {err}"))
    }

    pub async fn client_id(&mut self) -> i64 {
        self.cmd(crate::args!["CLIENT", "ID"]).await.int()
    }
}
