//! The request decoder on arbitrary bytes, fed whole and in pieces (the first input byte chooses
//! the piece sizes).
//!
//! Checks: no panic; the scanner and `redis-protocol` never disagree (an `Io` error from the
//! decoder means they did); every error is a Redis-style protocol error; with limits wider than
//! the input, decoding in pieces gives exactly what decoding all at once gives; with tight limits
//! decoding still ends in requests or a protocol error.
#![no_main]

use baton::codec::{CodecError, Limits, Request, RespCodec};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const WIDE: Limits =
    Limits { max_args: 1 << 20, max_bulk_bytes: 1 << 24, max_inline_bytes: 1 << 24, max_buffer_bytes: 1 << 24 };
const TIGHT: Limits = Limits { max_args: 4, max_bulk_bytes: 16, max_inline_bytes: 32, max_buffer_bytes: 64 };

#[derive(Debug, PartialEq)]
struct Run {
    requests: Vec<Request>,
    error: Option<String>,
}

fn run<'a>(limits: Limits, chunks: impl Iterator<Item = &'a [u8]>) -> Run {
    let mut codec = RespCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    let mut step = |codec: &mut RespCodec, buf: &mut BytesMut, eof: bool| -> Result<bool, String> {
        let decoded = if eof { codec.decode_eof(buf) } else { codec.decode(buf) };
        match decoded {
            Ok(Some(request)) => {
                assert!(!request.args.is_empty(), "empty request");
                requests.push(request);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(CodecError::Protocol(text)) => {
                assert!(text.starts_with("ERR Protocol error: "), "not a protocol error: {text}");
                Err(text.into_owned())
            }
            Err(CodecError::Io(err)) => panic!("scanner and redis-protocol disagree: {err}"),
        }
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match step(&mut codec, &mut buf, false) {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => return Run { requests, error: Some(error) },
            }
        }
    }
    loop {
        match step(&mut codec, &mut buf, true) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => return Run { requests, error: Some(error) },
        }
    }
    assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
    Run { requests, error: None }
}

/// Splits `data` into pieces whose sizes come from `seed`.
fn pieces(seed: u8, data: &[u8]) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 1;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = if seed < 128 { usize::from(seed % 8) + 1 } else { (state >> 16) as usize % 24 + 1 };
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = run(WIDE, std::iter::once(data));
    let split = run(WIDE, pieces(seed, data).into_iter());
    assert_eq!(whole, split, "decoding in pieces differs from decoding at once");
    let tight = run(TIGHT, pieces(seed, data).into_iter());
    // Tight limits can only cut the same stream short, never change what was decoded before.
    assert!(tight.requests.len() <= whole.requests.len());
    assert_eq!(tight.requests[..], whole.requests[..tight.requests.len()]);
});
