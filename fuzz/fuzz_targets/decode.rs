//! The request decoder on arbitrary bytes, fed whole and in pieces (the first input byte chooses
//! the piece sizes).
//!
//! Checks: no panic; the scanner and `redis-protocol` never disagree (an `Io` error from the
//! decoder means they did); every error is a Redis-style protocol error; with limits wider than
//! the input, decoding in pieces gives exactly what decoding all at once gives; with tight limits
//! decoding still ends in requests or a protocol error.
#![no_main]

use baton::codec::{CodecError, Limits, Request, RespCodec};
use baton_testkit::decode::decode_pieces;
use baton_testkit::pieces::split;
use libfuzzer_sys::fuzz_target;

const WIDE: Limits =
    Limits { max_args: 1 << 20, max_bulk_bytes: 1 << 24, max_inline_bytes: 1 << 24, max_buffer_bytes: 1 << 24 };
const TIGHT: Limits = Limits { max_args: 4, max_bulk_bytes: 16, max_inline_bytes: 32, max_buffer_bytes: 64 };

#[derive(Debug, PartialEq)]
struct Run {
    requests: Vec<Request>,
    error: Option<String>,
}

fn run<'a>(limits: Limits, pieces: impl IntoIterator<Item = &'a [u8]>) -> Run {
    let decoded = decode_pieces(&mut RespCodec::new(limits), pieces);
    assert!(decoded.items.iter().all(|request| !request.args.is_empty()), "empty request");
    let error = decoded.error.map(|error| match error {
        CodecError::Protocol(text) => {
            assert!(text.starts_with("ERR Protocol error: "), "not a protocol error: {text}");
            text.into_owned()
        }
        CodecError::Io(err) => panic!("scanner and redis-protocol disagree: {err}"),
    });
    if error.is_none() {
        assert_eq!(decoded.leftover, 0, "decode_eof left {} bytes", decoded.leftover);
    }
    Run { requests: decoded.items, error }
}

/// Piece sizes drawn from `seed`: all alike below 128, varied (1 to 24 bytes) above.
fn piece_sizes(seed: u8) -> impl Iterator<Item = usize> {
    let mut state = u32::from(seed) | 1;
    std::iter::repeat_with(move || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        if seed < 128 { usize::from(seed % 8) + 1 } else { (state >> 16) as usize % 24 + 1 }
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    let whole = run(WIDE, [data]);
    let cut = run(WIDE, split(data, piece_sizes(seed)));
    assert_eq!(whole, cut, "decoding in pieces differs from decoding at once");
    let tight = run(TIGHT, split(data, piece_sizes(seed)));
    // Tight limits can only cut the same stream short, never change what was decoded before.
    assert!(tight.requests.len() <= whole.requests.len());
    assert_eq!(tight.requests[..], whole.requests[..tight.requests.len()]);
});
