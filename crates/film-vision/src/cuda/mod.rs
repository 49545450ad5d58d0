//! BatchNorm (and ReLU) on NVIDIA GPUs (feature `cuda`): the CPU op's passes
//! (`batch_norm.rs`) as the kernels of `batch_norm.cu`, compiled at run time by NVRTC
//! through film-layer's loader.
//!
//! Composed from candle ops, a training BatchNorm is a dozen passes over its input forward
//! (mean, centred square, variance, normalise, scale, shift, each allocating) and more
//! backward; here it is two passes for the statistics, one to normalise, and two for the
//! backward (the per-channel sums, then the input gradient).

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{Layout, Result};
use film_layer::nvrtc::{self, CudaSource, Kernels};

static SOURCE: CudaSource = CudaSource {
    name: "batch_norm.cu",
    code: include_str!("batch_norm.cu"),
};

/// Threads of the per-channel blocks: `BN_THREADS` in batch_norm.cu.
const CHANNEL_THREADS: u32 = 512;
/// Threads per block of the element-wise kernels.
const THREADS: u32 = 256;
/// Resident blocks per multiprocessor the grid-stride kernels aim for.
const BLOCKS_PER_SM: u32 = 8;

/// A contiguous f32 operand and its layout.
pub(crate) type Operand<'a> = (&'a CudaStorage, &'a Layout);

/// Batch, channels and values per (example, channel) row of a contiguous (N, C, S) tensor.
pub(crate) type Dims = (usize, usize, usize);

fn values<'a>((storage, layout): Operand<'a>) -> Result<CudaView<'a, f32>> {
    nvrtc::contiguous::<f32>(storage, layout, "fused-batch-norm")
}

fn u32_of(what: &'static str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| {
        candle_core::Error::Msg(format!("fused BatchNorm on CUDA: {what} {value} exceeds 32 bits"))
    })
}

fn kernels(storage: &CudaStorage) -> Result<Arc<Kernels>> {
    nvrtc::kernels(&storage.device, &SOURCE)
}

/// One block per channel.
fn per_channel(channels: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (channels.max(1), 1, 1),
        block_dim: (CHANNEL_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Per channel of `x` (N, C, S): (C, 3) rows of [mean, 1/√(variance + eps), variance], the
/// variance biased, as the CPU's `channel_statistics` computes them.
pub(crate) fn statistics(x: Operand<'_>, (batch, channels, spatial): Dims, eps: f32) -> Result<CudaStorage> {
    let device = &x.0.device;
    let xs = values(x)?;
    // SAFETY: thread 0 of each channel's block writes its three values.
    let mut out = unsafe { device.alloc::<f32>(3 * channels.max(1)) }?;
    let kernels = kernels(x.0)?;
    let func = kernels.function("bn_statistics_f32")?;
    let (batch, channels, spatial) = (
        u32_of("batch", batch)?,
        u32_of("channels", channels)?,
        u32_of("row length", spatial)?,
    );
    let stream = device.cuda_stream();
    let mut launch = stream.launch_builder(&func);
    launch
        .arg(&xs)
        .arg(&mut out)
        .arg(&batch)
        .arg(&channels)
        .arg(&spatial)
        .arg(&eps);
    // SAFETY: the arguments match `bn_statistics_f32`; x holds N·C·S values.
    unsafe { launch.launch(per_channel(channels)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}

/// y = [relu](scale · (x - mean) · inv_std + shift), `affine` (C, 2) = [scale, shift],
/// `stats` (C, 2) = [mean, inv_std].
pub(crate) fn forward(
    x: Operand<'_>,
    affine: Operand<'_>,
    stats: Operand<'_>,
    (_, channels, spatial): Dims,
    relu: bool,
) -> Result<CudaStorage> {
    let device = &x.0.device;
    let (xs, affine, stats) = (values(x)?, values(affine)?, values(stats)?);
    let total = xs.len();
    // SAFETY: the kernel writes every value.
    let mut y = unsafe { device.alloc::<f32>(total.max(1)) }?;
    let kernels = kernels(x.0)?;
    let func = kernels.function("bn_forward_f32")?;
    let config = kernels.grid_stride(total, THREADS, BLOCKS_PER_SM);
    let (total, channels, spatial, relu) = (
        total as u64,
        u32_of("channels", channels)?,
        u32_of("row length", spatial.max(1))?,
        relu as i32,
    );
    let stream = device.cuda_stream();
    let mut launch = stream.launch_builder(&func);
    launch
        .arg(&xs)
        .arg(&affine)
        .arg(&stats)
        .arg(&mut y)
        .arg(&total)
        .arg(&channels)
        .arg(&spatial)
        .arg(&relu);
    // SAFETY: the arguments match `bn_forward_f32`; x and y hold `total` values, affine and
    // stats two per channel.
    unsafe { launch.launch(config) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(y, device.clone()))
}

/// The input gradient and the (C, 2) [d scale, d shift] rows, as the CPU's
/// `normalize_backward`.
pub(crate) fn backward(
    x: Operand<'_>,
    dy: Operand<'_>,
    affine: Operand<'_>,
    stats: Operand<'_>,
    (batch, channels, spatial): Dims,
    relu: bool,
    batch_statistics: bool,
) -> Result<(CudaStorage, CudaStorage)> {
    let device = &x.0.device;
    let (xs, dys) = (values(x)?, values(dy)?);
    let (affine, stats) = (values(affine)?, values(stats)?);
    let total = xs.len();
    // SAFETY: the sums kernel writes both values of every channel, the input kernel every
    // input gradient.
    let (mut grad_affine, mut dx) = unsafe {
        (
            device.alloc::<f32>(2 * channels.max(1))?,
            device.alloc::<f32>(total.max(1))?,
        )
    };
    let kernels = kernels(x.0)?;
    let stream = device.cuda_stream();
    let (batch_u, channels_u, spatial_u, relu_i) = (
        u32_of("batch", batch)?,
        u32_of("channels", channels)?,
        u32_of("row length", spatial.max(1))?,
        relu as i32,
    );
    let sums = kernels.function("bn_backward_sums_f32")?;
    let mut launch = stream.launch_builder(&sums);
    launch
        .arg(&xs)
        .arg(&dys)
        .arg(&affine)
        .arg(&stats)
        .arg(&mut grad_affine)
        .arg(&batch_u)
        .arg(&channels_u)
        .arg(&spatial_u)
        .arg(&relu_i);
    // SAFETY: the arguments match `bn_backward_sums_f32`.
    unsafe { launch.launch(per_channel(channels_u)) }.w()?;

    let input = kernels.function("bn_backward_input_f32")?;
    let config = kernels.grid_stride(total, THREADS, BLOCKS_PER_SM);
    let (total_u, count, batch_statistics_i) =
        (total as u64, (batch * spatial) as f32, batch_statistics as i32);
    let mut launch = stream.launch_builder(&input);
    launch
        .arg(&xs)
        .arg(&dys)
        .arg(&affine)
        .arg(&stats)
        .arg(&grad_affine)
        .arg(&mut dx)
        .arg(&total_u)
        .arg(&channels_u)
        .arg(&spatial_u)
        .arg(&count)
        .arg(&relu_i)
        .arg(&batch_statistics_i);
    // SAFETY: the arguments match `bn_backward_input_f32`; it runs after the sums on the
    // same stream.
    unsafe { launch.launch(config) }.w()?;
    let wrap = |slice| CudaStorage::wrap_cuda_slice(slice, device.clone());
    Ok((wrap(dx), wrap(grad_affine)))
}

#[cfg(test)]
mod tests {
    use super::SOURCE;

    /// The kernels compile for Hopper: needs libnvrtc, not a GPU (`cargo test --features
    /// cuda` with the CUDA libraries on the path).
    #[test]
    fn batch_norm_kernels_compile_for_sm_90() {
        let cubin = film_layer::nvrtc::compile(&SOURCE, (9, 0)).unwrap_or_else(|e| panic!("{e}"));
        assert!(cubin.starts_with(b"\x7fELF"), "a cubin is an ELF file");
    }
}
