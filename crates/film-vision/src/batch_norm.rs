//! Batch normalisation (optionally followed by ReLU) as one differentiable candle op on the
//! CPU, and on NVIDIA GPUs with the `cuda` feature (`cuda/`, the same passes as kernels).
//!
//! candle-nn's BatchNorm is composed from a transpose, a copy and seven broadcast ops; with
//! their backward passes a stem BatchNorm reads and writes its activations about twenty
//! times per step, and the three stem BatchNorms alone cost more than their convolutions.
//! The fused op reads the input twice for the batch statistics and once to normalise, and
//! its backward is two passes: per-channel sums, then the input gradient. The variables
//! (`weight`, `bias`, `running_mean`, `running_var`) and their update are candle-nn's, so
//! checkpoints are unchanged, and on other devices and dtypes the candle-nn module runs
//! instead.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, ModuleT, Result, Shape, Tensor, Var};
use candle_nn::{BatchNormConfig, VarBuilder};
use rayon::prelude::*;

/// BatchNorm over dimension 1 of (N, C) or (N, C, *spatial) inputs, with running statistics
/// for evaluation, momentum 0.1 and ε = 1e-5 as PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    composed: candle_nn::BatchNorm,
    running_mean: Var,
    running_var: Var,
    channels: usize,
}

impl BatchNorm {
    /// `affine`: a learned per-channel scale and shift after normalising.
    pub fn new(channels: usize, affine: bool, vb: VarBuilder) -> Result<Self> {
        let config = BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine,
            momentum: 0.1,
        };
        let composed = candle_nn::batch_norm(channels, config, vb)?;
        Ok(BatchNorm {
            running_mean: Var::from_tensor(composed.running_mean())?,
            running_var: Var::from_tensor(composed.running_var())?,
            composed,
            channels,
        })
    }

    /// Normalises `x` with the batch's statistics (`train`, which also updates the running
    /// statistics) or with the running ones.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, false)
    }

    /// `relu(BatchNorm(x))` in the same pass.
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, true)
    }

    /// The candle-nn composition, for parity tests and devices without the fused op.
    pub fn forward_reference_t(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let y = self.composed.forward_t(x, train)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    fn forward_with(&self, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
        let device = x.device();
        let fused_device = device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda());
        if !fused_device || x.dtype() != DType::F32 || x.rank() < 2 {
            return self.forward_reference_t(x, train, relu);
        }
        let (batch, channels) = (x.dim(0)?, x.dim(1)?);
        if channels != self.channels {
            candle_core::bail!(
                "BatchNorm of {} channels got an input of shape {:?}",
                self.channels,
                x.shape()
            );
        }
        let x = x.contiguous()?;
        let spatial = x.elem_count() / (batch * channels).max(1);
        let stats = match device.is_cpu() {
            true => self.cpu_statistics(&x, train, (batch, channels, spatial))?,
            false => self.device_statistics(&x, train, (batch, channels, spatial))?,
        };
        let affine = self.affine(device)?;
        x.apply_op3(
            &affine,
            &stats,
            FusedBatchNorm {
                batch_statistics: train,
                relu,
            },
        )
    }

    /// The (C, 2) [mean, inv_std] rows the op normalises with: the batch's (updating the
    /// running statistics) when training, the running ones otherwise.
    fn cpu_statistics(
        &self,
        x: &Tensor,
        train: bool,
        (batch, channels, spatial): (usize, usize, usize),
    ) -> Result<Tensor> {
        let eps = self.composed.eps();
        let (mean, variance) = if train {
            let (mean, variance) = channel_statistics(x, batch, channels, spatial)?;
            self.update_running(&mean, &variance, batch * spatial)?;
            (mean, variance)
        } else {
            (
                self.running_mean.as_tensor().to_vec1::<f32>()?,
                self.running_var.as_tensor().to_vec1::<f32>()?,
            )
        };
        let inv_std: Vec<f32> = variance.iter().map(|v| 1.0 / (v + eps as f32).sqrt()).collect();
        Tensor::from_vec(
            mean.iter()
                .zip(&inv_std)
                .flat_map(|(&m, &s)| [m, s])
                .collect::<Vec<_>>(),
            (channels, 2),
            x.device(),
        )
    }

    /// [`BatchNorm::cpu_statistics`] on a GPU, where the statistics stay: copying them to
    /// the host would wait for the device at every BatchNorm.
    #[cfg(feature = "cuda")]
    fn device_statistics(&self, x: &Tensor, train: bool, dims: (usize, usize, usize)) -> Result<Tensor> {
        let eps = self.composed.eps();
        if train {
            let all = x.apply_op1_no_bwd(&BatchStatistics {
                dims,
                eps: eps as f32,
            })?;
            let mean = all.narrow(1, 0, 1)?.squeeze(1)?;
            let variance = all.narrow(1, 2, 1)?.squeeze(1)?;
            self.update_running_with(&mean, &variance, dims.0 * dims.2)?;
            all.narrow(1, 0, 2)?.contiguous()
        } else {
            let inv_std = (self.running_var.as_tensor() + eps)?.sqrt()?.recip()?;
            Tensor::stack(&[self.running_mean.as_tensor(), &inv_std], 1)
        }
    }

    /// Without the `cuda` feature no device but the CPU reaches the fused op.
    #[cfg(not(feature = "cuda"))]
    fn device_statistics(&self, x: &Tensor, _: bool, _: (usize, usize, usize)) -> Result<Tensor> {
        candle_core::bail!("fused BatchNorm: no kernels for {:?} in this build", x.device())
    }

    /// (C, 2) rows of [scale, shift]: the learned affine parameters, or [1, 0] without them.
    pub(crate) fn affine(&self, device: &candle_core::Device) -> Result<Tensor> {
        match self.composed.weight_and_bias() {
            Some((weight, bias)) => Tensor::stack(&[weight, bias], 1),
            None => Tensor::from_vec([1f32, 0.0].repeat(self.channels), (self.channels, 2), device),
        }
    }

    /// Whether the BatchNorm has learned affine parameters.
    pub(crate) fn has_affine(&self) -> bool {
        self.composed.weight_and_bias().is_some()
    }

    pub(crate) fn eps(&self) -> f64 {
        self.composed.eps()
    }

    /// The running mean and variance, for evaluation.
    pub(crate) fn running_statistics(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((
            self.running_mean.as_tensor().to_vec1::<f32>()?,
            self.running_var.as_tensor().to_vec1::<f32>()?,
        ))
    }

    /// Moves the running statistics towards a batch's `mean` and biased `variance` over
    /// `count` values per channel, as PyTorch does.
    pub(crate) fn update_running(&self, mean: &[f32], variance: &[f32], count: usize) -> Result<()> {
        let device = self.running_mean.device();
        let mean = Tensor::from_slice(mean, self.channels, device)?;
        let variance = Tensor::from_slice(variance, self.channels, device)?;
        self.update_running_with(&mean, &variance, count)
    }

    /// [`BatchNorm::update_running`] from (C) tensors on the statistics' device.
    fn update_running_with(&self, mean: &Tensor, variance: &Tensor, count: usize) -> Result<()> {
        let momentum = self.composed.momentum();
        // PyTorch keeps the unbiased variance in its running estimate.
        let unbiased = count as f64 / (count as f64 - 1.0).max(1.0);
        self.running_mean
            .set(&((self.running_mean.as_tensor() * (1.0 - momentum))? + (mean * momentum)?)?)?;
        self.running_var
            .set(&((self.running_var.as_tensor() * (1.0 - momentum))? + (variance * (momentum * unbiased))?)?)
    }
}

/// Per-channel mean and (biased) variance of a contiguous (N, C, S) f32 tensor, two-pass
/// for accuracy: each row of S values is summed in f32 (vectorised), rows in f64.
fn channel_statistics(
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

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    f32_data("fused BatchNorm", storage, layout)
}

/// The f32 values of a contiguous CPU storage; `op` names the op in the error.
pub(crate) fn f32_data<'a>(op: &'static str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    kernel_launch::cpu::contiguous(storage, layout, op)
}

/// y = [relu](scale_c · (x - mean_c) · inv_std_c + shift_c), x (N, C, *), `affine` (C, 2)
/// = [scale, shift], `stats` (C, 2) = [mean, inv_std]. With `batch_statistics` the backward
/// differentiates through the statistics (training); without, they are constants
/// (evaluation). `stats` never receives a gradient: it is computed from x outside the op.
struct FusedBatchNorm {
    batch_statistics: bool,
    relu: bool,
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
/// `dy` (N, C, S), the affine parameters and statistics as [`FusedBatchNorm`] takes them,
/// the input gradient and the (C, 2) [d scale, d shift] rows.
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
/// branch per value, mispredicted on about half of a ReLU's inputs. A non-finite dy stays
/// non-finite under the mask, which only makes a bad step louder.
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

impl CustomOp3 for FusedBatchNorm {
    fn name(&self) -> &'static str {
        "fused-batch-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        affine: &CpuStorage,
        affine_layout: &Layout,
        stats: &CpuStorage,
        stats_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = x_layout.shape().clone();
        let (batch, channels) = (shape.dims()[0], shape.dims()[1]);
        let spatial = shape.elem_count() / (batch * channels).max(1);
        let x = contiguous(x, x_layout)?;
        let coef = coefficients(
            contiguous(affine, affine_layout)?,
            contiguous(stats, stats_layout)?,
        );
        let y = normalize(x, &coef, self.relu, channels, spatial)?;
        Ok((CpuStorage::F32(y), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        affine: &candle_core::CudaStorage,
        affine_layout: &Layout,
        stats: &candle_core::CudaStorage,
        stats_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let shape = x_layout.shape().clone();
        let (batch, channels) = (shape.dims()[0], shape.dims()[1]);
        let spatial = shape.elem_count() / (batch * channels).max(1);
        let y = crate::cuda::forward(
            (x, x_layout),
            (affine, affine_layout),
            (stats, stats_layout),
            (batch, channels, spatial),
            self.relu,
        )?;
        Ok((y, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        affine: &Tensor,
        stats: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (batch, channels) = (x.dim(0)?, x.dim(1)?);
        let spatial = x.elem_count() / (batch * channels).max(1);
        let grad_y = grad_y.contiguous()?;
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return self.cuda_bwd(x, affine, stats, &grad_y, (batch, channels, spatial));
        }
        let (x_storage, x_layout) = x.storage_and_layout();
        let (dy_storage, dy_layout) = grad_y.storage_and_layout();
        let (candle_core::Storage::Cpu(x_cpu), candle_core::Storage::Cpu(dy_cpu)) =
            (&*x_storage, &*dy_storage)
        else {
            candle_core::bail!("fused BatchNorm backward: tensors are not on the CPU")
        };
        let (xs, dy) = (contiguous(x_cpu, x_layout)?, contiguous(dy_cpu, dy_layout)?);
        let affine_values = affine.flatten_all()?.to_vec1::<f32>()?;
        let stat_values = stats.flatten_all()?.to_vec1::<f32>()?;
        let (dx, grad_affine) = normalize_backward(
            xs,
            dy,
            &affine_values,
            &stat_values,
            self.relu,
            self.batch_statistics,
            (batch, channels, spatial),
        )?;
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(grad_affine, (channels, 2), device)?),
            None,
        ))
    }
}

#[cfg(feature = "cuda")]
impl FusedBatchNorm {
    /// The backward on a CUDA device: the kernels' two passes.
    fn cuda_bwd(
        &self,
        x: &Tensor,
        affine: &Tensor,
        stats: &Tensor,
        grad_y: &Tensor,
        dims: (usize, usize, usize),
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        use candle_core::{op::BackpropOp, Storage};
        let (affine, stats) = (affine.contiguous()?, stats.contiguous()?);
        let guards = [x, grad_y, &affine, &stats].map(|t| t.storage_and_layout());
        let mut operands = Vec::with_capacity(guards.len());
        for (storage, layout) in &guards {
            match &**storage {
                Storage::Cuda(cuda) => operands.push((cuda, *layout)),
                _ => candle_core::bail!("fused BatchNorm backward: the tensors are not all on the GPU"),
            }
        }
        let (dx, grad_affine) = crate::cuda::backward(
            operands[0],
            operands[1],
            operands[2],
            operands[3],
            dims,
            self.relu,
            self.batch_statistics,
        )?;
        let tensor = |storage, shape: Shape| {
            Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false)
        };
        Ok((
            Some(tensor(dx, x.shape().clone())),
            Some(tensor(grad_affine, Shape::from((dims.1, 2)))),
            None,
        ))
    }
}

/// The batch's per-channel [mean, 1/√(variance + ε), variance] of a contiguous (N, C, S)
/// tensor, (C, 3), computed where the tensor is (CUDA); never differentiated, as
/// [`FusedBatchNorm`]'s statistics are not.
#[cfg(feature = "cuda")]
struct BatchStatistics {
    dims: (usize, usize, usize),
    eps: f32,
}

#[cfg(feature = "cuda")]
impl candle_core::CustomOp1 for BatchStatistics {
    fn name(&self) -> &'static str {
        "batch-statistics"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("batch statistics: the CPU computes them in channel_statistics")
    }

    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = crate::cuda::statistics((x, layout), self.dims, self.eps)?;
        Ok((out, Shape::from((self.dims.1, 3))))
    }
}

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
