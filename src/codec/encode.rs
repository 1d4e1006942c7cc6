//! Replies out: RESP2 or RESP3 as the caller says with each reply. Integers, bulk strings and
//! aggregate headers, which are the same in both, are written here (redis-protocol counts an
//! integer's digits with a floating-point log10, a few percent of the server's CPU under
//! pipelined LOCK.TRY); every other leaf goes through `redis-protocol`'s encoders.

use std::borrow::Cow;
use std::io;

use bytes::{BufMut, BytesMut};
use redis_protocol::error::RedisProtocolError;
use redis_protocol::resp2::encode::extend_encode_borrowed as resp2_encode;
use redis_protocol::resp2::types::BorrowedFrame as Resp2Frame;
use redis_protocol::resp3::encode::complete::extend_encode_borrowed as resp3_encode;
use redis_protocol::resp3::types::BorrowedFrame as Resp3Frame;
use tokio_util::codec::Encoder;

use super::{CodecError, Protocol, RespCodec};
use crate::reply::Reply;

impl Encoder<(Reply, Protocol)> for RespCodec {
    type Error = CodecError;

    fn encode(&mut self, (reply, protocol): (Reply, Protocol), dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.reserve(encoded_len_estimate(&reply));
        write_reply(&reply, protocol, dst)
    }
}

/// `reply` as `protocol` renders it, for sharing as [`Reply::Rendered`].
pub(crate) fn render(reply: &Reply, protocol: Protocol) -> Result<bytes::Bytes, CodecError> {
    let mut rendered = BytesMut::with_capacity(encoded_len_estimate(reply));
    write_reply(reply, protocol, &mut rendered)?;
    Ok(rendered.freeze())
}

fn encode_failed(err: RedisProtocolError) -> CodecError {
    CodecError::Io(io::Error::other(format!("RESP encoder: {err}")))
}

/// Status and error text must stay on one line or the reply would break framing.
fn one_line(text: &str) -> Cow<'_, str> {
    if text.contains(['\r', '\n']) { Cow::Owned(text.replace(['\r', '\n'], " ")) } else { Cow::Borrowed(text) }
}

/// Upper-bound-ish size of the encoded reply, to reserve the output buffer once (and to count
/// what is queued for a subscriber against its output-buffer limit).
pub(crate) fn encoded_len_estimate(reply: &Reply) -> usize {
    // Type byte, up to 20 digits, CRLF.
    const HEADER: usize = 1 + 20 + 2;
    match reply {
        Reply::Status(text) | Reply::Error(text) => text.len().saturating_add(3),
        Reply::Int(_) | Reply::Nil | Reply::NilArray => HEADER,
        Reply::Bulk(data) => data.len().saturating_add(HEADER + 2),
        Reply::Rendered(bytes) => bytes.len(),
        Reply::Array(items) | Reply::Push(items) => {
            items.iter().fold(HEADER, |total, item| total.saturating_add(encoded_len_estimate(item)))
        }
        Reply::Map(pairs) => pairs.iter().fold(HEADER, |total, (key, value)| {
            total.saturating_add(encoded_len_estimate(key)).saturating_add(encoded_len_estimate(value))
        }),
    }
}

/// Aggregate headers (`*<n>`, `%<n>`) are written here and each element encoded in turn, so no
/// frame tree is built.
fn write_reply(reply: &Reply, protocol: Protocol, dst: &mut BytesMut) -> Result<(), CodecError> {
    match reply {
        Reply::Array(items) => {
            write_line(dst, b'*', items.len());
            for item in items {
                write_reply(item, protocol, dst)?;
            }
            Ok(())
        }
        Reply::Push(items) => {
            match protocol {
                Protocol::Resp2 => write_line(dst, b'*', items.len()),
                Protocol::Resp3 => write_line(dst, b'>', items.len()),
            }
            for item in items {
                write_reply(item, protocol, dst)?;
            }
            Ok(())
        }
        Reply::Map(pairs) => {
            match protocol {
                Protocol::Resp2 => write_line(dst, b'*', pairs.len().saturating_mul(2)),
                Protocol::Resp3 => write_line(dst, b'%', pairs.len()),
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
        // `:` is RESP2's integer and RESP3's number, `$` the bulk and blob string of both.
        Reply::Int(value) => {
            write_line(dst, b':', *value);
            Ok(())
        }
        Reply::Bulk(data) => {
            write_line(dst, b'$', data.len());
            dst.extend_from_slice(data);
            dst.extend_from_slice(b"\r\n");
            Ok(())
        }
        Reply::Nil => match protocol {
            Protocol::Resp2 => resp2_leaf(dst, &Resp2Frame::Null),
            Protocol::Resp3 => resp3_leaf(dst, &Resp3Frame::Null),
        },
        Reply::Rendered(bytes) => {
            dst.extend_from_slice(bytes);
            Ok(())
        }
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

/// `<kind><n>\r\n`.
fn write_line(dst: &mut BytesMut, kind: u8, n: impl itoa::Integer) {
    dst.put_u8(kind);
    dst.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    dst.extend_from_slice(b"\r\n");
}
