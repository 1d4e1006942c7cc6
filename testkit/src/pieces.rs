//! A byte stream cut into pieces, as a network may deliver it.

/// Cuts `data` into consecutive pieces of the given sizes (each at least 1 byte; the last piece
/// is whatever is left). Sizes run out → the rest is one piece.
pub fn split(data: &[u8], sizes: impl IntoIterator<Item = usize>) -> Vec<&[u8]> {
    let mut sizes = sizes.into_iter();
    let mut pieces = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (head, tail) = rest.split_at(size);
        pieces.push(head);
        rest = tail;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_data_in_order() {
        let data = b"abcdefghij";
        assert_eq!(split(data, [3, 0, 2].into_iter().cycle()), [&b"abc"[..], b"d", b"ef", b"ghi", b"j"]);
        assert_eq!(split(data, [4]), [&b"abcd"[..], b"efghij"]);
        assert_eq!(split(b"", [1]), Vec::<&[u8]>::new());
    }
}
