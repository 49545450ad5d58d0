//! The GRU's gate non-linearities over fixed groups of lanes, written so that the compiler
//! turns each group into a handful of vector instructions.
//!
//! libm's `expf` and `tanhf` are one call per value: in the `mini` preset's recurrence
//! (46 steps × 64 questions × 256 units × three gates) they were most of the forward's gate
//! time. The exponential here is the classic range reduction `x = n·ln 2 + r` with a degree-6
//! polynomial for `e^r` (the Cephes `expf` coefficients), within 2 ulp of the true value
//! over the clamped range; sigmoid and tanh are built on it. tanh near zero is computed as
//! `1 - 2/(e^{2x} + 1)`, so its error there is absolute (about 1e-7), not relative: far
//! below what a gate value needs.

/// Values per group: one AVX register of f32.
pub const LANES: usize = 8;

/// A group of values processed together.
pub type Lanes = [f32; LANES];

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so that `n · LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Beyond these, e^x overflows or leaves the normal range; clamping keeps `2^n` a normal
/// float, and sigmoid and tanh are saturated long before.
const EXP_MIN: f32 = -87.0;
const EXP_MAX: f32 = 88.0;
/// 2^23 + 127: see the end of [`exp_one`].
const MAGIC_BIAS: f32 = 8_388_735.0;

#[inline(always)]
fn exp_one(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let n = (x * LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from its exponent bits; n is a whole number in [-126, 127] after the clamp. Adding
    // 2^23 + 127 puts n + 127 in the low mantissa bits, and the shift moves it into the
    // exponent (the bits above it fall off). This avoids `n as i32`, whose saturating
    // conversion the compiler does one lane at a time.
    e * f32::from_bits((n + MAGIC_BIAS).to_bits() << 23)
}

// The lane loops below are plain indexed loops on purpose: `[T; N]::map` goes through a
// generic helper that is not always inlined, and then nothing is vectorised.

/// `1 / (1 + e^{-x})` of every lane.
#[inline(always)]
pub fn sigmoid(x: Lanes) -> Lanes {
    let mut out = [0.0; LANES];
    for i in 0..LANES {
        out[i] = 1.0 / (1.0 + exp_one(-x[i]));
    }
    out
}

/// `tanh(x)` of every lane.
#[inline(always)]
pub fn tanh(x: Lanes) -> Lanes {
    let mut out = [0.0; LANES];
    for i in 0..LANES {
        out[i] = 1.0 - 2.0 / (exp_one(2.0 * x[i]) + 1.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200 000 evenly spaced values between the limits, plus zeros, tiny values and the
    /// limits themselves, in groups.
    fn samples(lo: f32, hi: f32) -> Vec<Lanes> {
        let values: Vec<f32> = (0..200_000)
            .map(|i| lo + (hi - lo) * i as f32 / 199_999.0)
            .chain([0.0, -0.0, 1e-30, -1e-30, lo, hi])
            .collect();
        values
            .chunks(LANES)
            .map(|c| {
                let mut lanes = [0.0; LANES];
                lanes[..c.len()].copy_from_slice(c);
                lanes
            })
            .collect()
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        for group in samples(-87.0, 88.0) {
            for (x, got) in group.iter().zip(group.iter().map(|&x| exp_one(x))) {
                let want = (*x as f64).exp();
                let ulp = (want as f32).abs() * f32::EPSILON;
                assert!(
                    ((got as f64) - want).abs() <= 2.0 * ulp as f64,
                    "exp({x}) = {got}, want {want}"
                );
            }
        }
    }

    #[test]
    fn sigmoid_and_tanh_match_libm() {
        for group in samples(-100.0, 100.0) {
            for ((x, s), t) in group.iter().zip(sigmoid(group)).zip(tanh(group)) {
                let x = *x as f64;
                let (want_s, want_t) = (1.0 / (1.0 + (-x).exp()), x.tanh());
                assert!(
                    (s as f64 - want_s).abs() <= 2e-7 * want_s.max(1e-30) + 1e-37,
                    "sigmoid({x}) = {s}, want {want_s}"
                );
                assert!(
                    (t as f64 - want_t).abs() <= 2e-7,
                    "tanh({x}) = {t}, want {want_t}"
                );
            }
        }
    }

    #[test]
    fn saturation_and_nan() {
        let [s_hi, s_lo, t_hi, t_lo] = {
            let s = sigmoid([1e4, -1e4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
            let t = tanh([1e4, -1e4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
            [s[0], s[1], t[0], t[1]]
        };
        assert_eq!((s_hi, t_hi, t_lo), (1.0, 1.0, -1.0));
        assert!((0.0..1e-37).contains(&s_lo));
        assert!(sigmoid([f32::NAN; LANES])[0].is_nan());
        assert!(tanh([f32::NAN; LANES])[0].is_nan());
    }
}
