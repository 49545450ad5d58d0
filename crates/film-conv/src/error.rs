//! What can go wrong when a convolution is set up; each variant names the
//! offending tensor and its shape so the caller can find the bad layer.

use candle_core::{DType, Shape};

#[derive(Debug, thiserror::Error)]
pub enum ConvError {
    #[error("film-conv: {what} must have rank 4 (N, C, H, W), got shape {shape:?}")]
    Rank { what: &'static str, shape: Shape },

    #[error(
        "film-conv: input has {input} channels but the weight {weight:?} expects {expected} \
         (weight layout is (out, in, kh, kw); grouped convolutions are not supported)"
    )]
    ChannelMismatch {
        input: usize,
        expected: usize,
        weight: Shape,
    },

    #[error(
        "film-conv: bias has shape {bias:?}, expected ({out_channels},) for the weight's output channels"
    )]
    BiasShape { bias: Shape, out_channels: usize },

    #[error(
        "film-conv: kernel {kernel_h}x{kernel_w} does not fit the input {in_h}x{in_w} padded by {padding}"
    )]
    KernelTooLarge {
        kernel_h: usize,
        kernel_w: usize,
        in_h: usize,
        in_w: usize,
        padding: usize,
    },

    #[error("film-conv: stride must be at least 1, got {stride}")]
    ZeroStride { stride: usize },

    #[error("film-conv: the fast kernels take f32 only, {what} is {dtype:?} (use film_conv::conv2d, which falls back to candle)")]
    DType { what: &'static str, dtype: DType },

    #[error("film-conv: {what} must be contiguous in memory (call .contiguous() first)")]
    NotContiguous { what: &'static str },

    #[error("film-conv: {what} has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        what: &'static str,
        got: Shape,
        expected: Shape,
    },

    #[error("film-conv: cuDNN's {call} failed for {geometry}: {detail}")]
    Cudnn {
        call: &'static str,
        geometry: String,
        detail: String,
    },
}

impl From<ConvError> for candle_core::Error {
    fn from(e: ConvError) -> Self {
        candle_core::Error::wrap(e)
    }
}
