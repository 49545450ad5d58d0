//! The parts of BatchNorm that run only on CUDA devices (feature `cuda`): the batch
//! statistics computed where the input is, and the fused op's backward through the
//! kernels of `crate::cuda`.

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};

use super::op::FusedBatchNorm;
use super::BatchNorm;

impl BatchNorm {
    /// [`BatchNorm::cpu_statistics`] on a GPU, where the statistics stay: copying them to
    /// the host would wait for the device at every BatchNorm.
    pub(super) fn device_statistics(
        &self,
        x: &Tensor,
        train: bool,
        dims: (usize, usize, usize),
    ) -> Result<Tensor> {
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
}

impl FusedBatchNorm {
    /// The backward on a CUDA device: the kernels' two passes.
    pub(super) fn cuda_bwd(
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
struct BatchStatistics {
    dims: (usize, usize, usize),
    eps: f32,
}

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
