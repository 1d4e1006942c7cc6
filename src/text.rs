//! How binary-safe values (keys, owners, reasons) are shown in line-based output: CLIENT LIST,
//! CLIENT INFO and text logs. Those formats separate fields with spaces and records with
//! newlines, so a key holding either could forge a field or a whole line; every byte outside
//! printable ASCII, the space and the backslash are written as escapes instead.

use std::fmt;

/// Displays bytes with `\xHH` escapes for anything but printable, non-space ASCII, and `\\` for a
/// backslash, so the text can be read back unambiguously.
pub(crate) struct Escaped<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut plain_from = 0;
        for (index, &byte) in self.0.iter().enumerate() {
            if byte.is_ascii_graphic() && byte != b'\\' {
                continue;
            }
            // Everything before `index` is graphic ASCII, hence valid UTF-8.
            f.write_str(std::str::from_utf8(&self.0[plain_from..index]).map_err(|_| fmt::Error)?)?;
            if byte == b'\\' {
                f.write_str("\\\\")?
            } else {
                write!(f, "\\x{byte:02x}")?
            }
            plain_from = index + 1;
        }
        f.write_str(std::str::from_utf8(&self.0[plain_from..]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn separators_and_non_ascii_are_escaped() {
        assert_eq!(Escaped(b"pull:sha256:4f1c").to_string(), "pull:sha256:4f1c");
        assert_eq!(Escaped(b"a b\nid=999").to_string(), "a\\x20b\\x0aid=999");
        assert_eq!(Escaped(b"back\\slash").to_string(), "back\\\\slash");
        assert_eq!(Escaped("é\r\0".as_bytes()).to_string(), "\\xc3\\xa9\\x0d\\x00");
        assert_eq!(Escaped(b"").to_string(), "");
    }
}
