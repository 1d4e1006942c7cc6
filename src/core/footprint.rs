//! Estimates of the memory a key's state takes, for MEMORY USAGE: the sizes of the structures
//! and the bytes they point to, as Redis estimates its values. The allocator's rounding, the
//! room hash tables and B-trees keep free, and strings shared with other keys (an owner's name
//! is one allocation for all the keys it holds) are not told apart, so the figure is a guide
//! to which keys are big, not an account of every byte.
//!
//! A line or a set of owed DONEs can hold millions of entries, so those are estimated from a
//! sample of their first entries, as Redis samples the elements of big values.

use std::sync::Arc;

/// An `Arc<[u8]>`'s allocation: its two counts and the bytes.
pub(crate) fn arc_bytes(bytes: &Arc<[u8]>) -> usize {
    2 * size_of::<usize>() + bytes.len()
}

/// The bytes of `len` entries, estimated from the first `samples` of `entries` (the sizes of
/// the entries, in order): their average times `len`.
pub(crate) fn extrapolate(len: usize, entries: impl Iterator<Item = usize>, samples: usize) -> usize {
    let (count, total) =
        entries.take(samples).fold((0usize, 0usize), |(count, total), bytes| (count + 1, total + bytes));
    total.saturating_mul(len).checked_div(count).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_stands_for_all_entries() {
        assert_eq!(extrapolate(0, std::iter::empty(), 5), 0);
        assert_eq!(extrapolate(3, [10, 20, 30].into_iter(), 5), 60);
        assert_eq!(extrapolate(1_000, [10, 30, 999].into_iter(), 2), 20_000, "only the first two are read");
        assert_eq!(arc_bytes(&Arc::from(&b"abc"[..])), 2 * size_of::<usize>() + 3);
    }
}
