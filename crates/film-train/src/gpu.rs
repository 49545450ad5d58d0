//! The CUDA device, with its memory pool set up for training.

use candle_core::{Device, Result};

/// GPU `ordinal`, with a memory pool that keeps the memory tensors give back.
///
/// candle allocates every tensor with `cuMemAllocAsync` from the device's default memory
/// pool, whose release threshold is 0: at each synchronisation the pool returns all its
/// free memory to the driver, and the next step has to map it again. A training step frees
/// and re-allocates the same tensors every step, so the threshold is raised to keep them,
/// which is what PyTorch's caching allocator does in effect: freed blocks are reused, and
/// the pool stays at the step's peak (as [`crate::runtime::keep_freed_memory`] does for the CPU).
#[cfg(feature = "cuda")]
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    let device = Device::new_cuda(ordinal)?;
    kernel_launch::nvrtc::set_pool_release_threshold(device.as_cuda_device()?, u64::MAX)?;
    Ok(device)
}

/// Without the `cuda` feature candle has no CUDA device: this returns its error.
#[cfg(not(feature = "cuda"))]
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal)
}

/// Lets every f32 matrix product on CUDA (candle's, hence its convolutions, and the
/// question encoder's GRU) run on TF32 tensor cores: inputs rounded to 10 mantissa bits,
/// sums in f32. PyTorch does this by default for its cuDNN convolutions and GRU
/// (`torch.backends.cudnn.allow_tf32`), not for its other products.
#[cfg(feature = "cuda")]
pub fn allow_tf32() {
    candle_core::cuda_backend::set_gemm_reduced_precision_f32(true);
}

/// Without the `cuda` feature there is no CUDA device to ask for TF32 on.
#[cfg(not(feature = "cuda"))]
pub fn allow_tf32() {}
