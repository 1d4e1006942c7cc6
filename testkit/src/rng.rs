//! A small deterministic PRNG, so that a failure can be replayed from its seed.

/// xorshift64*: fast, dependency-free, good enough to pick cases and verdicts.
pub struct Rng(u64);

impl Rng {
    /// Any seed works; xorshift needs a non-zero state, so 0 counts as 1.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True `pct` times in a hundred.
    pub fn percent(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_zero_is_a_seed() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert_eq!(run(0), run(1));
        assert!(run(0).iter().all(|&n| n != 0));
    }

    #[test]
    fn below_and_percent_stay_in_range() {
        let mut rng = Rng::new(42);
        assert!((0..1000).all(|_| rng.below(10) < 10));
        assert_eq!(rng.below(0), 0);
        assert!((0..100).all(|_| !rng.percent(0) && rng.percent(100)));
        let hits = (0..10_000).filter(|_| rng.percent(20)).count();
        assert!((1_500..2_500).contains(&hits), "20% of 10,000 draws: {hits}");
        assert_eq!(rng.bytes(5).len(), 5);
    }
}
