//! The FiLM generator's output layer: one linear map from a conditioning vector to the
//! (γ, β) of every FiLMed block (feature `generator`).

use candle_core::Tensor;
use candle_nn::{Init, Linear, Module, VarBuilder};

use crate::error::Result;
use crate::film::split_film_params;

/// A linear layer from a conditioning vector (N, D) to `blocks` pairs (γ, β) of
/// `channels` values each, as the FiLM paper's generators end: the question encoder's
/// state, a class embedding or a timestep embedding goes in, every block's parameters
/// come out of one product.
///
/// Its variables are `weight` (blocks · 2 · channels, D) and `bias`, initialised as
/// PyTorch initialises a `Linear` (Kaiming-uniform weight, bias uniform in ±1/√D), so
/// a generator ported from the reference code loads its weights unchanged. The raw γ it
/// gives is meant for [`Film`](crate::Film), whose [`GammaMode`](crate::GammaMode)
/// maps it (1 + Δγ by default).
#[derive(Clone, Debug)]
pub struct FilmGenerator {
    linear: Linear,
    blocks: usize,
    channels: usize,
}

impl FilmGenerator {
    pub fn new(condition_dim: usize, channels: usize, blocks: usize, vb: VarBuilder) -> Result<Self> {
        let out = blocks * 2 * channels;
        let weight = vb.get_with_hints(
            (out, condition_dim),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_UNIFORM,
        )?;
        let bound = 1.0 / (condition_dim as f64).sqrt();
        let bias = vb.get_with_hints(
            out,
            "bias",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(FilmGenerator {
            linear: Linear::new(weight, Some(bias)),
            blocks,
            channels,
        })
    }

    /// The raw parameters (N, blocks, 2 · channels): per block, raw γ then β.
    pub fn params(&self, condition: &Tensor) -> Result<Tensor> {
        let batch = condition.dim(0)?;
        Ok(self
            .linear
            .forward(condition)?
            .reshape((batch, self.blocks, 2 * self.channels))?)
    }

    /// One (raw γ, β) pair of shape (N, channels) per block, in block order.
    pub fn forward(&self, condition: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
        split_film_params(&self.params(condition)?)
    }
}
