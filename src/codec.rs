//! RESP framing for the server side: requests in (multibulk or inline, as Redis accepts them),
//! replies out (RESP2 or RESP3, per connection).
//!
//! `redis-protocol` has no inline commands and no size limits, and it re-parses from the start of
//! the buffer on every call. So the decoder scans incrementally itself — keeping its position
//! between calls, checking every limit before anything is allocated from a length field — and only
//! once it has found a complete multibulk frame hands exactly that frame to `redis-protocol`, which
//! splits it off the buffer without copying. The scanning rules mirror Redis's
//! `processMultibulkBuffer` / `processInlineBuffer`, and the error texts are Redis's own.

use std::borrow::Cow;
use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use redis_protocol::error::RedisProtocolError;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode_borrowed as resp2_encode;
use redis_protocol::resp2::types::{BorrowedFrame as Resp2Frame, BytesFrame as Resp2BytesFrame};
use redis_protocol::resp3::encode::complete::extend_encode_borrowed as resp3_encode;
use redis_protocol::resp3::types::BorrowedFrame as Resp3Frame;
use tokio_util::codec::{Decoder, Encoder};

use crate::errors;
use crate::reply::Reply;

/// Longest `*<n>` or `$<len>` header line, as Redis's `PROTO_INLINE_MAX_SIZE`.
const MAX_HEADER_LINE: usize = 64 * 1024;

/// Per-connection request limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most arguments (command name included) in one multibulk request.
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

fn proto(text: impl Into<Cow<'static, str>>) -> CodecError {
    CodecError::Protocol(text.into())
}

/// `redis-protocol` disagreeing with our own scan is a bug, not a client error: close quietly.
fn internal(what: impl fmt::Display) -> CodecError {
    CodecError::Io(io::Error::new(io::ErrorKind::InvalidData, format!("RESP decoder: {what}")))
}

fn encode_failed(err: RedisProtocolError) -> CodecError {
    CodecError::Io(io::Error::other(format!("RESP encoder: {err}")))
}

/// Where the decoder stands in the request at the front of the buffer. Offsets are from the
/// start of the buffer, which only ever moves when a whole request (or skipped line) is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing of the next request looked at yet.
    Start,
    /// An inline request; `scanned` bytes hold no `\n`.
    Inline { scanned: usize },
    /// The `*<n>` line at offset 0; CRLF searched for (and not found) before `scanned`.
    Count { scanned: usize },
    /// The `$<len>` line of an element at `pos`; `remaining` elements left including this one.
    BulkHeader { remaining: usize, pos: usize, scanned: usize },
    /// An element's data at `pos`, `len` bytes plus CRLF.
    BulkData { remaining: usize, pos: usize, len: usize },
}

/// Tokio codec for the server side of RESP: decodes [`Request`]s, encodes [`Reply`]s.
#[derive(Debug)]
pub struct RespCodec {
    limits: Limits,
    protocol: Protocol,
    state: State,
}

impl RespCodec {
    /// A codec for a new connection, speaking RESP2 until told otherwise.
    pub fn new(limits: Limits) -> Self {
        RespCodec { limits, protocol: Protocol::Resp2, state: State::Start }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Replies encoded from now on use this protocol.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// The request at the front of `buf` is incomplete: wait for more, unless too much is buffered.
    fn incomplete(&self, buf: &BytesMut) -> Result<Option<Request>, CodecError> {
        if buf.len() > self.limits.max_buffer_bytes {
            return Err(proto(errors::PROTO_QUERY_BUFFER));
        }
        Ok(None)
    }

    /// Splits off the complete multibulk frame `buf[..end]` and has `redis-protocol` decode it.
    fn finish_multibulk(buf: &mut BytesMut, end: usize) -> Result<Request, CodecError> {
        let mut frame = buf.split_to(end);
        let (decoded, amt, _) = match decode_bytes_mut(&mut frame) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return Err(internal("complete frame reported incomplete")),
            Err(err) => return Err(internal(err)),
        };
        if amt != end {
            return Err(internal("frame length mismatch"));
        }
        let Resp2BytesFrame::Array(items) = decoded else {
            return Err(internal("frame is not an array"));
        };
        let args = items
            .into_iter()
            .map(|item| match item {
                Resp2BytesFrame::BulkString(data) => Ok(data),
                _ => Err(internal("array element is not a bulk string")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if args.is_empty() {
            return Err(internal("empty array"));
        }
        Ok(Request { args })
    }
}

impl Decoder for RespCodec {
    type Item = Request;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, CodecError> {
        loop {
            match self.state {
                State::Start => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    self.state = if first == b'*' { State::Count { scanned: 0 } } else { State::Inline { scanned: 0 } };
                }

                State::Inline { scanned } => {
                    let Some(newline) = find_byte(buf, scanned, b'\n') else {
                        if buf.len() > self.limits.max_inline_bytes {
                            return Err(proto(errors::PROTO_TOO_BIG_INLINE));
                        }
                        self.state = State::Inline { scanned: buf.len() };
                        return self.incomplete(buf);
                    };
                    let line_len = match newline.checked_sub(1) {
                        Some(before) if buf.get(before) == Some(&b'\r') => before,
                        _ => newline,
                    };
                    let line = buf.split_to(newline + 1);
                    self.state = State::Start;
                    let args = split_args(line.get(..line_len).unwrap_or_default())
                        .ok_or_else(|| proto(errors::PROTO_UNBALANCED_QUOTES))?;
                    if !args.is_empty() {
                        return Ok(Some(Request { args }));
                    }
                    // A blank line: skipped, like Redis does.
                }

                State::Count { scanned } => {
                    let cr = match find_crlf(buf, 0, scanned) {
                        Ok(cr) => cr,
                        Err(scanned) => {
                            if buf.len() > MAX_HEADER_LINE {
                                return Err(proto(errors::PROTO_TOO_BIG_MBULK_COUNT));
                            }
                            self.state = State::Count { scanned };
                            return self.incomplete(buf);
                        }
                    };
                    let count =
                        buf.get(1..cr).and_then(parse_ll).ok_or_else(|| proto(errors::PROTO_INVALID_MULTIBULK_LEN))?;
                    if count <= 0 {
                        // `*0` and `*-1`: nothing to run, skipped like Redis does.
                        buf.advance(cr + 2);
                        self.state = State::Start;
                        continue;
                    }
                    let remaining = usize::try_from(count)
                        .ok()
                        .filter(|&n| n <= self.limits.max_args)
                        .ok_or_else(|| proto(errors::PROTO_INVALID_MULTIBULK_LEN))?;
                    self.state = State::BulkHeader { remaining, pos: cr + 2, scanned: cr + 2 };
                }

                State::BulkHeader { remaining, pos, scanned } => {
                    let Some(&first) = buf.get(pos) else {
                        return self.incomplete(buf);
                    };
                    if first != b'$' {
                        return Err(proto(errors::proto_expected_dollar(first)));
                    }
                    let cr = match find_crlf(buf, pos, scanned) {
                        Ok(cr) => cr,
                        Err(scanned) => {
                            if buf.len() - pos > MAX_HEADER_LINE {
                                return Err(proto(errors::PROTO_TOO_BIG_BULK_COUNT));
                            }
                            self.state = State::BulkHeader { remaining, pos, scanned };
                            return self.incomplete(buf);
                        }
                    };
                    // Checked before anything is sized by it.
                    let len = buf
                        .get(pos + 1..cr)
                        .and_then(parse_ll)
                        .and_then(|len| usize::try_from(len).ok())
                        .filter(|&len| len <= self.limits.max_bulk_bytes)
                        .ok_or_else(|| proto(errors::PROTO_INVALID_BULK_LEN))?;
                    let data = cr + 2;
                    let end = data
                        .checked_add(len)
                        .and_then(|end| end.checked_add(2))
                        .ok_or_else(|| proto(errors::PROTO_INVALID_BULK_LEN))?;
                    // Make room for the whole element at once (never beyond the buffer limit), so
                    // a large argument arriving in many reads doesn't regrow the buffer each time.
                    let want = end.min(self.limits.max_buffer_bytes.saturating_add(1));
                    if want > buf.len() {
                        buf.reserve(want - buf.len());
                    }
                    self.state = State::BulkData { remaining, pos: data, len };
                }

                State::BulkData { remaining, pos, len } => {
                    let end = pos + len + 2; // cannot overflow: checked when the header was read
                    let Some(terminator) = buf.get(end - 2..end) else {
                        return self.incomplete(buf);
                    };
                    if terminator != b"\r\n" {
                        return Err(proto(errors::PROTO_INVALID_BULK_LEN));
                    }
                    if remaining > 1 {
                        self.state = State::BulkHeader { remaining: remaining - 1, pos: end, scanned: end };
                    } else {
                        self.state = State::Start;
                        return Self::finish_multibulk(buf, end).map(Some);
                    }
                }
            }
        }
    }

    /// A request cut short by the client closing is dropped silently, as Redis does.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, CodecError> {
        let request = self.decode(buf)?;
        if request.is_none() {
            buf.clear();
            self.state = State::Start;
        }
        Ok(request)
    }
}

/// First `byte` at or after `from`.
fn find_byte(buf: &[u8], from: usize, byte: u8) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.iter().position(|&b| b == byte).map(|i| from + i)
}

/// Offset of the first CRLF of the line starting at `line_start`, resuming the search at
/// `scanned`. When there is none yet, `Err` carries where to resume next time (a trailing `\r`
/// is looked at again, as its `\n` may be the next byte to arrive).
fn find_crlf(buf: &[u8], line_start: usize, scanned: usize) -> Result<usize, usize> {
    let from = scanned.max(line_start);
    if let Some(rest) = buf.get(from..)
        && let Some(i) = rest.windows(2).position(|pair| pair == b"\r\n")
    {
        return Ok(from + i);
    }
    Err(buf.len().saturating_sub(1).max(line_start))
}

/// Redis's `string2ll`: an optional `-`, then digits without leading zeros (`0` alone is fine,
/// `-0` is not), fitting in an i64. Stricter than Rust's `parse`, so whatever passes here
/// `redis-protocol` reads the same way.
fn parse_ll(text: &[u8]) -> Option<i64> {
    match text {
        [b'0'] => Some(0),
        [b'-', digits @ ..] => 0i64.checked_sub_unsigned(parse_digits(digits)?),
        digits => i64::try_from(parse_digits(digits)?).ok(),
    }
}

fn parse_digits(digits: &[u8]) -> Option<u64> {
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// C's `isspace`, which Redis uses to skip blanks between arguments.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn hex_value(byte: Option<&u8>) -> Option<u8> {
    let digit = char::from(*byte?).to_digit(16)?;
    u8::try_from(digit).ok()
}

/// Redis's `sdssplitargs`: whitespace-separated arguments, `"double quotes"` with `\n \r \t \b
/// \a \\ \"` and `\xHH` escapes, `'single quotes'` with `\'`; a closing quote must be followed by
/// whitespace or the end of the line. `None` for unbalanced quotes.
fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|&b| is_space(b)) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let byte = line.get(i).copied();
            if in_double {
                match byte {
                    None => return None,
                    Some(b'\\') if i + 1 < line.len() => {
                        let escaped = line.get(i + 1).copied().unwrap_or_default();
                        if escaped == b'x'
                            && let (Some(high), Some(low)) = (hex_value(line.get(i + 2)), hex_value(line.get(i + 3)))
                        {
                            current.push(high * 16 + low);
                            i += 4;
                            continue;
                        }
                        current.push(match escaped {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => b'\x08',
                            b'a' => b'\x07',
                            other => other,
                        });
                        i += 2;
                    }
                    Some(b'"') => {
                        if line.get(i + 1).is_some_and(|&b| !is_space(b)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        current.push(other);
                        i += 1;
                    }
                }
            } else if in_single {
                match byte {
                    None => return None,
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        current.push(b'\'');
                        i += 2;
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|&b| !is_space(b)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        current.push(other);
                        i += 1;
                    }
                }
            } else {
                match byte {
                    None => break,
                    Some(b' ' | b'\n' | b'\r' | b'\t') => {
                        i += 1;
                        break;
                    }
                    Some(b'"') => {
                        in_double = true;
                        i += 1;
                    }
                    Some(b'\'') => {
                        in_single = true;
                        i += 1;
                    }
                    Some(other) => {
                        current.push(other);
                        i += 1;
                    }
                }
            }
        }
        args.push(Bytes::from(current));
    }
}

impl Encoder<&Reply> for RespCodec {
    type Error = CodecError;

    fn encode(&mut self, reply: &Reply, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.reserve(encoded_len_estimate(reply));
        write_reply(reply, self.protocol, dst)
    }
}

impl Encoder<Reply> for RespCodec {
    type Error = CodecError;

    fn encode(&mut self, reply: Reply, dst: &mut BytesMut) -> Result<(), CodecError> {
        <Self as Encoder<&Reply>>::encode(self, &reply, dst)
    }
}

/// Status and error text must stay on one line or the reply would break framing.
fn one_line(text: &str) -> Cow<'_, str> {
    if text.contains(['\r', '\n']) { Cow::Owned(text.replace(['\r', '\n'], " ")) } else { Cow::Borrowed(text) }
}

/// Upper-bound-ish size of the encoded reply, to reserve the output buffer once.
fn encoded_len_estimate(reply: &Reply) -> usize {
    // Type byte, up to 20 digits, CRLF.
    const HEADER: usize = 1 + 20 + 2;
    match reply {
        Reply::Status(text) | Reply::Error(text) => text.len().saturating_add(3),
        Reply::Int(_) | Reply::Nil | Reply::NilArray => HEADER,
        Reply::Bulk(data) => data.len().saturating_add(HEADER + 2),
        Reply::Array(items) => {
            items.iter().fold(HEADER, |total, item| total.saturating_add(encoded_len_estimate(item)))
        }
        Reply::Map(pairs) => pairs.iter().fold(HEADER, |total, (key, value)| {
            total.saturating_add(encoded_len_estimate(key)).saturating_add(encoded_len_estimate(value))
        }),
    }
}

/// Aggregate headers (`*<n>`, `%<n>`) are written here and each element encoded in turn, so no
/// frame tree is built; every leaf goes through `redis-protocol`'s encoders.
fn write_reply(reply: &Reply, protocol: Protocol, dst: &mut BytesMut) -> Result<(), CodecError> {
    match reply {
        Reply::Array(items) => {
            write_aggregate_header(dst, b'*', items.len());
            for item in items {
                write_reply(item, protocol, dst)?;
            }
            Ok(())
        }
        Reply::Map(pairs) => {
            match protocol {
                Protocol::Resp2 => write_aggregate_header(dst, b'*', pairs.len().saturating_mul(2)),
                Protocol::Resp3 => write_aggregate_header(dst, b'%', pairs.len()),
            }
            for (key, value) in pairs {
                write_reply(key, protocol, dst)?;
                write_reply(value, protocol, dst)?;
            }
            Ok(())
        }
        Reply::Status(status) => {
            let status = one_line(status);
            match protocol {
                Protocol::Resp2 => resp2_leaf(dst, &Resp2Frame::SimpleString(status.as_bytes())),
                Protocol::Resp3 => {
                    resp3_leaf(dst, &Resp3Frame::SimpleString { data: status.as_bytes(), attributes: None })
                }
            }
        }
        Reply::Error(error) => {
            let error = one_line(error);
            match protocol {
                Protocol::Resp2 => resp2_leaf(dst, &Resp2Frame::Error(&error)),
                Protocol::Resp3 => resp3_leaf(dst, &Resp3Frame::SimpleError { data: &error, attributes: None }),
            }
        }
        Reply::Int(value) => match protocol {
            Protocol::Resp2 => resp2_leaf(dst, &Resp2Frame::Integer(*value)),
            Protocol::Resp3 => resp3_leaf(dst, &Resp3Frame::Number { data: *value, attributes: None }),
        },
        Reply::Bulk(data) => match protocol {
            Protocol::Resp2 => resp2_leaf(dst, &Resp2Frame::BulkString(data)),
            Protocol::Resp3 => resp3_leaf(dst, &Resp3Frame::BlobString { data, attributes: None }),
        },
        Reply::Nil => match protocol {
            Protocol::Resp2 => resp2_leaf(dst, &Resp2Frame::Null),
            Protocol::Resp3 => resp3_leaf(dst, &Resp3Frame::Null),
        },
        Reply::NilArray => match protocol {
            // redis-protocol's RESP2 Null is the null bulk string `$-1`; a null array is `*-1`.
            Protocol::Resp2 => {
                dst.extend_from_slice(b"*-1\r\n");
                Ok(())
            }
            Protocol::Resp3 => resp3_leaf(dst, &Resp3Frame::Null),
        },
    }
}

fn resp2_leaf(dst: &mut BytesMut, frame: &Resp2Frame<'_>) -> Result<(), CodecError> {
    resp2_encode(dst, frame, false).map(drop).map_err(encode_failed)
}

fn resp3_leaf(dst: &mut BytesMut, frame: &Resp3Frame<'_>) -> Result<(), CodecError> {
    resp3_encode(dst, frame, false).map(drop).map_err(encode_failed)
}

fn write_aggregate_header(dst: &mut BytesMut, kind: u8, len: usize) {
    let mut digits = [0u8; 40];
    let mut start = digits.len();
    let mut rest = len;
    loop {
        start -= 1;
        if let Some(slot) = digits.get_mut(start) {
            *slot = b'0' + (rest % 10) as u8;
        }
        rest /= 10;
        if rest == 0 || start == 0 {
            break;
        }
    }
    dst.put_u8(kind);
    dst.extend_from_slice(digits.get(start..).unwrap_or_default());
    dst.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_args: 1024,
        max_bulk_bytes: 1024 * 1024,
        max_inline_bytes: 64 * 1024,
        max_buffer_bytes: 4 * 1024 * 1024,
    };

    fn codec() -> RespCodec {
        RespCodec::new(LIMITS)
    }

    fn req(args: &[&[u8]]) -> Request {
        Request { args: args.iter().map(|a| Bytes::copy_from_slice(a)).collect() }
    }

    /// Decodes every complete request in `input`; stops at the first error.
    fn decode_all(codec: &mut RespCodec, buf: &mut BytesMut) -> Result<Vec<Request>, CodecError> {
        let mut out = Vec::new();
        while let Some(request) = codec.decode(buf)? {
            out.push(request);
        }
        Ok(out)
    }

    fn decode_bytes(limits: Limits, input: &[u8]) -> Result<Vec<Request>, CodecError> {
        let mut codec = RespCodec::new(limits);
        decode_all(&mut codec, &mut BytesMut::from(input))
    }

    fn expect_error(limits: Limits, input: &[u8]) -> String {
        match decode_bytes(limits, input) {
            Err(CodecError::Protocol(text)) => text.into_owned(),
            other => panic!("expected a protocol error for {input:?}, got {other:?}"),
        }
    }

    fn multibulk(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// xorshift64*: deterministic, dependency-free randomness for the fuzz loops.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    // ---- multibulk ----

    #[test]
    fn multibulk_basic() {
        let mut codec = codec();
        let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(req(&[b"SET", b"key", b"value"])));
        assert!(buf.is_empty());
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn multibulk_is_binary_safe() {
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nECHO\r\n$7\r\na\r\nb\0c\n\r\n"[..]);
        let got = codec().decode(&mut buf).unwrap().unwrap();
        assert_eq!(got, req(&[b"ECHO", b"a\r\nb\0c\n"]));
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_bulk_argument() {
        let got = decode_bytes(LIMITS, b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n").unwrap();
        assert_eq!(got, vec![req(&[b"GET", b""])]);
    }

    #[test]
    fn pipelined_frames_decode_in_order() {
        let mut input = multibulk(&[b"PING"]);
        input.extend_from_slice(b"ECHO inline\r\n");
        input.extend_from_slice(&multibulk(&[b"SET", b"k", b"v"]));
        input.extend_from_slice(b"*0\r\n\r\n");
        input.extend_from_slice(&multibulk(&[b"GET", b"k"]));
        input.extend_from_slice(b"*2\r\n$3\r\nGET"); // incomplete tail stays buffered
        let mut codec = codec();
        let mut buf = BytesMut::from(&input[..]);
        let got = decode_all(&mut codec, &mut buf).unwrap();
        assert_eq!(
            got,
            vec![req(&[b"PING"]), req(&[b"ECHO", b"inline"]), req(&[b"SET", b"k", b"v"]), req(&[b"GET", b"k"]),]
        );
        assert_eq!(&buf[..], b"*2\r\n$3\r\nGET");
        buf.extend_from_slice(b"\r\n$1\r\nx\r\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(req(&[b"GET", b"x"])));
        assert!(buf.is_empty());
    }

    #[test]
    fn frame_fed_one_byte_at_a_time() {
        let input = multibulk(&[b"LOCK.TRY", b"key", b"owner\r\n", b""]);
        let mut codec = codec();
        let mut buf = BytesMut::new();
        for (i, byte) in input.iter().enumerate() {
            buf.put_u8(*byte);
            let got = codec.decode(&mut buf).unwrap();
            if i + 1 < input.len() {
                assert_eq!(got, None, "request produced early at byte {i}");
            } else {
                assert_eq!(got, Some(req(&[b"LOCK.TRY", b"key", b"owner\r\n", b""])));
            }
        }
        assert!(buf.is_empty());
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn inline_fed_one_byte_at_a_time() {
        let input = b"SET \"a b\" c\r\n";
        let mut codec = codec();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in input {
            buf.put_u8(*byte);
            got.extend(codec.decode(&mut buf).unwrap());
        }
        assert_eq!(got, vec![req(&[b"SET", b"a b", b"c"])]);
    }

    #[test]
    fn scan_state_is_kept_between_calls() {
        let mut codec = codec();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$10"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        // The second element's header line will be searched from where this search stopped
        // (its last byte is looked at again, in case it is the `\r` of a split CRLF).
        assert_eq!(codec.state, State::BulkHeader { remaining: 1, pos: 13, scanned: 15 });
        buf.extend_from_slice(b"\r");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(codec.state, State::BulkHeader { remaining: 1, pos: 13, scanned: 16 });
        buf.extend_from_slice(b"\n01234");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        // The data is not scanned at all: only its end is waited for.
        assert_eq!(codec.state, State::BulkData { remaining: 1, pos: 18, len: 10 });
        buf.extend_from_slice(b"56789\r\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(req(&[b"GET", b"0123456789"])));
        assert_eq!(codec.state, State::Start);
    }

    #[test]
    fn large_frame_in_small_chunks_is_linear() {
        // With a decoder that re-parses from the start on every call this takes hours.
        let big = vec![b'x'; 512 * 1024];
        let many: Vec<Vec<u8>> = (0..1000).map(|i| format!("arg{i}").into_bytes()).collect();
        let mut args: Vec<&[u8]> = vec![b"CMD"];
        args.extend(many.iter().map(Vec::as_slice));
        args.push(&big);
        let input = multibulk(&args);
        let mut codec = codec();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for (i, byte) in input.iter().enumerate() {
            buf.put_u8(*byte);
            if let Some(request) = codec.decode(&mut buf).unwrap() {
                assert_eq!(i + 1, input.len());
                got.push(request);
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].args.len(), 1002);
        assert_eq!(got[0].args[1000], Bytes::from_static(b"arg999"));
        assert_eq!(got[0].args[1001], big);
    }

    #[test]
    fn random_chunking_gives_the_same_requests() {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for i in 0..50u32 {
            let arg = format!("value\r\n{i}").into_bytes();
            input.extend_from_slice(&multibulk(&[b"SET", b"key", &arg]));
            expected.push(req(&[b"SET", b"key", &arg]));
            input.extend_from_slice(format!("PING {i}\r\n\r\n*0\r\n").as_bytes());
            expected.push(req(&[b"PING", i.to_string().as_bytes()]));
        }
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..200 {
            let mut codec = codec();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let take = 1 + rng.below(40);
                let end = (at + take).min(input.len());
                buf.extend_from_slice(&input[at..end]);
                at = end;
                got.extend(decode_all(&mut codec, &mut buf).unwrap());
            }
            assert_eq!(got, expected);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn empty_and_null_multibulk_are_skipped() {
        let mut input = b"*0\r\n*-1\r\n*-5\r\n".to_vec();
        input.extend_from_slice(&multibulk(&[b"PING"]));
        let mut codec = codec();
        let mut buf = BytesMut::from(&input[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(req(&[b"PING"])));
        assert!(buf.is_empty());
        let mut buf = BytesMut::from(&b"*0\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    // ---- inline ----

    #[test]
    fn inline_ping() {
        assert_eq!(decode_bytes(LIMITS, b"PING\r\n").unwrap(), vec![req(&[b"PING"])]);
        assert_eq!(decode_bytes(LIMITS, b"PING\n").unwrap(), vec![req(&[b"PING"])]);
        let mut codec = codec();
        let mut buf = BytesMut::from(&b"PING"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\r");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(req(&[b"PING"])));
    }

    #[test]
    fn inline_quoting() {
        let got = decode_bytes(LIMITS, b"set \"a b\" 'c d' \"\\x41\\n\"\r\n").unwrap();
        assert_eq!(got, vec![req(&[b"set", b"a b", b"c d", b"A\n"])]);
        let got =
            decode_bytes(LIMITS, b"x \"\\t\\r\\b\\a\\\\\\\"\\q\\xZZ\\x4a\" 'it\\'s' 'a\\b' \"\" ab\"cd\"\n").unwrap();
        assert_eq!(got, vec![req(&[b"x", b"\t\r\x08\x07\\\"qxZZJ", b"it's", b"a\\b", b"", b"abcd"])]);
        // Tabs and repeated blanks separate arguments; a bare \r inside the line does too.
        let got = decode_bytes(LIMITS, b"  a\t\tb  c\rd  \r\n").unwrap();
        assert_eq!(got, vec![req(&[b"a", b"b", b"c", b"d"])]);
        // Binary bytes outside quotes are kept as they are.
        let got = decode_bytes(LIMITS, b"echo a\0b\xff\n").unwrap();
        assert_eq!(got, vec![req(&[b"echo", b"a\0b\xff"])]);
    }

    #[test]
    fn blank_inline_lines_are_skipped() {
        let mut codec = codec();
        let mut buf = BytesMut::from(&b"\r\n\n   \t \r\nPING\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(req(&[b"PING"])));
        assert!(buf.is_empty());
        let mut buf = BytesMut::from(&b"\r\n \n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn unbalanced_quotes() {
        for input in [
            &b"set \"abc\r\n"[..],
            b"set 'abc\r\n",
            b"set \"a\"b\r\n",
            b"set 'a'b\r\n",
            b"set \"a\\\"\r\n",
            b"set \"a\\\n",
        ] {
            assert_eq!(expect_error(LIMITS, input), errors::PROTO_UNBALANCED_QUOTES, "{input:?}");
        }
        // A closing quote followed by whitespace or the end is fine.
        assert_eq!(decode_bytes(LIMITS, b"'a'\t\"b\"\n").unwrap(), vec![req(&[b"a", b"b"])]);
    }

    // ---- errors ----

    #[test]
    fn invalid_multibulk_length() {
        for input in [
            &b"*abc\r\n"[..],
            b"*\r\n",
            b"*1x\r\n",
            b"*01\r\n",
            b"*+1\r\n",
            b"*-0\r\n",
            b"* 1\r\n",
            b"*99999999999999999999\r\n",
            b"*1025\r\n",
        ] {
            assert_eq!(expect_error(LIMITS, input), errors::PROTO_INVALID_MULTIBULK_LEN, "{input:?}");
        }
    }

    #[test]
    fn too_big_count_strings() {
        let no_buffer_limit = Limits { max_buffer_bytes: usize::MAX, ..LIMITS };
        let mut line = b"*".to_vec();
        line.resize(MAX_HEADER_LINE, b'1');
        assert_eq!(decode_bytes(no_buffer_limit, &line).unwrap(), vec![]);
        line.push(b'1');
        assert_eq!(expect_error(no_buffer_limit, &line), errors::PROTO_TOO_BIG_MBULK_COUNT);

        let mut line = b"*1\r\n$".to_vec();
        line.resize(4 + MAX_HEADER_LINE, b'1');
        assert_eq!(decode_bytes(no_buffer_limit, &line).unwrap(), vec![]);
        line.push(b'1');
        assert_eq!(expect_error(no_buffer_limit, &line), errors::PROTO_TOO_BIG_BULK_COUNT);
    }

    #[test]
    fn expected_dollar() {
        assert_eq!(expect_error(LIMITS, b"*1\r\nfoo\r\n"), "ERR Protocol error: expected '$', got 'f'");
        assert_eq!(expect_error(LIMITS, b"*2\r\n$3\r\nGET\r\n:1\r\n"), "ERR Protocol error: expected '$', got ':'");
        assert_eq!(expect_error(LIMITS, b"*1\r\n*1\r\n"), errors::proto_expected_dollar(b'*'));
    }

    #[test]
    fn invalid_bulk_length() {
        for input in [
            &b"*1\r\n$abc\r\n"[..],
            b"*1\r\n$\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$-3\r\n",
            b"*1\r\n$03\r\n",
            b"*1\r\n$99999999999999999999999\r\n",
            b"*1\r\n$3\r\nabcd\r\n",
            b"*1\r\n$3\r\nab\r\n\r\n",
            b"*1\r\n$3\r\nabc\n\n",
        ] {
            assert_eq!(expect_error(LIMITS, input), errors::PROTO_INVALID_BULK_LEN, "{input:?}");
        }
    }

    #[test]
    fn over_limit_bulk_length_does_not_allocate() {
        let mut codec = codec();
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(b"*1\r\n$9999999999999\r\n");
        let capacity = buf.capacity();
        match codec.decode(&mut buf) {
            Err(CodecError::Protocol(text)) => assert_eq!(text, errors::PROTO_INVALID_BULK_LEN),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn allowed_bulk_length_reserves_once() {
        let mut codec = codec();
        let header = b"*1\r\n$100000\r\n";
        let mut buf = BytesMut::from(&header[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        let whole_frame = header.len() + 100_000 + 2;
        assert!(buf.capacity() >= whole_frame, "capacity {}", buf.capacity());
        // Never beyond the buffer limit, though.
        let mut codec = RespCodec::new(Limits { max_buffer_bytes: 50_000, ..LIMITS });
        let mut buf = BytesMut::from(&header[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() < whole_frame, "capacity {}", buf.capacity());
    }

    #[test]
    fn too_big_inline() {
        let limits = Limits { max_inline_bytes: 10, ..LIMITS };
        assert_eq!(decode_bytes(limits, b"0123456789").unwrap(), vec![]);
        assert_eq!(expect_error(limits, b"0123456789a"), errors::PROTO_TOO_BIG_INLINE);
        // Like Redis, the limit is on a line still waiting for its newline.
        assert_eq!(decode_bytes(limits, b"0123456789abc\n").unwrap(), vec![req(&[b"0123456789abc"])]);
    }

    #[test]
    fn query_buffer_limit() {
        let limits = Limits { max_buffer_bytes: 100, ..LIMITS };
        let mut frame = b"*2\r\n$3\r\nSET\r\n$200\r\n".to_vec();
        frame.resize(100, b'v');
        assert_eq!(decode_bytes(limits, &frame).unwrap(), vec![]);
        frame.push(b'v');
        assert_eq!(expect_error(limits, &frame), errors::PROTO_QUERY_BUFFER);
        // Incomplete inline requests count too.
        let mut line = vec![b'a'; 100];
        assert_eq!(decode_bytes(limits, &line).unwrap(), vec![]);
        line.push(b'a');
        assert_eq!(expect_error(limits, &line), errors::PROTO_QUERY_BUFFER);
        // Complete requests are fine whatever the buffer size.
        let mut many = Vec::new();
        for _ in 0..20 {
            many.extend_from_slice(&multibulk(&[b"PING", b"0123456789"]));
        }
        assert_eq!(decode_bytes(limits, &many).unwrap().len(), 20);
    }

    #[test]
    fn max_args_boundary() {
        let limits = Limits { max_args: 3, ..LIMITS };
        assert_eq!(decode_bytes(limits, &multibulk(&[b"a", b"b", b"c"])).unwrap().len(), 1);
        assert_eq!(expect_error(limits, &multibulk(&[b"a", b"b", b"c", b"d"])), errors::PROTO_INVALID_MULTIBULK_LEN);
        // Rejected from the header alone.
        assert_eq!(expect_error(limits, b"*4\r\n"), errors::PROTO_INVALID_MULTIBULK_LEN);
    }

    #[test]
    fn max_bulk_bytes_boundary() {
        let limits = Limits { max_bulk_bytes: 5, ..LIMITS };
        assert_eq!(decode_bytes(limits, &multibulk(&[b"12345"])).unwrap(), vec![req(&[b"12345"])]);
        assert_eq!(expect_error(limits, &multibulk(&[b"123456"])), errors::PROTO_INVALID_BULK_LEN);
        assert_eq!(expect_error(limits, b"*1\r\n$6\r\n"), errors::PROTO_INVALID_BULK_LEN);
    }

    #[test]
    fn truncated_request_at_eof_is_dropped() {
        let mut codec = codec();
        let mut buf = BytesMut::from(&b"PING\r\n*2\r\n$3\r\nGET"[..]);
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(req(&[b"PING"])));
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        assert_eq!(codec.state, State::Start);
    }

    #[test]
    fn parse_ll_matches_string2ll() {
        assert_eq!(parse_ll(b"0"), Some(0));
        assert_eq!(parse_ll(b"-1"), Some(-1));
        assert_eq!(parse_ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-", b"-0", b"00", b"01", b"+1", b" 1", b"1 ", b"9223372036854775808", b"1a"] {
            assert_eq!(parse_ll(bad), None, "{bad:?}");
        }
    }

    // ---- robustness ----

    fn run_to_end(limits: Limits, input: &[u8], rng: &mut Rng) {
        let mut codec = RespCodec::new(limits);
        let mut buf = BytesMut::new();
        let mut at = 0;
        while at < input.len() {
            let end = (at + 1 + rng.below(16)).min(input.len());
            buf.extend_from_slice(&input[at..end]);
            at = end;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(request)) => assert!(!request.args.is_empty()),
                    Ok(None) => break,
                    Err(CodecError::Protocol(text)) => {
                        assert!(text.starts_with("ERR Protocol error: "));
                        return;
                    }
                    Err(CodecError::Io(err)) => panic!("internal error on {input:?}: {err}"),
                }
            }
        }
        let _ = codec.decode_eof(&mut buf);
    }

    #[test]
    fn random_bytes_never_panic() {
        let limits = Limits { max_args: 8, max_bulk_bytes: 64, max_inline_bytes: 64, max_buffer_bytes: 256 };
        let alphabet = b"*$\r\n-0123456789 \"'\\xaA\0:+";
        let mut rng = Rng(42);
        for _ in 0..3000 {
            let len = rng.below(200);
            let input: Vec<u8> = (0..len)
                .map(|_| if rng.below(2) == 0 { alphabet[rng.below(alphabet.len())] } else { rng.next() as u8 })
                .collect();
            run_to_end(limits, &input, &mut rng);
            run_to_end(LIMITS, &input, &mut rng);
        }
    }

    #[test]
    fn mutated_frames_never_panic() {
        let limits = Limits { max_args: 8, max_bulk_bytes: 64, max_inline_bytes: 64, max_buffer_bytes: 256 };
        let mut seeds = vec![
            multibulk(&[b"LOCK.TRY", b"key", b"owner"]),
            multibulk(&[b"SET", b"a\r\nb", b""]),
            b"set \"a b\" 'c d' \"\\x41\\n\"\r\n".to_vec(),
            b"*0\r\n*-1\r\nPING\r\n".to_vec(),
        ];
        let mut joined = Vec::new();
        for seed in &seeds {
            joined.extend_from_slice(seed);
        }
        seeds.push(joined);
        let mut rng = Rng(7);
        for _ in 0..4000 {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(input.len() + 1);
                match rng.below(6) {
                    0 if at < input.len() => input[at] = rng.next() as u8,
                    1 => input.insert(at, b"*$\r\n-9\"'"[rng.below(8)]),
                    2 if at < input.len() => {
                        input.remove(at);
                    }
                    3 => input.truncate(at),
                    4 => {
                        let digits = ["0", "-1", "65", "9999999999999999999999", "8"][rng.below(5)];
                        input.splice(at..at, digits.bytes());
                    }
                    _ => {
                        let copy = input[at..].to_vec();
                        input.extend_from_slice(&copy);
                    }
                }
            }
            run_to_end(limits, &input, &mut rng);
            run_to_end(LIMITS, &input, &mut rng);
        }
    }

    // ---- encoder ----

    fn encode(protocol: Protocol, reply: Reply) -> Vec<u8> {
        let mut codec = codec();
        codec.set_protocol(protocol);
        assert_eq!(codec.protocol(), protocol);
        let mut by_ref = BytesMut::new();
        codec.encode(&reply, &mut by_ref).unwrap();
        let mut by_value = BytesMut::from(&b"prefix"[..]);
        codec.encode(reply, &mut by_value).unwrap();
        assert_eq!(&by_value[6..], &by_ref[..]);
        by_ref.to_vec()
    }

    fn both(reply: Reply, resp2: &[u8], resp3: &[u8]) {
        assert_eq!(encode(Protocol::Resp2, reply.clone()), resp2, "RESP2 {reply:?}");
        assert_eq!(encode(Protocol::Resp3, reply.clone()), resp3, "RESP3 {reply:?}");
    }

    #[test]
    fn new_codec_speaks_resp2() {
        assert_eq!(codec().protocol(), Protocol::Resp2);
    }

    #[test]
    fn encode_scalars() {
        both(Reply::ok(), b"+OK\r\n", b"+OK\r\n");
        both(Reply::Status("QUEUED".into()), b"+QUEUED\r\n", b"+QUEUED\r\n");
        both(Reply::error("ERR syntax error"), b"-ERR syntax error\r\n", b"-ERR syntax error\r\n");
        both(Reply::Int(0), b":0\r\n", b":0\r\n");
        both(Reply::Int(-42), b":-42\r\n", b":-42\r\n");
        both(Reply::Int(i64::MAX), b":9223372036854775807\r\n", b":9223372036854775807\r\n");
        both(Reply::bulk("hello"), b"$5\r\nhello\r\n", b"$5\r\nhello\r\n");
        both(Reply::bulk(""), b"$0\r\n\r\n", b"$0\r\n\r\n");
        both(Reply::bulk(b"a\r\n\0b"), b"$5\r\na\r\n\0b\r\n", b"$5\r\na\r\n\0b\r\n");
        both(Reply::Nil, b"$-1\r\n", b"_\r\n");
        both(Reply::NilArray, b"*-1\r\n", b"_\r\n");
    }

    #[test]
    fn status_and_error_text_stays_on_one_line() {
        both(Reply::Status("a\r\nb\nc\r".into()), b"+a  b c \r\n", b"+a  b c \r\n");
        both(Reply::error("ERR bad\r\n+OK"), b"-ERR bad  +OK\r\n", b"-ERR bad  +OK\r\n");
        // Bulk strings are binary safe and left alone.
        both(Reply::bulk("a\nb"), b"$3\r\na\nb\r\n", b"$3\r\na\nb\r\n");
    }

    #[test]
    fn encode_arrays() {
        both(Reply::Array(vec![]), b"*0\r\n", b"*0\r\n");
        let nested = Reply::Array(vec![
            Reply::bulk_static("ACQUIRED"),
            Reply::Int(7),
            Reply::Array(vec![Reply::Nil, Reply::NilArray, Reply::ok(), Reply::Array(vec![])]),
            Reply::error("ERR x"),
        ]);
        both(
            nested,
            b"*4\r\n$8\r\nACQUIRED\r\n:7\r\n*4\r\n$-1\r\n*-1\r\n+OK\r\n*0\r\n-ERR x\r\n",
            b"*4\r\n$8\r\nACQUIRED\r\n:7\r\n*4\r\n_\r\n_\r\n+OK\r\n*0\r\n-ERR x\r\n",
        );
        let long = Reply::Array((0..12).map(Reply::Int).collect());
        let mut expected = b"*12\r\n".to_vec();
        for i in 0..12 {
            expected.extend_from_slice(format!(":{i}\r\n").as_bytes());
        }
        both(long, &expected, &expected);
    }

    #[test]
    fn encode_maps() {
        both(Reply::Map(vec![]), b"*0\r\n", b"%0\r\n");
        // Order is kept, and so are repeated keys.
        let map = Reply::Map(vec![
            (Reply::bulk_static("state"), Reply::bulk_static("held")),
            (Reply::bulk_static("holder"), Reply::Nil),
            (Reply::bulk_static("queue"), Reply::Array(vec![Reply::bulk_static("a"), Reply::bulk_static("b")])),
            (
                Reply::bulk_static("inner"),
                Reply::Map(vec![(Reply::bulk_static("n"), Reply::Int(1)), (Reply::bulk_static("n"), Reply::Int(2))]),
            ),
            (Reply::bulk_static("abc"), Reply::Int(3)),
        ]);
        both(
            map,
            b"*10\r\n$5\r\nstate\r\n$4\r\nheld\r\n$6\r\nholder\r\n$-1\r\n$5\r\nqueue\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n\
$5\r\ninner\r\n*4\r\n$1\r\nn\r\n:1\r\n$1\r\nn\r\n:2\r\n$3\r\nabc\r\n:3\r\n",
            b"%5\r\n$5\r\nstate\r\n$4\r\nheld\r\n$6\r\nholder\r\n_\r\n$5\r\nqueue\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n\
$5\r\ninner\r\n%2\r\n$1\r\nn\r\n:1\r\n$1\r\nn\r\n:2\r\n$3\r\nabc\r\n:3\r\n",
        );
    }

    #[test]
    fn encoded_requests_round_trip_through_the_decoder() {
        let reply = Reply::Array(vec![Reply::bulk("SET"), Reply::bulk("k\r\n"), Reply::bulk("")]);
        let bytes = encode(Protocol::Resp2, reply);
        assert_eq!(decode_bytes(LIMITS, &bytes).unwrap(), vec![req(&[b"SET", b"k\r\n", b""])]);
    }

    #[test]
    fn codec_error_display() {
        assert_eq!(proto(errors::PROTO_INVALID_BULK_LEN).to_string(), errors::PROTO_INVALID_BULK_LEN);
        let io: CodecError = io::Error::other("boom").into();
        assert!(io.to_string().contains("boom"));
        assert!(std::error::Error::source(&io).is_some());
    }
}
