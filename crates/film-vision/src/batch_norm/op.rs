//! The fused BatchNorm (+ ReLU) as a candle `CustomOp3`: forward on the CPU (`cpu.rs`) or
//! on CUDA (`crate::cuda`), and its backward.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::cpu::{coefficients, contiguous, normalize, normalize_backward};

/// y = [relu](scale_c · (x - mean_c) · inv_std_c + shift_c), x (N, C, *), `affine` (C, 2)
/// = [scale, shift], `stats` (C, 2) = [mean, inv_std]. With `batch_statistics` the backward
/// differentiates through the statistics (training); without, they are constants
/// (evaluation). `stats` never receives a gradient: it is computed from x outside the op.
pub(super) struct FusedBatchNorm {
    pub batch_statistics: bool,
    pub relu: bool,
}

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
