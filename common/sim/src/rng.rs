//! A small, dependency-free, seeded pseudo-random number generator.
//!
//! [`Rng`] is xoshiro256\*\* (Blackman & Vigna) with its state expanded from a
//! single `u64` seed by splitmix64, as the authors recommend. It is *not*
//! cryptographically secure; it is fast, has a period of 2^256 − 1 and — the
//! property that matters here — produces the same sequence for the same seed
//! on every platform and every run.

/// One step of splitmix64: advances `state` and returns the next output.
///
/// Exposed because it is handy for deriving per-test or per-node seeds from
/// one master seed.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seeded xoshiro256\*\* generator; deterministic for a given seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// Creates a generator whose whole sequence is determined by `seed`.
    /// Any seed, including 0, is fine.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        // splitmix64 is a bijection on its counter, so four consecutive
        // outputs cannot all be zero; the all-zero state is unreachable.
        Rng { s }
    }

    /// Returns the next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Returns a uniformly distributed `f64` in `[0, 1)` (53 bits of precision).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Returns `true` with probability `p`.
    ///
    /// `p <= 0` is always `false` and `p >= 1` always `true`; neither consumes
    /// randomness, so a fault-free link does not perturb the stream.
    pub fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.next_f64() < p
        }
    }

    /// Returns a uniformly distributed value in `[0, n)` without modulo bias
    /// (Lemire's multiply-and-reject method).
    ///
    /// # Panics
    /// Panics if `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Returns a uniformly distributed value in `[lo, hi]` (both inclusive).
    /// Consumes no randomness when `lo == hi`.
    ///
    /// # Panics
    /// Panics if `lo > hi`.
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "Rng::range_inclusive({lo}, {hi}): empty range");
        match hi - lo {
            0 => lo,
            u64::MAX => self.next_u64(),
            span => lo + self.below(span + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // Reference outputs of splitmix64 seeded with 1234567 (from the
        // public-domain C implementation by Vigna).
        let mut s = 1_234_567u64;
        assert_eq!(splitmix64(&mut s), 6_457_827_717_110_365_317);
        assert_eq!(splitmix64(&mut s), 3_203_168_211_198_807_973);
        assert_eq!(splitmix64(&mut s), 9_817_491_932_198_370_423);
    }

    #[test]
    fn xoshiro_reference_values() {
        // xoshiro256** from state {1, 2, 3, 4}, as in the reference C code.
        let mut r = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11_520, 0, 1_509_978_240, 1_215_971_899_390_074_240]);
    }

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let a: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..64).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(42);
            (0..64).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = Rng::new(43);
            (0..64).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn f64_in_unit_interval_with_plausible_mean() {
        let mut r = Rng::new(7);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn chance_extremes_consume_nothing() {
        let mut r = Rng::new(9);
        let before = r.clone();
        assert!(!r.chance(0.0));
        assert!(r.chance(1.0));
        assert!(!r.chance(-3.0));
        assert_eq!(r, before);
    }

    #[test]
    fn range_inclusive_hits_both_ends_and_stays_inside() {
        let mut r = Rng::new(11);
        let mut seen = [0u32; 6];
        for _ in 0..60_000 {
            let v = r.range_inclusive(10, 15);
            assert!((10..=15).contains(&v));
            seen[(v - 10) as usize] += 1;
        }
        for (i, &count) in seen.iter().enumerate() {
            // Expected 10 000 each; 6 sigma is about 550.
            assert!((9_400..=10_600).contains(&count), "bucket {i}: {count}");
        }
        assert_eq!(r.range_inclusive(5, 5), 5);
        let _ = r.range_inclusive(0, u64::MAX);
    }

    #[test]
    #[should_panic(expected = "empty range")]
    fn range_inclusive_rejects_empty() {
        Rng::new(0).range_inclusive(3, 2);
    }
}
