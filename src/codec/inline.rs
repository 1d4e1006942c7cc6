//! Inline requests, as typed into telnet: Redis's `sdssplitargs`. Arguments are separated by
//! whitespace; `"double quotes"` take `\n \r \t \b \a \\ \"` and `\xHH` escapes, `'single
//! quotes'` take `\'`; a closing quote must be followed by whitespace or the end of the line.

use bytes::Bytes;

use super::{CodecError, protocol_error};
use crate::errors;

/// The arguments of one inline line (without its line ending), at most `max_args` of them.
/// Unquoted arguments are slices of `line`; only quoting, which can rewrite bytes, copies.
pub(super) fn split_args(line: &Bytes, max_args: usize) -> Result<Vec<Bytes>, CodecError> {
    let mut args = Vec::new();
    let mut at = 0;
    loop {
        while line.get(at).copied().is_some_and(is_space) {
            at += 1;
        }
        if at >= line.len() {
            return Ok(args);
        }
        // Counted before the argument is built. Redis has no inline limit but the line length;
        // the multibulk path's answer to too many arguments is the one clients already know.
        if args.len() == max_args {
            return Err(protocol_error(errors::PROTO_INVALID_MULTIBULK_LEN));
        }
        let (arg, next) = split_arg(line, at)?;
        args.push(arg);
        at = next;
    }
}

/// The argument starting at `start` (not a space), and where to look for the next one. An
/// argument is a run of plain bytes, ended by a separator or by one quoted part (`ab"cd"` is
/// `abcd`).
fn split_arg(line: &Bytes, start: usize) -> Result<(Bytes, usize), CodecError> {
    let rest = line.get(start..).unwrap_or_default();
    let plain_end = rest
        .iter()
        .position(|&b| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | b'"' | b'\''))
        .map_or(line.len(), |i| start + i);
    let plain = || line.slice(start..plain_end);
    match line.get(plain_end) {
        None => Ok((plain(), plain_end)),
        Some(b'"') => quoted(line, start, plain_end, double_quoted),
        Some(b'\'') => quoted(line, start, plain_end, single_quoted),
        // A separator, which Redis consumes with the argument.
        Some(_) => Ok((plain(), plain_end + 1)),
    }
}

/// The plain prefix `line[start..quote]`, then the quoted part opening at `quote`, read by
/// `read_quoted` (which returns the offset of the closing quote).
fn quoted(
    line: &Bytes,
    start: usize,
    quote: usize,
    read_quoted: fn(&[u8], usize, &mut Vec<u8>) -> Option<usize>,
) -> Result<(Bytes, usize), CodecError> {
    let unbalanced = || protocol_error(errors::PROTO_UNBALANCED_QUOTES);
    let mut arg = line.get(start..quote).unwrap_or_default().to_vec();
    let close = read_quoted(line, quote + 1, &mut arg).ok_or_else(unbalanced)?;
    if line.get(close + 1).is_some_and(|&b| !is_space(b)) {
        return Err(unbalanced());
    }
    Ok((Bytes::from(arg), close + 1))
}

/// Reads a double-quoted part from `from` into `arg`; the offset of its closing quote.
fn double_quoted(line: &[u8], from: usize, arg: &mut Vec<u8>) -> Option<usize> {
    let mut at = from;
    loop {
        match *line.get(at)? {
            b'"' => return Some(at),
            b'\\' if at + 1 < line.len() => {
                let escaped = line.get(at + 1).copied().unwrap_or_default();
                if escaped == b'x'
                    && let (Some(high), Some(low)) = (hex_value(line.get(at + 2)), hex_value(line.get(at + 3)))
                {
                    arg.push(high * 16 + low);
                    at += 4;
                    continue;
                }
                arg.push(match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => b'\x08',
                    b'a' => b'\x07',
                    other => other,
                });
                at += 2;
            }
            other => {
                arg.push(other);
                at += 1;
            }
        }
    }
}

/// Reads a single-quoted part from `from` into `arg`; the offset of its closing quote.
fn single_quoted(line: &[u8], from: usize, arg: &mut Vec<u8>) -> Option<usize> {
    let mut at = from;
    loop {
        match *line.get(at)? {
            b'\'' => return Some(at),
            b'\\' if line.get(at + 1) == Some(&b'\'') => {
                arg.push(b'\'');
                at += 2;
            }
            other => {
                arg.push(other);
                at += 1;
            }
        }
    }
}

/// C's `isspace`, which Redis uses to skip blanks between arguments.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

fn hex_value(byte: Option<&u8>) -> Option<u8> {
    let digit = char::from(*byte?).to_digit(16)?;
    u8::try_from(digit).ok()
}
