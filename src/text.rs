//! How binary-safe values (keys, owners, reasons) are shown in line-based output: CLIENT LIST,
//! CLIENT INFO and text logs. Those formats end records with newlines and CLIENT LIST separates
//! fields with spaces, so a key holding either could forge a field or a whole line; such bytes
//! are written as escapes instead.

use std::fmt;

/// Displays bytes with `\xHH` escapes for control characters and non-ASCII bytes, and `\\` for a
/// backslash, so the text reads back unambiguously.
pub(crate) struct Escaped<'a> {
    bytes: &'a [u8],
    keep_spaces: bool,
}

impl<'a> Escaped<'a> {
    /// For a space-separated field (CLIENT LIST): spaces are escaped too.
    pub(crate) fn field(bytes: &'a [u8]) -> Escaped<'a> {
        Escaped { bytes, keep_spaces: false }
    }

    /// For free text in a log line: spaces stay readable.
    pub(crate) fn text(bytes: &'a [u8]) -> Escaped<'a> {
        Escaped { bytes, keep_spaces: true }
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
        f.write_str(std::str::from_utf8(&self.bytes[plain_from..]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn fields_escape_separators_and_non_ascii() {
        assert_eq!(Escaped::field(b"pull:sha256:4f1c").to_string(), "pull:sha256:4f1c");
        assert_eq!(Escaped::field(b"a b\nid=999").to_string(), "a\\x20b\\x0aid=999");
        assert_eq!(Escaped::field(b"back\\slash").to_string(), "back\\\\slash");
        assert_eq!(Escaped::field("é\r\0".as_bytes()).to_string(), "\\xc3\\xa9\\x0d\\x00");
        assert_eq!(Escaped::field(b"").to_string(), "");
    }

    #[test]
    fn text_keeps_spaces_but_not_line_breaks() {
        assert_eq!(Escaped::text(b"registry timeout").to_string(), "registry timeout");
        assert_eq!(
            Escaped::text(b"x\n2026-11-28T00:00:00Z INFO forged").to_string(),
            "x\\x0a2026-11-28T00:00:00Z INFO forged"
        );
    }
}
