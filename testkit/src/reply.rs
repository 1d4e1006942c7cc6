//! Replies as read off the wire, RESP2 or RESP3, and their parser.

use std::fmt;

/// A reply as read off the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1`
    NilBulk,
    /// `*-1`
    NilArray,
    /// RESP3 `_`
    Null,
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
    Set(Vec<Resp>),
    Push(Vec<Resp>),
    Double(String),
    Bool(bool),
    BigNum(String),
    Verbatim(Vec<u8>),
}

// The accessors panic on the wrong kind of reply: a test that gets one has failed, and the panic
// says what came instead.
impl Resp {
    pub fn is_nil(&self) -> bool {
        matches!(self, Resp::NilBulk | Resp::NilArray | Resp::Null)
    }

    /// A bulk string equal to `text`, ignoring ASCII case (as Redis compares names).
    pub fn bulk_is(&self, text: &str) -> bool {
        matches!(self, Resp::Bulk(data) if data.eq_ignore_ascii_case(text.as_bytes()))
    }

    /// The bytes of a bulk, verbatim or simple string.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Resp::Bulk(data) | Resp::Verbatim(data) => data.clone(),
            Resp::Simple(text) => text.as_bytes().to_vec(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    pub fn opt_bytes(&self) -> Option<Vec<u8>> {
        if self.is_nil() { None } else { Some(self.bytes()) }
    }

    pub fn opt_text(&self) -> Option<String> {
        self.opt_bytes().map(|data| String::from_utf8_lossy(&data).into_owned())
    }

    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(value) => *value,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    pub fn opt_int(&self) -> Option<i64> {
        if self.is_nil() { None } else { Some(self.int()) }
    }

    pub fn array(&self) -> &[Resp] {
        match self {
            Resp::Array(items) | Resp::Set(items) | Resp::Push(items) => items,
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    /// The error line (without the leading `-`).
    pub fn err(&self) -> &str {
        match self {
            Resp::Error(text) => text,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Resp::Error(_))
    }

    /// Field/value pairs of a RESP3 map or of a RESP2 flat field-value array.
    pub fn pairs(&self) -> Vec<(String, Resp)> {
        match self {
            Resp::Map(pairs) => pairs.iter().map(|(k, v)| (k.text(), v.clone())).collect(),
            Resp::Array(items) => {
                assert!(items.len() % 2 == 0, "a flat field-value array has an even length: {items:?}");
                items.chunks(2).map(|pair| (pair[0].text(), pair[1].clone())).collect()
            }
            other => panic!("expected a map or a field-value array, got {other:?}"),
        }
    }

    pub fn get(&self, field: &str) -> Option<Resp> {
        self.pairs().into_iter().find(|(name, _)| name == field).map(|(_, value)| value)
    }

    pub fn field(&self, field: &str) -> Resp {
        self.get(field).unwrap_or_else(|| panic!("field {field:?} missing in {self:?}"))
    }

    /// The first error in this reply (nested ones too) that does not start with a Redis-style
    /// code, as clients rely on to tell error kinds apart.
    pub fn error_without_code(&self) -> Option<&str> {
        match self {
            Resp::Error(text) if !has_error_code(text) => Some(text),
            Resp::Array(items) | Resp::Set(items) | Resp::Push(items) => {
                items.iter().find_map(Resp::error_without_code)
            }
            Resp::Map(pairs) => pairs.iter().find_map(|(k, v)| k.error_without_code().or(v.error_without_code())),
            _ => None,
        }
    }
}

/// Whether an error line starts with a Redis-style code: an upper-case word (`ERR`, `WRONGTYPE`).
pub fn has_error_code(text: &str) -> bool {
    let code = text.split(' ').next().unwrap_or_default();
    !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Compact, for error messages: `+OK`, `:1`, `"bulk"`, `(nil)`, `[a, b]`.
impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resp::Simple(text) => write!(f, "+{text}"),
            Resp::Error(text) => write!(f, "-{text}"),
            Resp::Int(value) => write!(f, ":{value}"),
            Resp::Bulk(data) | Resp::Verbatim(data) => write!(f, "{:?}", String::from_utf8_lossy(data)),
            Resp::NilBulk | Resp::NilArray | Resp::Null => f.write_str("(nil)"),
            Resp::Double(text) | Resp::BigNum(text) => f.write_str(text),
            Resp::Bool(value) => write!(f, "{value}"),
            Resp::Array(items) | Resp::Set(items) | Resp::Push(items) => {
                f.write_str("[")?;
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Resp::Map(pairs) => {
                f.write_str("{")?;
                for (index, (key, value)) in pairs.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{key}: {value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Parses one reply at the start of `buf`: `Ok(None)` while it is incomplete, else the reply and
/// its length in bytes. Anything not well-formed is an error, including a simple string or error
/// line that is not UTF-8 (a server must not send one).
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    parse_at(buf, 0)
}

/// The line that starts at `pos`, without its CRLF, and where the next element starts.
fn line_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let newline = rest.iter().position(|&b| b == b'\n')?;
    // A lone LF inside a line is left for the caller's CRLF check to refuse.
    let end = newline.checked_sub(1).filter(|&cr| rest[cr] == b'\r')?;
    Some((&rest[..end], pos + newline + 1))
}

fn parse_at(buf: &[u8], pos: usize) -> Result<Option<(Resp, usize)>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((line, next)) = line_at(buf, pos + 1) else {
        return Ok(None);
    };
    let text = || {
        std::str::from_utf8(line)
            .map(str::to_owned)
            .map_err(|_| format!("a {:?} line that is not UTF-8: {line:?}", kind as char))
    };
    let int = || {
        std::str::from_utf8(line).ok().and_then(|text| text.parse::<i64>().ok()).ok_or_else(|| {
            format!("bad length or integer {:?} after {:?}", String::from_utf8_lossy(line), kind as char)
        })
    };
    let resp = match kind {
        b'+' => Resp::Simple(text()?),
        b'-' => Resp::Error(text()?),
        b':' => Resp::Int(int()?),
        b'_' => Resp::Null,
        b',' => Resp::Double(text()?),
        b'(' => Resp::BigNum(text()?),
        b'#' => Resp::Bool(line == b"t"),
        b'$' | b'!' | b'=' => {
            let len = int()?;
            if len < 0 {
                return Ok(Some((Resp::NilBulk, next)));
            }
            let end = next + usize::try_from(len).map_err(|e| e.to_string())?;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("bulk string not terminated by CRLF".into());
            }
            let data = buf[next..end].to_vec();
            let resp = match kind {
                b'$' => Resp::Bulk(data),
                b'!' => Resp::Error(String::from_utf8_lossy(&data).into_owned()),
                _ => Resp::Verbatim(data.get(4..).unwrap_or_default().to_vec()),
            };
            return Ok(Some((resp, end + 2)));
        }
        b'*' | b'~' | b'>' | b'%' => {
            let count = int()?;
            if count < 0 {
                return Ok(Some((Resp::NilArray, next)));
            }
            let elements = usize::try_from(count).map_err(|e| e.to_string())? * if kind == b'%' { 2 } else { 1 };
            let mut items = Vec::with_capacity(elements.min(4096));
            let mut at = next;
            for _ in 0..elements {
                match parse_at(buf, at)? {
                    Some((item, end)) => {
                        items.push(item);
                        at = end;
                    }
                    None => return Ok(None),
                }
            }
            let resp = match kind {
                b'*' => Resp::Array(items),
                b'~' => Resp::Set(items),
                b'>' => Resp::Push(items),
                _ => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut iter = items.into_iter();
                    while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                        pairs.push((k, v));
                    }
                    Resp::Map(pairs)
                }
            };
            return Ok(Some((resp, at)));
        }
        other => return Err(format!("unknown reply type byte {:?}", other as char)),
    };
    Ok(Some((resp, next)))
}

/// Parses a reply stream: the complete replies, and the bytes of an incomplete one at the end.
pub fn parse_stream(mut buf: &[u8]) -> Result<(Vec<Resp>, &[u8]), String> {
    let mut replies = Vec::new();
    while let Some((reply, used)) = parse(buf)? {
        replies.push(reply);
        buf = &buf[used..];
    }
    Ok((replies, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Resp {
        let (reply, used) = parse(bytes).expect("well-formed").expect("complete");
        assert_eq!(used, bytes.len(), "the whole of {bytes:?} is one reply");
        reply
    }

    #[test]
    fn parses_every_resp2_kind() {
        assert_eq!(one(b"+OK\r\n"), Resp::Simple("OK".into()));
        assert_eq!(one(b"-ERR no\r\n"), Resp::Error("ERR no".into()));
        assert_eq!(one(b":-42\r\n"), Resp::Int(-42));
        assert_eq!(one(b"$5\r\na\r\nbc\r\n"), Resp::Bulk(b"a\r\nbc".to_vec()));
        assert_eq!(one(b"$-1\r\n"), Resp::NilBulk);
        assert_eq!(one(b"*-1\r\n"), Resp::NilArray);
        assert_eq!(
            one(b"*2\r\n$8\r\nACQUIRED\r\n:7\r\n"),
            Resp::Array(vec![Resp::Bulk(b"ACQUIRED".to_vec()), Resp::Int(7)])
        );
    }

    #[test]
    fn parses_resp3_kinds() {
        assert_eq!(one(b"_\r\n"), Resp::Null);
        assert_eq!(one(b"#t\r\n"), Resp::Bool(true));
        assert_eq!(one(b",1.5\r\n"), Resp::Double("1.5".into()));
        assert_eq!(one(b"(12345678901234567890\r\n"), Resp::BigNum("12345678901234567890".into()));
        assert_eq!(one(b"=7\r\ntxt:abc\r\n"), Resp::Verbatim(b"abc".to_vec()));
        assert_eq!(one(b"!5\r\nERR x\r\n"), Resp::Error("ERR x".into()));
        let map = one(b"%1\r\n+proto\r\n:3\r\n");
        assert_eq!(map.field("proto"), Resp::Int(3));
        assert_eq!(one(b"~1\r\n:1\r\n").array(), [Resp::Int(1)]);
        assert_eq!(one(b">1\r\n:1\r\n").array(), [Resp::Int(1)]);
    }

    #[test]
    fn incomplete_replies_wait_for_more_bytes() {
        for cut in [&b""[..], b"*2\r\n$8\r\nACQUI", b"*2\r\n$8\r\nACQUIRED\r\n", b"$3\r\nab", b"+OK\r"] {
            assert_eq!(parse(cut), Ok(None), "{cut:?}");
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [&b"?\r\n"[..], b":x\r\n", b"$2\r\nabc\r\n", b"+\xff\r\n", b"*1\r\n?\r\n"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_stream_is_replies_back_to_back() {
        let (replies, rest) = parse_stream(b"+OK\r\n:1\r\n:2").expect("well-formed");
        assert_eq!(replies, [Resp::Simple("OK".into()), Resp::Int(1)]);
        assert_eq!(rest, b":2");
        assert!(parse_stream(b"+OK\r\n?\r\n").is_err());
    }

    #[test]
    fn finds_errors_without_a_code() {
        assert_eq!(one(b"-ERR fine\r\n").error_without_code(), None);
        assert_eq!(one(b"*2\r\n:1\r\n-oops\r\n").error_without_code(), Some("oops"));
        assert!(!has_error_code(""));
        assert!(has_error_code("NOTHOLDER"));
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(one(b"*3\r\n+OK\r\n$1\r\nx\r\n$-1\r\n").to_string(), r#"[+OK, "x", (nil)]"#);
    }
}
