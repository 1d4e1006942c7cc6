//! The request scanner: multibulk frames and the dispatch to inline lines, incremental across
//! calls. The rules mirror Redis's `processMultibulkBuffer` / `processInlineBuffer`.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::{
    CodecError, Request, RespCodec, UNAUTHENTICATED_MAX_ARGS, UNAUTHENTICATED_MAX_BULK_BYTES, inline, protocol_error,
};
use crate::errors;

/// Longest `*<n>` or `$<len>` header line, as Redis's `PROTO_INLINE_MAX_SIZE`.
pub(super) const MAX_HEADER_LINE: usize = 64 * 1024;

/// Argument spans kept for the next request: enough for any lock command, so the table is
/// reused, while one huge request does not pin its table for the rest of the connection.
const KEPT_SPANS: usize = 16;

/// Where the decoder stands in the request at the front of the buffer. Offsets are from the
/// start of the buffer, which only ever moves when a whole request (or skipped line) is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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

impl RespCodec {
    /// The request at the front of `buf` is incomplete: wait for more, unless too much is buffered.
    fn incomplete(&self, buf: &BytesMut) -> Result<Option<Request>, CodecError> {
        if buf.len() > self.limits.max_buffer_bytes {
            return Err(protocol_error(errors::PROTO_QUERY_BUFFER));
        }
        Ok(None)
    }

    /// The number of elements a `*<count>` header announces, checked in Redis's order: beyond an
    /// `int`, then the unauthenticated cap, then `--max-args`.
    fn check_count(&self, count: i64) -> Result<usize, CodecError> {
        if count > i64::from(i32::MAX) {
            return Err(protocol_error(errors::PROTO_INVALID_MULTIBULK_LEN));
        }
        if !self.authenticated && count > UNAUTHENTICATED_MAX_ARGS {
            return Err(protocol_error(errors::PROTO_UNAUTHENTICATED_MULTIBULK_LEN));
        }
        usize::try_from(count)
            .ok()
            .filter(|&n| n <= self.limits.max_args)
            .ok_or_else(|| protocol_error(errors::PROTO_INVALID_MULTIBULK_LEN))
    }

    /// Splits the complete multibulk frame `buf[..end]` off and slices its arguments out of it.
    fn split_request(&mut self, buf: &mut BytesMut, end: usize) -> Request {
        let frame = buf.split_to(end).freeze();
        let args = self.spans.drain(..).map(|span| frame.slice(span)).collect();
        self.spans.shrink_to(KEPT_SPANS);
        Request { args }
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
                            return Err(protocol_error(errors::PROTO_TOO_BIG_INLINE));
                        }
                        self.state = State::Inline { scanned: buf.len() };
                        return self.incomplete(buf);
                    };
                    let line_len = match newline.checked_sub(1) {
                        Some(before) if buf.get(before) == Some(&b'\r') => before,
                        _ => newline,
                    };
                    let mut line = buf.split_to(newline + 1);
                    line.truncate(line_len);
                    self.state = State::Start;
                    let args = inline::split_args(&line.freeze(), self.limits.max_args)?;
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
                                return Err(protocol_error(errors::PROTO_TOO_BIG_MBULK_COUNT));
                            }
                            self.state = State::Count { scanned };
                            return self.incomplete(buf);
                        }
                    };
                    let count = buf
                        .get(1..cr)
                        .and_then(parse_ll)
                        .ok_or_else(|| protocol_error(errors::PROTO_INVALID_MULTIBULK_LEN))?;
                    if count <= 0 {
                        // `*0` and `*-1`: nothing to run, skipped like Redis does.
                        buf.advance(cr + 2);
                        self.state = State::Start;
                        continue;
                    }
                    let remaining = self.check_count(count)?;
                    self.state = State::BulkHeader { remaining, pos: cr + 2, scanned: cr + 2 };
                }

                State::BulkHeader { remaining, pos, scanned } => {
                    let Some(&first) = buf.get(pos) else {
                        return self.incomplete(buf);
                    };
                    if first != b'$' {
                        return Err(protocol_error(errors::proto_expected_dollar(first)));
                    }
                    let cr = match find_crlf(buf, pos, scanned) {
                        Ok(cr) => cr,
                        Err(scanned) => {
                            if buf.len() - pos > MAX_HEADER_LINE {
                                return Err(protocol_error(errors::PROTO_TOO_BIG_BULK_COUNT));
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
                        .ok_or_else(|| protocol_error(errors::PROTO_INVALID_BULK_LEN))?;
                    if !self.authenticated && len > UNAUTHENTICATED_MAX_BULK_BYTES {
                        return Err(protocol_error(errors::PROTO_UNAUTHENTICATED_BULK_LEN));
                    }
                    let data = cr + 2;
                    let end = data
                        .checked_add(len)
                        .and_then(|end| end.checked_add(2))
                        .ok_or_else(|| protocol_error(errors::PROTO_INVALID_BULK_LEN))?;
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
                        return Err(protocol_error(errors::PROTO_INVALID_BULK_LEN));
                    }
                    // At most `max_args` spans: `remaining` was checked against it.
                    self.spans.push(pos..pos + len);
                    if remaining > 1 {
                        self.state = State::BulkHeader { remaining: remaining - 1, pos: end, scanned: end };
                    } else {
                        self.state = State::Start;
                        return Ok(Some(self.split_request(buf, end)));
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
            self.spans.clear();
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
    let mut from = scanned.max(line_start);
    while let Some(cr) = find_byte(buf, from, b'\r') {
        if buf.get(cr + 1) == Some(&b'\n') {
            return Ok(cr);
        }
        from = cr + 1;
    }
    Err(buf.len().saturating_sub(1).max(line_start))
}

/// Redis's `string2ll`: an optional `-`, then digits without leading zeros (`0` alone is fine,
/// `-0` is not), fitting in an i64. Stricter than Rust's `parse`, which takes `+1` and `01`.
pub(super) fn parse_ll(text: &[u8]) -> Option<i64> {
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
