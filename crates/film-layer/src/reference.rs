//! The slow, obviously correct FiLM: candle's broadcast ops composed one after another.
//!
//! Kept beside the fused kernels as the definition they are tested against, and used on
//! devices that have no fused kernel. Same arguments and checks as the fused path.

use candle_core::Tensor;

use crate::error::Result;
use crate::layout::{check_param, check_residual, geometry, ChannelLayout};

/// `relu?(γ ⊙ x + β) + residual?` as separate candle ops (one pass over memory each).
pub fn film_composed(
    x: &Tensor,
    gamma: &Tensor,
    beta: Option<&Tensor>,
    layout: ChannelLayout,
    relu: bool,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let geo = geometry(x, layout)?;
    check_param(x, &geo, "gamma", gamma)?;
    if let Some(beta) = beta {
        check_param(x, &geo, "beta", beta)?;
    }
    if let Some(residual) = residual {
        check_residual(x, residual)?;
    }
    let shape = geo.broadcast_shape(x.dims());
    let mut y = x.broadcast_mul(&gamma.reshape(shape.as_slice())?)?;
    if let Some(beta) = beta {
        y = y.broadcast_add(&beta.reshape(shape.as_slice())?)?;
    }
    if relu {
        y = y.relu()?;
    }
    if let Some(residual) = residual {
        y = (y + residual)?;
    }
    Ok(y)
}
