//! RESP framing for the server side: requests in (multibulk or inline, as Redis accepts them),
//! replies out (RESP2 or RESP3, as the caller says with each reply).
//!
//! Requests are scanned by our own decoder and every byte is looked at once. `redis-protocol`'s
//! decoder has no inline commands and no size limits, and it re-parses from the start of the
//! buffer on every call, which is quadratic for a large request arriving in small reads. A server
//! facing untrusted clients needs all three, so the scanner ([`decode`]) keeps its position
//! between calls and checks every limit before anything is sized by a length field. Once it has
//! walked a frame it knows where every argument is, so it splits the frame off the buffer and
//! slices the arguments out of it itself, without copying, which is what `redis-protocol` would
//! have done after parsing the same bytes a second time. Inline lines ([`inline`]) follow Redis's
//! `sdssplitargs`, and every error text is Redis's own.
//!
//! Replies ([`encode`]) are the reverse case: `redis-protocol` writes every RESP2/RESP3 leaf, and
//! only aggregate headers are written here, so that no frame tree is built per reply. The codec
//! holds no per-connection protocol: it takes the protocol with each reply, so that the session
//! stays the one place that knows it.
//!
//! Like the rest of the protocol layer this does no I/O of its own and never reads the clock:
//! `tokio-util`'s `Framed` drives it, and tests drive it byte by byte.

mod decode;
mod encode;
mod inline;
#[cfg(test)]
pub(crate) mod tests;

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use decode::State;
pub(crate) use encode::{encoded_len_estimate, render};

/// Per-connection request limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments (command name included) in one request.
    pub max_args: usize,
    /// Largest single bulk argument, in bytes.
    pub max_bulk_bytes: usize,
    /// Longest inline request still waiting for its newline, in bytes.
    pub max_inline_bytes: usize,
    /// Most bytes buffered for one request that is still incomplete.
    pub max_buffer_bytes: usize,
}

/// The reply protocol a connection speaks (chosen with `HELLO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    /// The number HELLO and CLIENT LIST use for it.
    pub const fn version(self) -> u8 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// One client request: the command name and its arguments, never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub args: Vec<Bytes>,
}

#[derive(Debug)]
pub enum CodecError {
    /// Reply with this Redis-style error line, then close the connection.
    Protocol(Cow<'static, str>),
    Io(io::Error),
}

impl From<io::Error> for CodecError {
    fn from(err: io::Error) -> Self {
        CodecError::Io(err)
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Protocol(text) => f.write_str(text),
            CodecError::Io(err) => write!(f, "I/O error: {err}"),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodecError::Protocol(_) => None,
            CodecError::Io(err) => Some(err),
        }
    }
}

fn protocol_error(text: impl Into<Cow<'static, str>>) -> CodecError {
    CodecError::Protocol(text.into())
}

impl Request {
    /// Copies the arguments out of the read buffer they slice into one allocation of their own.
    /// A decoded argument keeps the whole buffer it was read into alive (a 30-byte request can pin
    /// megabytes), which is harmless for a request run at once but not for one that is kept.
    pub fn detach(self) -> Request {
        let mut joined = BytesMut::with_capacity(self.args.iter().map(Bytes::len).sum());
        for arg in &self.args {
            joined.extend_from_slice(arg);
        }
        let joined = joined.freeze();
        let mut offset = 0;
        let args = self
            .args
            .iter()
            .map(|arg| {
                offset += arg.len();
                joined.slice(offset - arg.len()..offset)
            })
            .collect();
        Request { args }
    }

    /// Heap bytes a [detached](Request::detach) request holds: its arguments, their handles and
    /// the allocation headers, as the allocator sees them.
    pub fn detached_size(&self) -> usize {
        /// The shared header `Bytes` allocates once a buffer is sliced, plus the allocator's
        /// rounding of two small allocations.
        const FIXED: usize = 64;
        self.args.iter().map(|arg| arg.len() + std::mem::size_of::<Bytes>()).sum::<usize>() + FIXED
    }
}

/// Redis's caps on a request from a client that has not authenticated yet
/// (`processMultibulkBuffer`), so that an unauthenticated connection can park little memory.
const UNAUTHENTICATED_MAX_ARGS: i64 = 10;
const UNAUTHENTICATED_MAX_BULK_BYTES: usize = 16 * 1024;

/// Tokio codec for the server side of RESP: decodes [`Request`]s, encodes
/// `(`[`Reply`](crate::reply::Reply)`, `[`Protocol`]`)` pairs.
#[derive(Debug)]
pub struct RespCodec {
    limits: Limits,
    /// Until a client authenticates its requests are held to Redis's much smaller caps.
    authenticated: bool,
    state: State,
    /// Where the arguments found so far of the multibulk request at the front of the buffer lie.
    spans: Vec<Range<usize>>,
}

impl RespCodec {
    /// A codec for an authenticated client (or a server without a password).
    pub fn new(limits: Limits) -> Self {
        RespCodec { limits, authenticated: true, state: State::Start, spans: Vec::new() }
    }

    /// The connection's authentication changed (AUTH, HELLO AUTH, RESET): the next request header
    /// is checked against the caps that now apply.
    pub fn set_authenticated(&mut self, authenticated: bool) {
        self.authenticated = authenticated;
    }
}
