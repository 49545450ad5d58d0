//! Where the channel axis sits, and the checks that tie a feature map to its γ and β.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};

use crate::error::{FilmError, Result};

/// Position of the channel axis that FiLM modulates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum ChannelLayout {
    /// (N, C, *spatial): convolutional feature maps, as in the FiLM paper.
    #[default]
    ChannelsFirst,
    /// (N, *, C): token sequences or channels-last images, as in a transformer's
    /// adaptive LayerNorm.
    ChannelsLast,
}

impl fmt::Display for ChannelLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChannelLayout::ChannelsFirst => "channels-first",
            ChannelLayout::ChannelsLast => "channels-last",
        })
    }
}

impl FromStr for ChannelLayout {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "channels-first" | "nchw" => Ok(ChannelLayout::ChannelsFirst),
            "channels-last" | "nhwc" => Ok(ChannelLayout::ChannelsLast),
            other => Err(format!(
                "unknown channel layout {other:?}: expected channels-first or channels-last"
            )),
        }
    }
}

/// A feature map seen as `batch` examples of `channels` channels over `spatial` positions.
///
/// Both layouts are stored as rows: channels-first has one row of `spatial` values per
/// (example, channel), channels-last one row of `channels` values per (example, position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
    pub layout: ChannelLayout,
}

impl Geometry {
    pub fn numel(&self) -> usize {
        self.batch * self.channels * self.spatial
    }

    pub fn rows(&self) -> usize {
        match self.layout {
            ChannelLayout::ChannelsFirst => self.batch * self.channels,
            ChannelLayout::ChannelsLast => self.batch * self.spatial,
        }
    }

    pub fn row_len(&self) -> usize {
        match self.layout {
            ChannelLayout::ChannelsFirst => self.spatial,
            ChannelLayout::ChannelsLast => self.channels,
        }
    }

    /// Number of values in the packed (γ | β) parameter matrix of shape (N, 2C).
    pub fn param_len(&self) -> usize {
        2 * self.batch * self.channels
    }

    /// Shape that broadcasts an (N, C) parameter over a feature map of shape `dims`.
    pub fn broadcast_shape(&self, dims: &[usize]) -> Vec<usize> {
        let mut shape = vec![1; dims.len()];
        shape[0] = self.batch;
        match self.layout {
            ChannelLayout::ChannelsFirst => shape[1] = self.channels,
            ChannelLayout::ChannelsLast => shape[dims.len() - 1] = self.channels,
        }
        shape
    }
}

fn check_float(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(FilmError::UnsupportedDType(other)),
    }
}

/// Checks that `other` matches `x` in dtype and device.
pub(crate) fn check_same_kind(x: &Tensor, name: &'static str, other: &Tensor) -> Result<()> {
    if other.dtype() != x.dtype() {
        return Err(FilmError::DTypeMismatch {
            name,
            expected: x.dtype(),
            got: other.dtype(),
        });
    }
    if !other.device().same_device(x.device()) {
        return Err(FilmError::DeviceMismatch {
            name,
            expected: x.device().location(),
            got: other.device().location(),
        });
    }
    Ok(())
}

/// Reads the geometry of the feature map `x` in `layout`.
pub(crate) fn geometry(x: &Tensor, layout: ChannelLayout) -> Result<Geometry> {
    check_float(x.dtype())?;
    let dims = x.dims();
    if dims.len() < 2 {
        return Err(FilmError::InputRank {
            layout,
            expected: match layout {
                ChannelLayout::ChannelsFirst => "(N, C, *spatial)",
                ChannelLayout::ChannelsLast => "(N, *, C)",
            },
            got: dims.to_vec(),
        });
    }
    let (channels, spatial) = match layout {
        ChannelLayout::ChannelsFirst => (dims[1], dims[2..].iter().product()),
        ChannelLayout::ChannelsLast => (dims[dims.len() - 1], dims[1..dims.len() - 1].iter().product()),
    };
    Ok(Geometry {
        batch: dims[0],
        channels,
        spatial,
        layout,
    })
}

/// Checks that the per-example parameter `param` (γ or β) has shape (N, C) for `x`.
pub(crate) fn check_param(x: &Tensor, geo: &Geometry, name: &'static str, param: &Tensor) -> Result<()> {
    check_same_kind(x, name, param)?;
    let got = param.dims();
    if got.len() != 2 {
        return Err(FilmError::ParamRank {
            name,
            layout: geo.layout,
            batch: geo.batch,
            channels: geo.channels,
            rank: got.len(),
            input: x.dims().to_vec(),
            got: got.to_vec(),
        });
    }
    if got[0] != geo.batch {
        return Err(FilmError::BatchMismatch {
            name,
            expected: geo.batch,
            input: x.dims().to_vec(),
            got: got.to_vec(),
        });
    }
    if got[1] != geo.channels {
        return Err(FilmError::ChannelMismatch {
            name,
            layout: geo.layout,
            expected: geo.channels,
            input: x.dims().to_vec(),
            got: got.to_vec(),
        });
    }
    Ok(())
}

/// Checks that a residual has exactly the feature map's shape, dtype and device.
pub(crate) fn check_residual(x: &Tensor, residual: &Tensor) -> Result<()> {
    check_same_kind(x, "residual", residual)?;
    if residual.dims() != x.dims() {
        return Err(FilmError::ResidualShape {
            expected: x.dims().to_vec(),
            got: residual.dims().to_vec(),
        });
    }
    Ok(())
}
