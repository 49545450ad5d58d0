//! Summary statistics and histograms of FiLM parameter values.

use serde::Serialize;

/// A value counts as "near zero" when |v| < NEAR_ZERO · max |v| over the same set of
/// values (a block, or all blocks): relative, so that runs whose parameters have different
/// scales compare, and the paper's "sharp peak at 0" shows as a large fraction.
pub const NEAR_ZERO: f64 = 0.05;

/// What the statistics table shows for one set of values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
    pub fraction_negative: f64,
    pub fraction_near_zero: f64,
    /// The absolute threshold `NEAR_ZERO · max |v|` the fraction was counted with.
    pub near_zero_below: f64,
}

/// The summary of `values`; `None` when there are none.
pub fn summarize(values: &[f32]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let (mut min, mut max, mut sum, mut max_abs, mut negative) =
        (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0.0f64, 0usize);
    for &v in values {
        let v = v as f64;
        min = min.min(v);
        max = max.max(v);
        sum += v;
        max_abs = max_abs.max(v.abs());
        negative += usize::from(v < 0.0);
    }
    let mean = sum / n;
    let variance = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let near_zero_below = NEAR_ZERO * max_abs;
    let near_zero = values
        .iter()
        .filter(|&&v| (v as f64).abs() < near_zero_below)
        .count();
    Some(Summary {
        count: values.len(),
        min,
        max,
        mean,
        std: variance.sqrt(),
        fraction_negative: negative as f64 / n,
        fraction_near_zero: near_zero as f64 / n,
        near_zero_below,
    })
}

/// Counts of values in `bins` equal bins from `lo` to `hi`; the last bin includes `hi`.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<usize>,
}

impl Histogram {
    /// Bins spanning exactly the range of `values` (a constant set gets a unit-wide range
    /// around its value, so every value still lands in a bin).
    pub fn of(values: &[f32], bins: usize) -> Histogram {
        let bins = bins.max(1);
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v as f64), hi.max(v as f64))
            });
        let (lo, hi) = match (lo.is_finite(), hi > lo) {
            (false, _) => (0.0, 1.0),
            (true, false) => (lo - 0.5, lo + 0.5),
            (true, true) => (lo, hi),
        };
        let mut counts = vec![0; bins];
        let width = (hi - lo) / bins as f64;
        for &v in values {
            let bin = (((v as f64 - lo) / width) as usize).min(bins - 1);
            counts[bin] += 1;
        }
        Histogram { lo, hi, counts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_hand_computed_case() {
        // max |v| = 4, so "near zero" is |v| < 0.2: the values 0.1 and -0.15.
        let values = [-4.0f32, -1.0, 0.1, -0.15, 2.0, 3.05];
        let s = summarize(&values).unwrap();
        assert_eq!(s.count, 6);
        assert_eq!((s.min, s.max), (-4.0, 3.05f32 as f64));
        // mean = (-4 - 1 + 0.1 - 0.15 + 2 + 3.05) / 6 = 0
        assert!(s.mean.abs() < 1e-6, "mean {}", s.mean);
        // variance = (16 + 1 + 0.01 + 0.0225 + 4 + 9.3025) / 6 = 30.335 / 6
        assert!((s.std - (30.335f64 / 6.0).sqrt()).abs() < 1e-5, "std {}", s.std);
        assert_eq!(s.fraction_negative, 3.0 / 6.0);
        assert_eq!(s.fraction_near_zero, 2.0 / 6.0);
        assert!((s.near_zero_below - 0.2).abs() < 1e-12);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn histogram_bins_by_hand() {
        // Range 0..4 in 4 bins of width 1: [0,1) [1,2) [2,3) [3,4].
        let h = Histogram::of(&[0.0, 0.5, 1.0, 2.9, 3.0, 4.0], 4);
        assert_eq!((h.lo, h.hi), (0.0, 4.0));
        assert_eq!(h.counts, vec![2, 1, 1, 2]);
        let constant = Histogram::of(&[2.0, 2.0], 3);
        assert_eq!(constant.counts.iter().sum::<usize>(), 2);
        assert_eq!((constant.lo, constant.hi), (1.5, 2.5));
    }
}
