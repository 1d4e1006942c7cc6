//! A cursor over a request's arguments with the conversions commands share.

use bytes::Bytes;

use crate::errors;
use crate::reply::Reply;

pub type ParseResult<T> = Result<T, Reply>;

pub struct Args {
    args: std::vec::IntoIter<Bytes>,
}

impl Args {
    /// Skips the command name (and the subcommand name when `skip` is 2).
    pub fn new(args: Vec<Bytes>, skip: usize) -> Args {
        let mut args = args.into_iter();
        for _ in 0..skip {
            args.next();
        }
        Args { args }
    }

    pub fn remaining(&self) -> usize {
        self.args.len()
    }

    pub fn next_bytes(&mut self) -> ParseResult<Bytes> {
        self.args.next().ok_or_else(|| Reply::error(errors::SYNTAX))
    }

    pub fn next_optional(&mut self) -> Option<Bytes> {
        self.args.next()
    }

    pub fn next_i64(&mut self) -> ParseResult<i64> {
        parse_i64(&self.next_bytes()?).ok_or_else(|| Reply::error(errors::NOT_AN_INTEGER))
    }

    pub fn rest(self) -> Vec<Bytes> {
        self.args.collect()
    }

    /// A bounded, non-empty identifier such as a key or an owner.
    pub fn next_name(&mut self, what: &str, max: usize) -> ParseResult<Bytes> {
        let value = self.next_bytes()?;
        if value.is_empty() {
            return Err(Reply::error(errors::empty_argument(what)));
        }
        if value.len() > max {
            return Err(Reply::error(errors::too_long(what, max)));
        }
        Ok(value)
    }

    pub fn expect_end(&self) -> ParseResult<()> {
        if self.remaining() == 0 { Ok(()) } else { Err(Reply::error(errors::SYNTAX)) }
    }
}

/// Redis's strict integer syntax: optional minus, digits, no spaces, no plus sign, no leading zeros
/// to speak of (we accept them; Redis does too for most commands).
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() || text.starts_with('+') || text.len() > 20 {
        return None;
    }
    text.parse().ok()
}

pub fn eq_ignore_case(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_redis_syntax() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-7"), Some(-7));
        assert_eq!(parse_i64(b"+7"), None);
        assert_eq!(parse_i64(b" 7"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"1.5"), None);
    }

    #[test]
    fn names_are_bounded_and_non_empty() {
        let mut args = Args::new(vec![Bytes::from_static(b""), Bytes::from_static(b"abcdef")], 0);
        assert!(args.next_name("key", 4).is_err());
        assert_eq!(args.next_name("owner", 4), Err(Reply::error("ERR owner is longer than the limit of 4 bytes")));
        assert!(args.next_name("key", 4).is_err(), "missing argument is a syntax error");
    }
}
