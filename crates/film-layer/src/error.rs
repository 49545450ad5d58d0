//! What can go wrong when FiLM is applied, with the shapes that were seen.

use candle_core::{DType, DeviceLocation};

use crate::ChannelLayout;

/// Errors from the FiLM entry points. Each names the shapes or types it got so that a
/// mismatch can be fixed without a debugger.
#[derive(Debug, thiserror::Error)]
pub enum FilmError {
    /// The feature map has too few dimensions for the layout.
    #[error("FiLM input must have rank >= 2 for {layout} layout ({expected}), got shape {got:?}")]
    InputRank {
        layout: ChannelLayout,
        expected: &'static str,
        got: Vec<usize>,
    },

    /// γ or β is not a matrix of shape (N, C).
    #[error("{name} must have shape (N, C) = ({batch}, {channels}) to match input {input:?} ({layout}), got rank-{rank} shape {got:?}")]
    ParamRank {
        name: &'static str,
        layout: ChannelLayout,
        batch: usize,
        channels: usize,
        rank: usize,
        input: Vec<usize>,
        got: Vec<usize>,
    },

    /// γ or β has a batch size other than the feature map's.
    #[error("batch size mismatch: input {input:?} has batch {expected}, but {name} has shape {got:?}")]
    BatchMismatch {
        name: &'static str,
        expected: usize,
        input: Vec<usize>,
        got: Vec<usize>,
    },

    /// γ or β has a channel count other than the feature map's.
    #[error(
        "channel mismatch: input {input:?} ({layout}) has {expected} channels, but {name} has shape {got:?}"
    )]
    ChannelMismatch {
        name: &'static str,
        layout: ChannelLayout,
        expected: usize,
        input: Vec<usize>,
        got: Vec<usize>,
    },

    /// The residual added after the activation has another shape than the feature map.
    #[error("residual must have the input's shape {expected:?}, got {got:?}")]
    ResidualShape { expected: Vec<usize>, got: Vec<usize> },

    /// An operand has another dtype than the feature map.
    #[error("dtype mismatch: input is {expected:?} but {name} is {got:?}")]
    DTypeMismatch {
        name: &'static str,
        expected: DType,
        got: DType,
    },

    /// An operand lives on another device than the feature map.
    #[error("device mismatch: input is on {expected:?} but {name} is on {got:?}")]
    DeviceMismatch {
        name: &'static str,
        expected: DeviceLocation,
        got: DeviceLocation,
    },

    /// FiLM is defined for floating-point feature maps only.
    #[error("unsupported dtype {0:?}: FiLM supports f32, f64, f16 and bf16")]
    UnsupportedDType(DType),

    /// A FiLM generator output is not (N, K, 2C).
    #[error("generator output must have shape (N, K, 2C) with an even last dimension, got {got:?}")]
    GeneratorShape { got: Vec<usize> },

    /// An error raised by candle itself while computing.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<FilmError> for candle_core::Error {
    /// Lets `?` carry a [`FilmError`] out of code that returns `candle_core::Result`.
    fn from(err: FilmError) -> Self {
        match err {
            FilmError::Candle(inner) => inner,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// Shorthand for results whose error is a [`FilmError`].
pub type Result<T> = std::result::Result<T, FilmError>;
