//! Driving a `tokio_util` decoder over a byte stream delivered in pieces, as a connection does.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// What a decoder made of a whole stream.
#[derive(Debug)]
pub struct Decoded<I, E> {
    /// Every item, in order, up to the first error.
    pub items: Vec<I>,
    /// The error that ended decoding, if any.
    pub error: Option<E>,
    /// Bytes left in the buffer after the end of the stream.
    pub leftover: usize,
}

/// Feeds `pieces` in order, decoding after each as far as it goes, then decodes at end of stream.
pub fn decode_pieces<'a, D: Decoder>(
    decoder: &mut D,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Decoded<D::Item, D::Error> {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut drain = |decoder: &mut D, buf: &mut BytesMut, eof: bool| loop {
        let step = if eof { decoder.decode_eof(buf) } else { decoder.decode(buf) };
        match step {
            Ok(Some(item)) => items.push(item),
            Ok(None) => return None,
            Err(error) => return Some(error),
        }
    };
    let mut error = None;
    for piece in pieces {
        buf.extend_from_slice(piece);
        error = drain(decoder, &mut buf, false);
        if error.is_some() {
            break;
        }
    }
    if error.is_none() {
        error = drain(decoder, &mut buf, true);
    }
    Decoded { items, error, leftover: buf.len() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::LinesCodec;

    #[test]
    fn pieces_decode_like_the_whole_and_the_end_flushes() {
        let stream = b"one\ntwo\nthree";
        let whole = decode_pieces(&mut LinesCodec::new(), [&stream[..]]);
        let cut = decode_pieces(&mut LinesCodec::new(), crate::pieces::split(stream, [1, 2].into_iter().cycle()));
        assert_eq!(whole.items, ["one", "two", "three"]);
        assert_eq!(cut.items, whole.items);
        assert!(whole.error.is_none() && whole.leftover == 0);
    }

    #[test]
    fn an_error_stops_decoding() {
        let decoded = decode_pieces(&mut LinesCodec::new_with_max_length(3), [&b"ok\ntoo long\nok\n"[..]]);
        assert_eq!(decoded.items, ["ok"]);
        assert!(decoded.error.is_some());
    }
}
