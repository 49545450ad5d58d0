//! Deterministic pseudo-random inputs for the kernels' checks (their unit tests and the
//! CUDA examples): the same values on every machine, whatever the version of a random
//! number crate.

/// An xorshift64 stream.
#[derive(Clone, Debug)]
pub struct Stream(u64);

impl Stream {
    pub fn new(seed: u64) -> Stream {
        Stream(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next value, in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next `len` values, each uniform in [lo, hi).
    pub fn uniform(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len)
            .map(|_| lo + (hi - lo) * self.next_unit() as f32)
            .collect()
    }
}

/// The first `len` values of [`Stream::new`]`(seed)`, in [0, 1).
pub fn unit_values(seed: u64, len: usize) -> Vec<f64> {
    let mut stream = Stream::new(seed);
    (0..len).map(|_| stream.next_unit()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_reproducible_and_in_range() {
        let values = unit_values(3, 1000);
        assert_eq!(values, unit_values(3, 1000));
        assert_ne!(values, unit_values(4, 1000));
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");

        let uniform = Stream::new(3).uniform(1000, -1.0, 1.0);
        assert!(uniform.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_eq!(uniform[0], -1.0 + 2.0 * values[0] as f32);
    }
}
