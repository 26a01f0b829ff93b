//! A tiny seeded generator (SplitMix64) for demo weights, test data and
//! benches. Deterministic across platforms and crate versions, so a seed
//! always gives the same weights.

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state, one add and a mix
/// per draw. Not for cryptography.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 24 random bits (exactly representable in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }

    /// Fills `out` with values uniform in `[lo, hi)`.
    pub fn fill_uniform(&mut self, out: &mut [f32], lo: f32, hi: f32) {
        for v in out {
            *v = self.uniform(lo, hi);
        }
    }

    /// A vector of `n` values uniform in `[lo, hi)`.
    pub fn vec_uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        let mut v = vec![0.0; n];
        self.fill_uniform(&mut v, lo, hi);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let a = SplitMix64::new(7).vec_uniform(1000, -0.5, 0.5);
        let b = SplitMix64::new(7).vec_uniform(1000, -0.5, 0.5);
        assert_eq!(a, b);
        assert!(a.iter().all(|&v| (-0.5..0.5).contains(&v)));
        let c = SplitMix64::new(8).vec_uniform(1000, -0.5, 0.5);
        assert_ne!(a, c);
        // The mean of 1000 uniform draws on [-0.5, 0.5) has sd ≈ 0.009.
        let mean: f32 = a.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.05, "mean {mean}");
    }
}
