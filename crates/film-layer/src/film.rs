//! The public entry points: free functions for the common cases and the [`Film`] module.

use candle_core::{Device, Tensor};

use crate::error::{FilmError, Result};
use crate::gamma::GammaMode;
use crate::layout::{check_param, check_residual, geometry, ChannelLayout};
use crate::op::FusedFilm;
use crate::reference;

/// `relu?(γ ⊙ x + β) + residual?` in one pass over memory, differentiable in x, γ, β and
/// the residual, as `config` says: where the channel axis is, how the generator's
/// `raw_gamma` becomes γ, whether β is used and whether the ReLU follows.
///
/// `x` is (N, C, *spatial) or (N, *, C) as the layout says; `raw_gamma` and `beta` are
/// (N, C); `residual`, if any, has x's shape and is added after the ReLU (the FiLMed
/// residual block's `out = r + relu(FiLM(o))`). A missing β, or `use_beta` off, means
/// β = 0. Inputs of any strides are accepted (non-contiguous ones are copied first). On the
/// CPU, and on CUDA devices with the `cuda` feature, this runs the fused kernels; on other
/// devices the [`reference`](mod@crate::reference) composition.
pub fn film_fused(
    x: &Tensor,
    raw_gamma: &Tensor,
    beta: Option<&Tensor>,
    residual: Option<&Tensor>,
    config: &FilmConfig,
) -> Result<Tensor> {
    let layout = config.layout;
    let geo = geometry(x, layout)?;
    check_param(x, &geo, "gamma", raw_gamma)?;
    if let Some(beta) = beta {
        check_param(x, &geo, "beta", beta)?;
    }
    if let Some(residual) = residual {
        check_residual(x, residual)?;
    }
    let gamma = config.gamma.apply(raw_gamma)?;
    let beta = beta.filter(|_| config.use_beta);
    if !has_fused_kernels(x.device()) {
        return reference::film_composed(x, &gamma, beta, layout, config.relu, residual);
    }
    let beta = match beta {
        Some(beta) => beta.clone(),
        None => gamma.zeros_like()?,
    };
    // γ and β travel packed as one (N, 2C) operand: see `FusedFilm`.
    let params = Tensor::cat(&[&gamma, &beta], 1)?;
    let x = x.contiguous()?;
    let op = FusedFilm {
        geo,
        relu: config.relu,
    };
    Ok(match residual {
        None => x.apply_op2(&params, op)?,
        Some(residual) => x.apply_op3(&params, &residual.contiguous()?, op)?,
    })
}

/// Whether this build has fused kernels for `device`. CUDA devices can exist without
/// this crate's `cuda` feature (another crate may enable candle's), so both are checked.
fn has_fused_kernels(device: &Device) -> bool {
    device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda())
}

/// FiLM of a channels-first feature map: γ ⊙ x + β with x (N, C, *spatial), γ and β (N, C).
pub fn film(x: &Tensor, gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
    film_fused(
        x,
        gamma,
        Some(beta),
        None,
        &FilmConfig::as_given(ChannelLayout::ChannelsFirst, false),
    )
}

/// The FiLMed residual block's epilogue, channels-first: relu(γ ⊙ x + β), plus `residual`
/// when given, in one pass.
pub fn film_relu(x: &Tensor, gamma: &Tensor, beta: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
    film_fused(
        x,
        gamma,
        Some(beta),
        residual,
        &FilmConfig::as_given(ChannelLayout::ChannelsFirst, true),
    )
}

/// A transformer's adaptive-LayerNorm "modulate": x · (1 + scale) + shift, with x
/// (N, *, C) channels-last and `shift`, `scale` (N, C).
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let config = FilmConfig {
        layout: ChannelLayout::ChannelsLast,
        ..FilmConfig::default()
    };
    film_fused(x, scale, Some(shift), None, &config)
}

/// Splits a FiLM generator's output of shape (N, K, 2C) into K pairs (γ_k, β_k) of shape
/// (N, C): the first C values of each block are γ, the last C are β, as in the FiLM
/// reference code. The pairs are views: nothing is copied.
pub fn split_film_params(generator_output: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
    let dims = generator_output.dims();
    if dims.len() != 3 || !dims[2].is_multiple_of(2) {
        return Err(FilmError::GeneratorShape { got: dims.to_vec() });
    }
    let channels = dims[2] / 2;
    (0..dims[1])
        .map(|k| {
            let block = generator_output.narrow(1, k, 1)?.squeeze(1)?;
            Ok((
                block.narrow(1, 0, channels)?,
                block.narrow(1, channels, channels)?,
            ))
        })
        .collect()
}

/// Options of a [`Film`] layer; the defaults are the FiLM paper's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FilmConfig {
    /// Where the channel axis is.
    pub layout: ChannelLayout,
    /// How the generator's raw γ output becomes the scale.
    pub gamma: GammaMode,
    /// Whether β is used; `false` is the paper's "β fixed to 0" ablation.
    pub use_beta: bool,
    /// Whether a ReLU follows the modulation in the same pass.
    pub relu: bool,
}

impl FilmConfig {
    /// γ and β used as given (γ not reparametrised), with or without the ReLU: for
    /// [`film_fused`] on a γ computed elsewhere.
    pub fn as_given(layout: ChannelLayout, relu: bool) -> Self {
        FilmConfig {
            layout,
            gamma: GammaMode::Plain,
            use_beta: true,
            relu,
        }
    }
}

impl Default for FilmConfig {
    fn default() -> Self {
        FilmConfig {
            layout: ChannelLayout::ChannelsFirst,
            gamma: GammaMode::OnePlusDelta,
            use_beta: true,
            relu: false,
        }
    }
}

/// A FiLM layer: feature-wise affine modulation of `x` by parameters that another network
/// (the FiLM generator) predicts. It has no weights of its own.
#[derive(Clone, Copy, Debug, Default)]
pub struct Film {
    config: FilmConfig,
}

impl Film {
    pub fn new(config: FilmConfig) -> Self {
        Film { config }
    }

    pub fn config(&self) -> &FilmConfig {
        &self.config
    }

    /// Modulates `x` by the generator's raw γ output (mapped by the config's
    /// [`GammaMode`]) and β (ignored when `use_beta` is off; its shape is still checked).
    pub fn forward(&self, x: &Tensor, raw_gamma: &Tensor, beta: &Tensor) -> Result<Tensor> {
        self.forward_with_residual(x, raw_gamma, beta, None)
    }

    /// As [`Film::forward`], then adds `residual` (after the ReLU, if any) in the same pass.
    pub fn forward_with_residual(
        &self,
        x: &Tensor,
        raw_gamma: &Tensor,
        beta: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        film_fused(x, raw_gamma, Some(beta), residual, &self.config)
    }
}
