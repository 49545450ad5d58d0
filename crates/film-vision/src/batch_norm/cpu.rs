//! BatchNorm's arithmetic on the CPU, over contiguous (N, C, S) f32 slices: the batch
//! statistics (whole, or per image and merged), the normalisation and the backward's
//! per-channel sums and input gradient. The fused op (`op.rs`) and the convolution +
//! BatchNorm op (`conv_norm`) both run on these.

use candle_core::{CpuStorage, Layout, Result, Tensor};
use rayon::prelude::*;

/// Per-channel mean and (biased) variance of a contiguous (N, C, S) f32 tensor, two-pass
/// for accuracy: each row of S values is summed in f32 (vectorised), rows in f64.
pub(super) fn channel_statistics(
    x: &Tensor,
    batch: usize,
    channels: usize,
    spatial: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("BatchNorm statistics: the input is not on the CPU")
    };
    let data = contiguous(cpu, layout)?;
    Ok(statistics(data, batch, channels, spatial))
}

/// [`channel_statistics`] of a contiguous (N, C, S) slice.
fn statistics(data: &[f32], batch: usize, channels: usize, spatial: usize) -> (Vec<f32>, Vec<f32>) {
    let count = (batch * spatial) as f64;
    (0..channels)
        .into_par_iter()
        .map(|c| {
            let rows = || (0..batch).map(move |n| &data[(n * channels + c) * spatial..][..spatial]);
            let mean = rows()
                .map(|row| paired_sums(row, row, |v, _| (v, 0.0)).0 as f64)
                .sum::<f64>()
                / count;
            let m = mean as f32;
            let variance = rows()
                .map(|row| paired_sums(row, row, |v, _| ((v - m) * (v - m), 0.0)).0 as f64)
                .sum::<f64>()
                / count;
            (m, variance as f32)
        })
        .unzip()
}

/// Lanes of independent partial sums: one f32 accumulator is a serial dependency that the
/// compiler may not reorder, eight let the row loops run in vector registers.
const LANES: usize = 8;

/// Σ first(a, b) and Σ second(a, b) over two equally long rows.
#[inline]
fn paired_sums(a: &[f32], b: &[f32], term: impl Fn(f32, f32) -> (f32, f32)) -> (f32, f32) {
    let (mut first, mut second) = ([0f32; LANES], [0f32; LANES]);
    // Fixed-size arrays, not `chunks_exact` slices, so that the group length is known at
    // compile time: with slices every lane kept a bounds check and was loaded on its own.
    let (a_chunks, a_rest) = a.as_chunks::<LANES>();
    let (b_chunks, b_rest) = b.as_chunks::<LANES>();
    for (a, b) in a_chunks.iter().zip(b_chunks) {
        for k in 0..LANES {
            let (u, v) = term(a[k], b[k]);
            first[k] += u;
            second[k] += v;
        }
    }
    let (mut u_total, mut v_total) = (first.iter().sum::<f32>(), second.iter().sum::<f32>());
    for (&a, &b) in a_rest.iter().zip(b_rest) {
        let (u, v) = term(a, b);
        u_total += u;
        v_total += v;
    }
    (u_total, v_total)
}

pub(super) fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    f32_data("fused BatchNorm", storage, layout)
}

/// The f32 values of a contiguous CPU storage; `op` names the op in the error.
pub(crate) fn f32_data<'a>(op: &'static str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    kernel_launch::cpu::contiguous(storage, layout, op)
}

/// Per-channel y = a·x + b coefficients from the affine parameters and statistics.
pub(crate) fn coefficients(affine: &[f32], stats: &[f32]) -> Vec<(f32, f32)> {
    affine
        .chunks_exact(2)
        .zip(stats.chunks_exact(2))
        .map(|(ab, ms)| {
            let a = ab[0] * ms[1];
            (a, ab[1] - ms[0] * a)
        })
        .collect()
}

/// An f32 buffer of `len` elements that is not zero-filled, for an output the op writes
/// completely.
pub(crate) fn output_buffer(len: usize) -> Result<Vec<f32>> {
    // SAFETY: every caller in this crate writes each element (whole rows: one per (n, c)
    // here, one per pooled row in `pool`, the whole map in `conv_norm`) before anything
    // reads the buffer.
    unsafe { kernel_launch::cpu::output_buffer(len) }
}

/// y = [relu](a_c · x + b_c) for x (N, C, S) contiguous, `coef[c]` = (a_c, b_c).
pub(crate) fn normalize(
    x: &[f32],
    coef: &[(f32, f32)],
    relu: bool,
    channels: usize,
    spatial: usize,
) -> Result<Vec<f32>> {
    let mut y = output_buffer(x.len())?;
    y.par_chunks_mut(spatial)
        .with_min_len(GRAIN / spatial.max(1) + 1)
        .zip(x.par_chunks(spatial))
        .enumerate()
        .for_each(|(row, (y, x))| {
            let (a, b) = coef[row % channels];
            if relu {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = (a * x + b).max(0.0);
                }
            } else {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = a * x + b;
                }
            }
        });
    Ok(y)
}

/// BatchNorm's (and ReLU's) backward on slices: from the input `xs` and output gradient
/// `dy` (N, C, S), the affine parameters and statistics as [`super::op::FusedBatchNorm`]
/// takes them, the input gradient and the (C, 2) [d scale, d shift] rows.
pub(crate) fn normalize_backward(
    xs: &[f32],
    dy: &[f32],
    affine_values: &[f32],
    stat_values: &[f32],
    relu: bool,
    batch_statistics: bool,
    dims: (usize, usize, usize),
) -> Result<(Vec<f32>, Vec<f32>)> {
    let backward = NormBackward::new(xs, dy, affine_values, stat_values, relu, batch_statistics, dims);
    let spatial = dims.2;
    let mut dx = output_buffer(xs.len())?;
    dx.par_chunks_mut(spatial)
        .with_min_len(GRAIN / spatial.max(1) + 1)
        .zip(xs.par_chunks(spatial).zip(dy.par_chunks(spatial)))
        .enumerate()
        .for_each(|(row, (dx, (xs, dy)))| backward.input_grad_row(row, xs, dy, dx));
    Ok((dx, backward.grad_affine()))
}

/// BatchNorm's (and ReLU's) backward in two halves: [`NormBackward::new`] makes the
/// per-channel sums over the whole batch, after which each (n, c) row's input gradient
/// depends only on that row ([`NormBackward::input_grad_row`]), so a caller can produce
/// it where it is consumed (the convolution + BatchNorm op does, one image at a time).
pub(crate) struct NormBackward<'a> {
    coef: Vec<(f32, f32)>,
    affine_values: &'a [f32],
    stat_values: &'a [f32],
    /// Per channel: Σ g and Σ g · x̂ over the batch, g the gradient reaching the normalised
    /// value.
    sums: Vec<(f64, f64)>,
    relu: bool,
    batch_statistics: bool,
    channels: usize,
    /// Values per channel in the batch, N · S.
    count: f32,
}

/// The gradient reaching the normalised value: through the ReLU mask (kept where the
/// pre-activation is ≥ 0, as candle's ReLU does), as a product with 0 or 1. Written as a
/// select (or as a bit mask, which LLVM turns back into one) the sums loop compiled to a
/// branch per value, which a ReLU's inputs make unpredictable (docs/benchmarks.md, "The
/// training step", change 13). A non-finite dy stays non-finite under the mask, which only
/// makes a bad step louder.
#[inline(always)]
fn masked(relu: bool, (a, b): (f32, f32), x: f32, dy: f32) -> f32 {
    let keep = !relu | (a * x + b >= 0.0);
    dy * f32::from(u8::from(keep))
}

impl<'a> NormBackward<'a> {
    /// The per-channel sums over `xs` and `dy` (N, C, S).
    pub(crate) fn new(
        xs: &[f32],
        dy: &[f32],
        affine_values: &'a [f32],
        stat_values: &'a [f32],
        relu: bool,
        batch_statistics: bool,
        (batch, channels, spatial): (usize, usize, usize),
    ) -> Self {
        let coef = coefficients(affine_values, stat_values);
        // Rows summed in f32, rows accumulated in f64.
        let sums: Vec<(f64, f64)> = (0..channels)
            .into_par_iter()
            .map(|c| {
                let (mean, inv_std) = (stat_values[2 * c], stat_values[2 * c + 1]);
                let ab = coef[c];
                let (mut sum_g, mut sum_gx) = (0f64, 0f64);
                for n in 0..batch {
                    let start = (n * channels + c) * spatial;
                    let (row_g, row_gx) =
                        paired_sums(&xs[start..][..spatial], &dy[start..][..spatial], |x, dy| {
                            let g = masked(relu, ab, x, dy);
                            (g, g * (x - mean))
                        });
                    sum_g += row_g as f64;
                    sum_gx += (row_gx * inv_std) as f64;
                }
                (sum_g, sum_gx)
            })
            .collect();
        Self {
            coef,
            affine_values,
            stat_values,
            sums,
            relu,
            batch_statistics,
            channels,
            count: (batch * spatial) as f32,
        }
    }

    /// The input gradient of row `row` (= n · C + c) from its input and output gradient.
    pub(crate) fn input_grad_row(&self, row: usize, xs: &[f32], dy: &[f32], dx: &mut [f32]) {
        let c = row % self.channels;
        let ab = self.coef[c];
        let (mean, inv_std) = (self.stat_values[2 * c], self.stat_values[2 * c + 1]);
        let scale = self.affine_values[2 * c] * inv_std;
        let (mean_g, slope) = if self.batch_statistics {
            // dx = scale · (g - mean(g) - x̂ · mean(g x̂)), x̂ = (x - mean) · inv_std
            let mean_g = self.sums[c].0 as f32 / self.count;
            (mean_g, inv_std * self.sums[c].1 as f32 / self.count)
        } else {
            (0.0, 0.0)
        };
        for ((dx, &x), &dy) in dx.iter_mut().zip(xs).zip(dy) {
            *dx = scale * (masked(self.relu, ab, x, dy) - mean_g - (x - mean) * slope);
        }
    }

    /// The (C, 2) rows of [d scale, d shift].
    pub(crate) fn grad_affine(&self) -> Vec<f32> {
        self.sums
            .iter()
            .flat_map(|&(sum_g, sum_gx)| [sum_gx as f32, sum_g as f32])
            .collect()
    }
}

/// Per-row mean and sum of squared deviations (two passes over the row, summed in f32
/// lanes, returned in f64): the parts [`combine_moments`] merges into batch statistics.
pub(crate) fn row_moments(row: &[f32]) -> (f64, f64) {
    let mean = paired_sums(row, row, |v, _| (v, 0.0)).0 as f64 / row.len().max(1) as f64;
    let m = mean as f32;
    let squares = paired_sums(row, row, |v, _| ((v - m) * (v - m), 0.0)).0 as f64;
    (mean, squares)
}

/// Per-channel mean and biased variance of a batch from each (image, channel) row's
/// [`row_moments`], `moments[n][c]`, rows of `spatial` values each: Chan et al.'s pairwise
/// merge, the mean's spread between rows added to the summed squared deviations.
pub(crate) fn combine_moments(
    moments: &[Vec<(f64, f64)>],
    channels: usize,
    spatial: usize,
) -> (Vec<f32>, Vec<f32>) {
    let rows = moments.len().max(1) as f64;
    (0..channels)
        .map(|c| {
            let mean = moments.iter().map(|m| m[c].0).sum::<f64>() / rows;
            let squares: f64 = moments
                .iter()
                .map(|m| m[c].1 + spatial as f64 * (m[c].0 - mean) * (m[c].0 - mean))
                .sum();
            (mean as f32, (squares / (rows * spatial as f64)) as f32)
        })
        .unzip()
}

/// Work handed to one thread at a time, in elements: small tensors stay on one thread.
const GRAIN: usize = 1 << 14;

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-image moments merged into batch statistics agree with an f64 two-pass
    /// computation, also far from zero, where a one-pass Σx² formula loses the variance.
    #[test]
    fn merged_row_moments_match_the_batch_statistics() {
        let (batch, channels, spatial) = (5, 3, 37);
        let data: Vec<f32> = (0..batch * channels * spatial)
            .map(|i| {
                let wobble = ((i * 7919) % 1000) as f32 / 1000.0 - 0.5;
                let c = (i / spatial) % channels;
                100.0 * c as f32 + 0.2 * wobble + 0.05 * (i / (channels * spatial)) as f32
            })
            .collect();
        let moments: Vec<Vec<(f64, f64)>> = data
            .chunks_exact(channels * spatial)
            .map(|image| image.chunks_exact(spatial).map(row_moments).collect())
            .collect();
        let (mean, variance) = combine_moments(&moments, channels, spatial);
        for c in 0..channels {
            let values: Vec<f64> = (0..batch)
                .flat_map(|n| {
                    data[(n * channels + c) * spatial..][..spatial]
                        .iter()
                        .map(|&v| v as f64)
                })
                .collect();
            let exact_mean = values.iter().sum::<f64>() / values.len() as f64;
            let exact_variance = values
                .iter()
                .map(|v| (v - exact_mean) * (v - exact_mean))
                .sum::<f64>()
                / values.len() as f64;
            assert!(
                (mean[c] as f64 - exact_mean).abs() < 1e-4 * exact_mean.abs().max(1.0),
                "channel {c} mean"
            );
            assert!(
                (variance[c] as f64 - exact_variance).abs() < 1e-3 * exact_variance,
                "channel {c}: variance {} against {exact_variance}",
                variance[c]
            );
        }
    }
}
