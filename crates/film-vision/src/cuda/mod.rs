//! BatchNorm (and ReLU) on NVIDIA GPUs (feature `cuda`): the CPU op's passes
//! (`batch_norm/cpu.rs`) as the kernels of `batch_norm.cu`, compiled at run time by NVRTC
//! through film-layer's loader.
//!
//! Composed from candle ops, a training BatchNorm is a dozen passes over its input forward
//! (mean, centred square, variance, normalise, scale, shift, each allocating) and more
//! backward; here it is two passes for the statistics, one to normalise, and two for the
//! backward (the per-channel sums, then the input gradient).

use candle_core::cuda_backend::cudarc::driver::{CudaView, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};
use kernel_launch::kernel_call::KernelCall;
use kernel_launch::nvrtc::{self, CudaSource};

use crate::batch_norm_launches::{self as launches, BnBuffer, Dims};

static SOURCE: CudaSource = CudaSource {
    name: "batch_norm.cu",
    code: include_str!("batch_norm.cu"),
};

/// A contiguous f32 operand and its layout.
pub(crate) type Operand<'a> = (&'a CudaStorage, &'a Layout);

fn values<'a>((storage, layout): Operand<'a>) -> Result<CudaView<'a, f32>> {
    nvrtc::contiguous::<f32>(storage, layout, "fused-batch-norm")
}

/// Launches `calls` in order on `storage`'s device, with the buffers at the addresses in
/// `given`.
///
/// # Safety
/// Every buffer the calls name must be in `given`, at an address that holds (or has room
/// for) what batch_norm_launches.rs documents for it, until the stream has run the calls.
unsafe fn launch(
    storage: &CudaStorage,
    calls: &[KernelCall<BnBuffer>],
    given: &[(BnBuffer, u64)],
) -> Result<()> {
    let kernels = nvrtc::kernels(&storage.device, &SOURCE)?;
    let stream = storage.device.cuda_stream();
    for call in calls {
        // SAFETY: as the caller guarantees; the calls are batch_norm.cu's own
        // (batch_norm_launches.rs, checked against the kernels on the CPU).
        unsafe { kernels.launch(&stream, call, |b| nvrtc::address_in(given, b)) }?;
    }
    Ok(())
}

/// The number of multiprocessors the grid-stride launches are sized to.
fn sm_count(storage: &CudaStorage) -> Result<u32> {
    Ok(nvrtc::kernels(&storage.device, &SOURCE)?.sm_count)
}

/// Per channel of `x` (N, C, S): (C, 3) rows of [mean, 1/√(variance + eps), variance], the
/// variance biased, as the CPU's `channel_statistics` computes them.
pub(crate) fn statistics(x: Operand<'_>, dims: Dims, eps: f32) -> Result<CudaStorage> {
    let device = &x.0.device;
    let xs = values(x)?;
    let call = launches::statistics(dims, eps)?;
    // SAFETY: thread 0 of each channel's block writes its three values.
    let mut out = unsafe { device.alloc::<f32>(3 * dims.1.max(1)) }?;
    {
        let stream = device.cuda_stream();
        let (x_ptr, _x) = xs.device_ptr(&stream);
        let (out_ptr, _o) = out.device_ptr_mut(&stream);
        // SAFETY: x holds N·C·S values, out three per channel.
        unsafe {
            launch(
                x.0,
                &[call],
                &[(BnBuffer::X, x_ptr), (BnBuffer::Statistics, out_ptr)],
            )
        }?;
    }
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}

/// y = [relu](scale · (x - mean) · inv_std + shift), `affine` (C, 2) = [scale, shift],
/// `stats` (C, 2) = [mean, inv_std].
pub(crate) fn forward(
    x: Operand<'_>,
    affine: Operand<'_>,
    stats: Operand<'_>,
    dims: Dims,
    relu: bool,
) -> Result<CudaStorage> {
    let device = &x.0.device;
    let (xs, affine, stats) = (values(x)?, values(affine)?, values(stats)?);
    if xs.len() != dims.0 * dims.1 * dims.2 {
        candle_core::bail!("fused BatchNorm: {} values for dimensions {dims:?}", xs.len());
    }
    let call = launches::forward(dims, relu, sm_count(x.0)?)?;
    // SAFETY: the kernel writes every value.
    let mut y = unsafe { device.alloc::<f32>(xs.len().max(1)) }?;
    {
        let stream = device.cuda_stream();
        let (x_ptr, _x) = xs.device_ptr(&stream);
        let (affine_ptr, _a) = affine.device_ptr(&stream);
        let (stats_ptr, _s) = stats.device_ptr(&stream);
        let (y_ptr, _y) = y.device_ptr_mut(&stream);
        let given = [
            (BnBuffer::X, x_ptr),
            (BnBuffer::Affine, affine_ptr),
            (BnBuffer::MeanInvStd, stats_ptr),
            (BnBuffer::Y, y_ptr),
        ];
        // SAFETY: x and y hold N·C·S values, affine and stats two per channel.
        unsafe { launch(x.0, &[call], &given) }?;
    }
    Ok(CudaStorage::wrap_cuda_slice(y, device.clone()))
}

/// The input gradient and the (C, 2) [d scale, d shift] rows, as the CPU's
/// `normalize_backward`.
pub(crate) fn backward(
    x: Operand<'_>,
    dy: Operand<'_>,
    affine: Operand<'_>,
    stats: Operand<'_>,
    dims: Dims,
    relu: bool,
    batch_statistics: bool,
) -> Result<(CudaStorage, CudaStorage)> {
    let device = &x.0.device;
    let (xs, dys) = (values(x)?, values(dy)?);
    let (affine, stats) = (values(affine)?, values(stats)?);
    let total = xs.len();
    if total != dims.0 * dims.1 * dims.2 || dys.len() != total {
        candle_core::bail!("fused BatchNorm: {total} values for dimensions {dims:?}");
    }
    let calls = launches::backward(dims, relu, batch_statistics, sm_count(x.0)?)?;
    // SAFETY: the sums kernel writes both values of every channel, the input kernel every
    // input gradient.
    let (mut grad_affine, mut dx) = unsafe {
        (
            device.alloc::<f32>(2 * dims.1.max(1))?,
            device.alloc::<f32>(total.max(1))?,
        )
    };
    {
        let stream = device.cuda_stream();
        let (x_ptr, _x) = xs.device_ptr(&stream);
        let (dy_ptr, _dy) = dys.device_ptr(&stream);
        let (affine_ptr, _a) = affine.device_ptr(&stream);
        let (stats_ptr, _s) = stats.device_ptr(&stream);
        let (grad_affine_ptr, _ga) = grad_affine.device_ptr_mut(&stream);
        let (dx_ptr, _dx) = dx.device_ptr_mut(&stream);
        let given = [
            (BnBuffer::X, x_ptr),
            (BnBuffer::Dy, dy_ptr),
            (BnBuffer::Affine, affine_ptr),
            (BnBuffer::MeanInvStd, stats_ptr),
            (BnBuffer::GradAffine, grad_affine_ptr),
            (BnBuffer::Dx, dx_ptr),
        ];
        // SAFETY: x, dy and dx hold N·C·S values, affine, stats and grad_affine two per
        // channel; the sums run before the input gradient, on the same stream.
        unsafe { launch(x.0, &calls, &given) }?;
    }
    let wrap = |slice| CudaStorage::wrap_cuda_slice(slice, device.clone());
    Ok((wrap(dx), wrap(grad_affine)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn batch_norm_kernels_compile_for_sm_90() {
        kernel_launch::nvrtc::assert_compiles_for_hopper(&super::SOURCE);
    }
}
