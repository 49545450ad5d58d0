//! Fast, differentiable 2-D convolutions for candle on the CPU, and through cuDNN on
//! NVIDIA GPUs (feature `cuda`).
//!
//! candle 0.11's CPU `conv2d` is several times slower than PyTorch's, and its
//! backward (the input gradient runs as `conv_transpose2d`) ten times or
//! more; training a convolutional trunk on the CPU is dominated by it. This
//! crate computes the forward pass, the input gradient and the weight and
//! bias gradients as GEMMs (the `gemm` crate, the one candle uses) over an
//! unfolded input (im2col / col2im), spread over threads by image, with the
//! unfolding buffers kept in a pool across calls.
//!
//! - [`conv2d`]: the entry point; the fast op for f32 tensors on the CPU, cuDNN for f32
//!   CUDA tensors with the `cuda` feature (the `cudnn` module), candle's own `conv2d` for every
//!   other dtype and device.
//! - [`fast::conv2d`] and [`reference::conv2d`]: the two paths, for tests
//!   and benchmarks that compare them.
//! - [`Conv2d`]: a layer built from a [`Conv2dConfig`] and a `VarBuilder`,
//!   with the same parameter names as `candle_nn::Conv2d` (`weight`, `bias`).
//! - [`kernels`]: the three kernels on plain f32 slices with a [`ConvGeometry`], for ops
//!   that fuse a convolution with what follows it (film-vision's convolution +
//!   BatchNorm + ReLU).
//!
//! Supported: any batch, any kernel size, stride and zero padding (the same
//! on both axes); dilation and groups are 1.

#[cfg(feature = "cuda")]
pub mod cudnn;
mod error;
mod geometry;
mod im2col;
pub mod kernels;
mod module;
mod op;
mod scratch;

pub use error::ConvError;
pub use geometry::{ConvGeometry, ConvParams};
pub use module::{Conv2d, Conv2dConfig};
pub use op::{Conv2dOp, InputGradOp, ParamGradOp};

use candle_core::{DType, Result, Tensor};

/// `conv2d(x, w) + b` (`x`: N x C_in x H x W, `w`: C_out x C_in x KH x KW,
/// `b`: C_out), differentiable. Runs the fast kernels when [`fast::supports`]
/// says so, cuDNN for f32 CUDA tensors with the `cuda` feature (candle's convolution,
/// with a warning, for a shape cuDNN cannot plan), candle's convolution otherwise.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, params: ConvParams) -> Result<Tensor> {
    if fast::supports(x, w, b) {
        return fast::conv2d(x, w, b, params);
    }
    #[cfg(feature = "cuda")]
    if cudnn::supports(x, w, b) {
        // A shape cuDNN cannot plan (its heuristics find no algorithm, a descriptor it
        // refuses) still trains, through candle, with a warning; errors while running one
        // it planned are returned.
        let geometry = ConvGeometry::new(x.shape(), w.shape(), params).map_err(candle_core::Error::wrap)?;
        match cudnn::prepare(x.device(), geometry) {
            Ok(()) => return cudnn::conv2d(x, w, b, params),
            Err(error) => cudnn::warn_fallback(geometry, &error),
        }
    }
    reference::conv2d(x, w, b, params)
}

/// `relu(conv2d(x, w) + b)`, differentiable; on the fast path the ReLU is part of the
/// convolution's op (one graph node, its backward one pass).
pub fn conv2d_relu(x: &Tensor, w: &Tensor, b: Option<&Tensor>, params: ConvParams) -> Result<Tensor> {
    if fast::supports(x, w, b) {
        fast::conv2d_relu(x, w, b, params)
    } else {
        conv2d(x, w, b, params)?.relu()
    }
}

/// The project's own kernels (CPU, f32).
pub mod fast {
    use super::*;

    /// CPU tensors, all f32.
    pub fn supports(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
        let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        f32_cpu(x) && f32_cpu(w) && b.is_none_or(f32_cpu)
    }

    /// The fast path; errors on tensors that [`supports`] rejects.
    pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, params: ConvParams) -> Result<Tensor> {
        apply(x, w, b, Conv2dOp { params, relu: false })
    }

    /// `relu(conv2d(x, w) + b)` as one op.
    pub fn conv2d_relu(x: &Tensor, w: &Tensor, b: Option<&Tensor>, params: ConvParams) -> Result<Tensor> {
        apply(x, w, b, Conv2dOp { params, relu: true })
    }

    fn apply(x: &Tensor, w: &Tensor, b: Option<&Tensor>, op: Conv2dOp) -> Result<Tensor> {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        match b {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
            None => x.apply_op2(&w, op),
        }
    }
}

/// candle's own convolution and autograd: the reference the fast path is
/// tested against, and the path for other dtypes and devices.
pub mod reference {
    use super::*;

    pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, params: ConvParams) -> Result<Tensor> {
        let y = x.conv2d(w, params.padding, params.stride, 1, 1)?;
        match b {
            Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
            None => Ok(y),
        }
    }
}
