use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};
use tokio_util::codec::{Decoder, Encoder};

use super::decode::{MAX_HEADER_LINE, State, parse_ll};
use super::*;
use crate::errors;
use crate::reply::Reply;

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

/// Splits `input` into consecutive chunks whose sizes cycle through `sizes`.
fn chunks<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(size.clamp(1, rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// Every request decoded from `chunks` fed in order, then the protocol error that ended it, if
/// any. An I/O error from the decoder is a bug.
fn run(limits: Limits, chunks: &[&[u8]]) -> (Vec<Request>, Option<String>) {
    let mut codec = RespCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        buf.extend_from_slice(chunk);
        let last = i + 1 == chunks.len();
        loop {
            let decoded = if last { codec.decode_eof(&mut buf) } else { codec.decode(&mut buf) };
            match decoded {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(CodecError::Protocol(text)) => return (requests, Some(text.into_owned())),
                Err(CodecError::Io(err)) => panic!("decoder failed on its own: {err}"),
            }
        }
    }
    (requests, None)
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

#[test]
fn arguments_are_slices_of_the_read_buffer() {
    let mut buf = BytesMut::from(&multibulk(&[b"LOCK.TRY", b"key", b"owner"])[..]);
    buf.extend_from_slice(b"PING plain \"quo\\x74ed\"\r\n");
    let read_buffer = buf.as_ptr_range();
    let within = |arg: &Bytes| read_buffer.contains(&arg.as_ptr());
    let mut codec = codec();
    let from_multibulk = codec.decode(&mut buf).unwrap().unwrap();
    assert!(from_multibulk.args.iter().all(within), "{from_multibulk:?}");
    let from_inline = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(from_inline, req(&[b"PING", b"plain", b"quoted"]));
    assert!(within(&from_inline.args[0]) && within(&from_inline.args[1]));
    // Escapes rewrite bytes, so a quoted argument is a copy.
    assert!(!within(&from_inline.args[2]));
}

#[test]
fn a_huge_request_does_not_pin_its_argument_table() {
    let many: Vec<&[u8]> = std::iter::repeat_n(&b"x"[..], 1000).collect();
    let mut codec = codec();
    let mut buf = BytesMut::from(&multibulk(&many)[..]);
    assert_eq!(codec.decode(&mut buf).unwrap().map(|request| request.args.len()), Some(1000));
    assert!(codec.spans.capacity() < 1000, "capacity {}", codec.spans.capacity());
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
    let got = decode_bytes(LIMITS, b"x \"\\t\\r\\b\\a\\\\\\\"\\q\\xZZ\\x4a\" 'it\\'s' 'a\\b' \"\" ab\"cd\"\n").unwrap();
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
    for input in
        [&b"set \"abc\r\n"[..], b"set 'abc\r\n", b"set \"a\"b\r\n", b"set 'a'b\r\n", b"set \"a\\\"\r\n", b"set \"a\\\n"]
    {
        assert_eq!(expect_error(LIMITS, input), errors::PROTO_UNBALANCED_QUOTES, "{input:?}");
    }
    // A closing quote followed by whitespace or the end is fine.
    assert_eq!(decode_bytes(LIMITS, b"'a'\t\"b\"\n").unwrap(), vec![req(&[b"a", b"b"])]);
}

#[test]
fn inline_max_args_boundary() {
    let limits = Limits { max_args: 3, ..LIMITS };
    assert_eq!(decode_bytes(limits, b"a 'b' \"c\"\r\n").unwrap(), vec![req(&[b"a", b"b", b"c"])]);
    // Trailing blanks are not arguments.
    assert_eq!(decode_bytes(limits, b"  a b c \t \r\n").unwrap(), vec![req(&[b"a", b"b", b"c"])]);
    // The same answer as a multibulk request with too many arguments; an empty quoted argument
    // counts like any other.
    assert_eq!(expect_error(limits, b"a b c d\r\n"), errors::PROTO_INVALID_MULTIBULK_LEN);
    assert_eq!(expect_error(limits, b"a b c \"\"\n"), errors::PROTO_INVALID_MULTIBULK_LEN);
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

fn unauthenticated() -> RespCodec {
    let mut codec = codec();
    codec.set_authenticated(false);
    codec
}

fn unauthenticated_error(input: &[u8]) -> String {
    match decode_all(&mut unauthenticated(), &mut BytesMut::from(input)) {
        Err(CodecError::Protocol(text)) => text.into_owned(),
        other => panic!("expected a protocol error for {input:?}, got {other:?}"),
    }
}

#[test]
fn unauthenticated_requests_are_held_to_redis_caps() {
    let ten: Vec<&[u8]> = std::iter::repeat_n(&b"x"[..], 10).collect();
    assert_eq!(decode_all(&mut unauthenticated(), &mut BytesMut::from(&multibulk(&ten)[..])).unwrap().len(), 1);
    // Refused from the header alone, before anything else arrives.
    assert_eq!(unauthenticated_error(b"*11\r\n"), errors::PROTO_UNAUTHENTICATED_MULTIBULK_LEN);
    let largest = vec![b'v'; 16 * 1024];
    let frame = multibulk(&[b"AUTH", &largest]);
    assert_eq!(decode_all(&mut unauthenticated(), &mut BytesMut::from(&frame[..])).unwrap().len(), 1);
    assert_eq!(unauthenticated_error(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n"), errors::PROTO_UNAUTHENTICATED_BULK_LEN);
    // Redis's order: what no client may send is refused as such.
    assert_eq!(unauthenticated_error(b"*2147483648\r\n"), errors::PROTO_INVALID_MULTIBULK_LEN);
    assert_eq!(unauthenticated_error(b"*1\r\n$2000000\r\n"), errors::PROTO_INVALID_BULK_LEN);
}

#[test]
fn authenticating_lifts_the_caps_for_the_next_request() {
    let eleven: Vec<&[u8]> = std::iter::repeat_n(&b"x"[..], 11).collect();
    let big = multibulk(&eleven);
    let mut codec = unauthenticated();
    let mut buf = BytesMut::from(&multibulk(&[b"AUTH", b"pw"])[..]);
    buf.extend_from_slice(&big);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(req(&[b"AUTH", b"pw"])));
    codec.set_authenticated(true);
    assert_eq!(codec.decode(&mut buf).unwrap().map(|request| request.args.len()), Some(11));
    // RESET logs the client out again.
    codec.set_authenticated(false);
    buf.extend_from_slice(&big);
    assert!(
        matches!(codec.decode(&mut buf), Err(CodecError::Protocol(text)) if text == errors::PROTO_UNAUTHENTICATED_MULTIBULK_LEN)
    );
}

#[test]
fn detached_requests_own_their_bytes() {
    let mut buf = BytesMut::with_capacity(1024 * 1024);
    buf.extend_from_slice(&multibulk(&[b"LOCK.TRY", b"", b"owner"]));
    let read_buffer = buf.as_ptr_range();
    let request = codec().decode(&mut buf).unwrap().unwrap();
    let detached = request.clone().detach();
    assert_eq!(detached, request);
    assert!(detached.args.iter().all(|arg| !read_buffer.contains(&arg.as_ptr())), "{detached:?}");
    // Counted as what it holds, not the megabyte it was read into.
    let size = detached.detached_size();
    assert!((13..1024).contains(&size), "{size}");
}

#[test]
fn detached_size_grows_with_the_arguments() {
    let small = req(&[b"PING"]).detach().detached_size();
    let large = req(&[b"PING", &[b'a'; 10_000]]).detach().detached_size();
    assert_eq!(large - small, 10_000 + std::mem::size_of::<Bytes>());
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

/// Decodes `input` in random pieces of 1 to 16 bytes: only requests and Redis-style errors.
fn run_to_end(limits: Limits, input: &[u8], rng: &mut Rng) {
    let sizes: Vec<usize> = (0..16).map(|_| 1 + rng.below(16)).collect();
    let (requests, error) = run(limits, &chunks(input, &sizes));
    assert!(requests.iter().all(|request| !request.args.is_empty()), "{input:?}");
    if let Some(error) = error {
        assert!(error.starts_with("ERR Protocol error: "), "{error} on {input:?}");
    }
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

/// The encoded reply; what is already in the output buffer is left alone. Other modules' tests
/// compare their replies with the bytes Redis sends through it.
pub(crate) fn encode(protocol: Protocol, reply: Reply) -> Vec<u8> {
    let mut out = BytesMut::from(&b"prefix"[..]);
    codec().encode((reply, protocol), &mut out).unwrap();
    assert_eq!(&out[..6], b"prefix");
    out[6..].to_vec()
}

fn both(reply: Reply, resp2: &[u8], resp3: &[u8]) {
    assert_eq!(encode(Protocol::Resp2, reply.clone()), resp2, "RESP2 {reply:?}");
    assert_eq!(encode(Protocol::Resp3, reply.clone()), resp3, "RESP3 {reply:?}");
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
fn pushes_are_arrays_in_resp2() {
    let message = Reply::Push(vec![Reply::bulk_static("message"), Reply::bulk("__lock__:k"), Reply::bulk("done")]);
    both(
        message,
        b"*3\r\n$7\r\nmessage\r\n$10\r\n__lock__:k\r\n$4\r\ndone\r\n",
        b">3\r\n$7\r\nmessage\r\n$10\r\n__lock__:k\r\n$4\r\ndone\r\n",
    );
    // UNSUBSCRIBE with nothing to leave names no channel.
    both(
        Reply::Push(vec![Reply::bulk_static("unsubscribe"), Reply::Nil, Reply::Int(0)]),
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
        b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n",
    );
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
    assert_eq!(protocol_error(errors::PROTO_INVALID_BULK_LEN).to_string(), errors::PROTO_INVALID_BULK_LEN);
    let io: CodecError = io::Error::other("boom").into();
    assert!(io.to_string().contains("boom"));
    assert!(std::error::Error::source(&io).is_some());
}

// ---- properties ----

/// One piece of a request stream and the request it must decode to, if any.
#[derive(Debug, Clone)]
enum Piece {
    Multibulk(Vec<Vec<u8>>),
    Inline {
        args: Vec<Vec<u8>>,
        separator: &'static str,
        line_end: &'static str,
    },
    /// A blank line or an empty multibulk: no request.
    Skipped(&'static str),
}

impl Piece {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Piece::Multibulk(args) => multibulk(&args.iter().map(Vec::as_slice).collect::<Vec<_>>()),
            Piece::Inline { args, separator, line_end } => {
                let mut line = Vec::new();
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        line.extend_from_slice(separator.as_bytes());
                    }
                    line.extend_from_slice(&inline_arg(arg, i == 0));
                }
                line.extend_from_slice(line_end.as_bytes());
                line
            }
            Piece::Skipped(text) => text.as_bytes().to_vec(),
        }
    }

    fn request(&self) -> Option<Request> {
        match self {
            Piece::Multibulk(args) | Piece::Inline { args, .. } => {
                Some(Request { args: args.iter().map(|arg| Bytes::copy_from_slice(arg)).collect() })
            }
            Piece::Skipped(_) => None,
        }
    }
}

/// `arg` as typed inline: bare when nothing in it needs quoting, else double-quoted with every
/// byte that could be misread escaped as `\xHH`.
fn inline_arg(arg: &[u8], first: bool) -> Vec<u8> {
    // A bare first argument starting with `*` would be read as a multibulk header.
    let bare = arg.first().is_some_and(|&b| !(first && b == b'*'))
        && arg.iter().all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\'');
    if bare {
        return arg.to_vec();
    }
    let mut quoted = b"\"".to_vec();
    for &byte in arg {
        if byte.is_ascii_graphic() && byte != b'"' && byte != b'\\' || byte == b' ' {
            quoted.push(byte);
        } else {
            quoted.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
        }
    }
    quoted.push(b'"');
    quoted
}

fn piece_strategy() -> impl Strategy<Value = Piece> {
    let arg = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        "[A-Za-z0-9.:{}*$_-]{1,12}".prop_map(String::into_bytes),
    ];
    let args = prop::collection::vec(arg, 1..6);
    prop_oneof![
        4 => args.clone().prop_map(Piece::Multibulk),
        3 => (args, prop::sample::select(&[" ", "  ", "\t", " \t "][..]), prop::sample::select(&["\r\n", "\n"][..]))
            .prop_map(|(args, separator, line_end)| Piece::Inline { args, separator, line_end }),
        1 => prop::sample::select(&["\r\n", "\n", " \t\r\n", "*0\r\n", "*-1\r\n"][..]).prop_map(Piece::Skipped),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 500,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    })]

    /// Any stream of valid requests, cut anywhere, decodes to exactly its requests.
    #[test]
    fn requests_split_anywhere_decode_to_their_arguments(
        pieces in prop::collection::vec(piece_strategy(), 1..12),
        sizes in prop::collection::vec(1usize..48, 1..8),
    ) {
        let input: Vec<u8> = pieces.iter().flat_map(Piece::bytes).collect();
        let expected: Vec<Request> = pieces.iter().filter_map(Piece::request).collect();
        prop_assert_eq!(run(LIMITS, &[&input]), (expected.clone(), None));
        prop_assert_eq!(run(LIMITS, &chunks(&input, &sizes)), (expected, None));
    }

    /// Valid requests with garbage anywhere: decoding never panics, every error is a Redis-style
    /// protocol error, and tight limits only ever cut short what wide limits decode.
    #[test]
    fn garbage_ends_in_requests_or_a_protocol_error(
        parts in prop::collection::vec(
            prop_oneof![
                piece_strategy().prop_map(|piece| piece.bytes()),
                prop::collection::vec(any::<u8>(), 0..64),
                prop::collection::vec(prop::sample::select(&b"*$\r\n-0123456789 \"'\\x"[..]), 0..24),
            ],
            1..8,
        ),
        sizes in prop::collection::vec(1usize..48, 1..8),
    ) {
        let input = parts.concat();
        let tight = Limits { max_args: 3, max_bulk_bytes: 16, max_inline_bytes: 32, max_buffer_bytes: 64 };
        let (wide_requests, wide_error) = run(LIMITS, &chunks(&input, &sizes));
        prop_assert_eq!(run(LIMITS, &[&input]), (wide_requests.clone(), wide_error.clone()));
        let (tight_requests, tight_error) = run(tight, &chunks(&input, &sizes));
        for error in wide_error.iter().chain(&tight_error) {
            prop_assert!(error.starts_with("ERR Protocol error: "), "{}", error);
        }
        prop_assert!(tight_requests.len() <= wide_requests.len());
        prop_assert_eq!(&tight_requests[..], &wide_requests[..tight_requests.len()]);
    }
}
