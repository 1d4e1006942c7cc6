//! How binary-safe values (keys, owners, reasons) are shown in line-based output: CLIENT LIST,
//! CLIENT INFO and text logs. Those formats end records with newlines and CLIENT LIST separates
//! fields with spaces, so a key holding either could forge a field or a whole line; such bytes
//! are written as escapes instead.

use std::fmt::{self, Write as _};

/// How much of one value a log line shows. A client may send values of up to
/// `--max-result-bytes` (64 KiB by default); logged whole, one client could write hundreds of MB/s
/// of log.
pub(crate) const LOG_VALUE_BYTES: usize = 256;

/// Displays bytes with `\xHH` escapes for control characters and non-ASCII bytes, and `\\` for a
/// backslash, so the text reads back unambiguously.
pub(crate) struct Escaped<'a> {
    bytes: &'a [u8],
    keep_spaces: bool,
    /// The full length when `bytes` was cut short, said after the shown part.
    cut_from: Option<usize>,
}

impl<'a> Escaped<'a> {
    /// For a space-separated field (CLIENT LIST): spaces are escaped too.
    pub(crate) fn field(bytes: &'a [u8]) -> Escaped<'a> {
        Escaped { bytes, keep_spaces: false, cut_from: None }
    }

    /// For a value in a log line: spaces stay readable, and at most [`LOG_VALUE_BYTES`] are shown,
    /// followed by `…(N bytes)` when the value is longer.
    pub(crate) fn log(bytes: &'a [u8]) -> Escaped<'a> {
        match bytes.get(..LOG_VALUE_BYTES) {
            Some(shown) if bytes.len() > LOG_VALUE_BYTES => {
                Escaped { bytes: shown, keep_spaces: true, cut_from: Some(bytes.len()) }
            }
            _ => Escaped { bytes, keep_spaces: true, cut_from: None },
        }
    }

    fn is_plain(&self, byte: u8) -> bool {
        (byte.is_ascii_graphic() && byte != b'\\') || (self.keep_spaces && byte == b' ')
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut plain_from = 0;
        for (index, &byte) in self.bytes.iter().enumerate() {
            if self.is_plain(byte) {
                continue;
            }
            // Everything before `index` is printable ASCII, hence valid UTF-8.
            f.write_str(std::str::from_utf8(&self.bytes[plain_from..index]).map_err(|_| fmt::Error)?)?;
            if byte == b'\\' {
                f.write_str("\\\\")?
            } else {
                write!(f, "\\x{byte:02x}")?
            }
            plain_from = index + 1;
        }
        f.write_str(std::str::from_utf8(&self.bytes[plain_from..]).map_err(|_| fmt::Error)?)?;
        match self.cut_from {
            Some(length) => write!(f, "…({length} bytes)"),
            None => Ok(()),
        }
    }
}

/// Redis's `sdscatrepr`, as MONITOR quotes each argument: in double quotes, with `\\`, `\"`,
/// `\n`, `\r`, `\t`, `\a`, `\b`, and `\xHH` for any other byte that is not printable ASCII.
pub(crate) struct Quoted<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for &byte in self.0 {
            match byte {
                b'\\' => f.write_str("\\\\")?,
                b'"' => f.write_str("\\\"")?,
                b'\n' => f.write_str("\\n")?,
                b'\r' => f.write_str("\\r")?,
                b'\t' => f.write_str("\\t")?,
                0x07 => f.write_str("\\a")?,
                0x08 => f.write_str("\\b")?,
                b' '..=b'~' => f.write_char(char::from(byte))?,
                _ => write!(f, "\\x{byte:02x}")?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::{Escaped, LOG_VALUE_BYTES, Quoted};

    #[test]
    fn quoted_follows_redis_sdscatrepr() {
        // What Redis 7's MONITOR showed for `SET a"b <01 0a 5c ff>`.
        assert_eq!(Quoted(b"a\"b").to_string(), r#""a\"b""#);
        assert_eq!(Quoted(b"\x01\n\\\xff").to_string(), r#""\x01\n\\\xff""#);
        assert_eq!(Quoted(b"\r\t\x07\x08 ~").to_string(), r#""\r\t\a\b ~""#);
        assert_eq!(Quoted(b"").to_string(), r#""""#);
    }

    #[test]
    fn fields_escape_separators_and_non_ascii() {
        assert_eq!(Escaped::field(b"pull:sha256:4f1c").to_string(), "pull:sha256:4f1c");
        assert_eq!(Escaped::field(b"a b\nid=999").to_string(), "a\\x20b\\x0aid=999");
        assert_eq!(Escaped::field(b"back\\slash").to_string(), "back\\\\slash");
        assert_eq!(Escaped::field("é\r\0".as_bytes()).to_string(), "\\xc3\\xa9\\x0d\\x00");
        assert_eq!(Escaped::field(b"").to_string(), "");
    }

    #[test]
    fn log_values_keep_spaces_but_not_line_breaks() {
        assert_eq!(Escaped::log(b"registry timeout").to_string(), "registry timeout");
        assert_eq!(
            Escaped::log(b"x\n2026-11-28T00:00:00Z INFO forged").to_string(),
            "x\\x0a2026-11-28T00:00:00Z INFO forged"
        );
    }

    #[test]
    fn log_values_are_cut_and_say_their_length() {
        let exact = vec![b'a'; LOG_VALUE_BYTES];
        assert_eq!(Escaped::log(&exact).to_string(), "a".repeat(LOG_VALUE_BYTES));
        let mut long = vec![b'b'; 64 * 1024];
        long[LOG_VALUE_BYTES - 1] = b'\n';
        let shown = Escaped::log(&long).to_string();
        let expected = format!("{}\\x0a…(65536 bytes)", "b".repeat(LOG_VALUE_BYTES - 1));
        assert_eq!(shown, expected);
        // What is cut is the value; escapes may lengthen what is shown, never past 4 bytes a byte.
        let escapes = vec![0u8; 64 * 1024];
        let shown = Escaped::log(&escapes).to_string();
        assert!(shown.starts_with("\\x00\\x00") && shown.ends_with("…(65536 bytes)"), "{shown}");
        assert_eq!(shown.len(), LOG_VALUE_BYTES * 4 + "…(65536 bytes)".len());
    }
}
