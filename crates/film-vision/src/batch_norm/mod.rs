//! Batch normalisation (optionally followed by ReLU) as one differentiable candle op on the
//! CPU, and on NVIDIA GPUs with the `cuda` feature (`crate::cuda`, the same passes as
//! kernels).
//!
//! candle-nn's BatchNorm is composed from a transpose, a copy and seven broadcast ops; with
//! their backward passes a stem BatchNorm reads and writes its activations about twenty
//! times per step (what that cost: docs/benchmarks.md, "The training step", change 3).
//! The fused op reads the input twice for the batch statistics and once to normalise, and
//! its backward is two passes: per-channel sums, then the input gradient. The variables
//! (`weight`, `bias`, `running_mean`, `running_var`) and their update are candle-nn's, so
//! checkpoints are unchanged, and on other devices and dtypes the candle-nn module runs
//! instead.
//!
//! Here: the [`BatchNorm`] layer; `cpu.rs` the statistics and the forward and backward
//! passes on slices (shared with `conv_norm`); `op.rs` the fused op; `cuda.rs` (feature
//! `cuda`) the statistics and the backward on a GPU.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod op;

use candle_core::{DType, ModuleT, Result, Tensor, Var};
use candle_nn::{BatchNormConfig, VarBuilder};

use cpu::channel_statistics;
use op::FusedBatchNorm;

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

    /// Without the `cuda` feature no device but the CPU reaches the fused op (with it,
    /// `cuda.rs` has this method).
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
