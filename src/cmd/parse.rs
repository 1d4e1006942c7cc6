//! The one cursor over a request's arguments that every command family parses with, and Redis's
//! integer syntax.

use bytes::Bytes;

use crate::errors;
use crate::reply::Reply;

pub(crate) type ParseResult<T> = Result<T, Reply>;

pub(crate) struct Args {
    args: std::vec::IntoIter<Bytes>,
}

impl Args {
    /// Skips the command name (and the subcommand name when `skip` is 2).
    pub(crate) fn new(args: Vec<Bytes>, skip: usize) -> Args {
        let mut args = args.into_iter();
        for _ in 0..skip {
            args.next();
        }
        Args { args }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.args.len()
    }

    /// The next argument; a missing one is a syntax error (the table's arity check normally
    /// rules that out, and a syntax error stands in should the two ever disagree).
    pub(crate) fn next_bytes(&mut self) -> ParseResult<Bytes> {
        self.args.next().ok_or_else(|| Reply::error(errors::SYNTAX))
    }

    pub(crate) fn next_optional(&mut self) -> Option<Bytes> {
        self.args.next()
    }

    pub(crate) fn next_int(&mut self) -> ParseResult<i64> {
        parse_int(&self.next_bytes()?).ok_or_else(|| Reply::error(errors::NOT_AN_INTEGER))
    }

    /// A client id or another count that cannot be negative.
    pub(crate) fn next_unsigned(&mut self, error: &'static str) -> ParseResult<u64> {
        parse_int(&self.next_bytes()?).and_then(|value| u64::try_from(value).ok()).ok_or_else(|| Reply::error(error))
    }

    /// Whether the next argument is `word` (any case); consumes it only if so.
    pub(crate) fn next_is(&mut self, word: &str) -> bool {
        let matches = self.args.as_slice().first().is_some_and(|arg| eq_ignore_case(arg, word));
        if matches {
            self.args.next();
        }
        matches
    }

    pub(crate) fn rest(self) -> Vec<Bytes> {
        self.args.collect()
    }

    /// A bounded, non-empty identifier such as a key or an owner.
    pub(crate) fn next_name(&mut self, what: &str, max: usize) -> ParseResult<Bytes> {
        let value = self.next_bytes()?;
        if value.is_empty() {
            return Err(Reply::error(errors::empty_argument(what)));
        }
        if value.len() > max {
            return Err(Reply::error(errors::too_long(what, max)));
        }
        Ok(value)
    }

    pub(crate) fn expect_end(&self) -> ParseResult<()> {
        if self.remaining() == 0 { Ok(()) } else { Err(Reply::error(errors::SYNTAX)) }
    }
}

/// Redis's `string2ll`: an optional minus and decimal digits, nothing else; no plus sign, no
/// spaces, no leading zeros and no `-0`, and within the range of an i64.
pub(crate) fn parse_int(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [b'0'] => digits.len() == bytes.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    // The digits are checked already: no second pass through UTF-8 validation and `str::parse`.
    let magnitude =
        digits.iter().try_fold(0u64, |value, digit| value.checked_mul(10)?.checked_add(u64::from(digit - b'0')))?;
    if digits.len() == bytes.len() { i64::try_from(magnitude).ok() } else { 0i64.checked_sub_unsigned(magnitude) }
}

pub(crate) fn eq_ignore_case(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_redis_string2ll() {
        assert_eq!(parse_int(b"42"), Some(42));
        assert_eq!(parse_int(b"-7"), Some(-7));
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        for rejected in [
            &b"+7"[..],
            b" 7",
            b"7 ",
            b"",
            b"-",
            b"007",
            b"-0",
            b"-01",
            b"00",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"18446744073709551616",
            b"99999999999999999999999",
            b"1.5",
            b"1e3",
            b"0x10",
        ] {
            assert_eq!(parse_int(rejected), None, "{}", String::from_utf8_lossy(rejected));
        }
    }

    proptest::proptest! {
        /// Canonical means the number prints back as the same bytes.
        #[test]
        fn integers_are_what_print_back_the_same(text in "-?[0-9]{0,21}|[-+ 0-9a]{0,4}") {
            let bytes = text.as_bytes();
            let round_trip = text.parse::<i64>().ok().filter(|value| value.to_string() == text);
            proptest::prop_assert_eq!(parse_int(bytes), round_trip);
        }
    }

    #[test]
    fn names_are_bounded_and_non_empty() {
        let mut args = Args::new(vec![Bytes::from_static(b""), Bytes::from_static(b"abcdef")], 0);
        assert!(args.next_name("key", 4).is_err());
        assert_eq!(args.next_name("owner", 4), Err(Reply::error("ERR owner is longer than the limit of 4 bytes")));
        assert!(args.next_name("key", 4).is_err(), "missing argument is a syntax error");
    }

    #[test]
    fn next_is_consumes_only_a_match() {
        let mut args = Args::new(vec![Bytes::from_static(b"px"), Bytes::from_static(b"5")], 0);
        assert!(!args.next_is("NOQUEUE"));
        assert!(args.next_is("PX"));
        assert_eq!(args.next_int(), Ok(5));
        assert!(!args.next_is("PX"));
    }
}
