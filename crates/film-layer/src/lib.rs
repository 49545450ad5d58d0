//! FiLM — feature-wise linear modulation (Perez et al., AAAI 2018) for candle.
//!
//! FiLM conditions a network on side information by scaling and shifting each feature
//! map: `FiLM(x | γ, β) = γ ⊙ x + β`, with one (γ, β) pair per example and per channel,
//! predicted by another network from the conditioning input (a question, a class, a
//! timestep). This crate provides that operation for any channel layout, the γ
//! parametrisations of the paper's ablations, and fused CPU kernels (and CUDA ones with
//! the `cuda` feature) whose forward and backward each make a single pass over memory,
//! with the plain candle composition beside them in [`reference`](mod@reference).
//!
//! # Example: a tiny conditioned network, trained
//!
//! A class label selects (γ, β) through a linear layer; FiLM modulates image features
//! with them. Gradient descent makes the loss fall.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor, D};
//! use candle_nn::{linear, Optimizer, VarBuilder, VarMap, SGD};
//! use film_layer::{split_film_params, Film, FilmConfig};
//!
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! let (batch, classes, channels) = (8, 4, 6);
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
//! // The FiLM generator: class one-hot -> (N, 1, 2C), one block's γ and β.
//! let generator = linear(classes, 2 * channels, vb.pp("generator"))?;
//! let film = Film::new(FilmConfig { relu: true, ..Default::default() });
//!
//! let features = Tensor::randn(0f32, 1., (batch, channels, 5, 5), &dev)?;
//! let labels = Tensor::from_iter((0..batch as u32).map(|i| i % classes as u32), &dev)?;
//! let one_hot = candle_nn::encoding::one_hot(labels.clone(), classes, 1f32, 0f32)?;
//! // Target: each class wants a different mean activation.
//! let target = (labels.to_dtype(DType::F32)? + 0.5)?;
//!
//! let mut sgd = SGD::new(varmap.all_vars(), 0.5)?;
//! let mut losses = Vec::new();
//! // 80 steps: over 300 random initialisations, 30 steps left the loss above a tenth of
//! // its start 6% of the time, 60 steps at most at 0.04 of it.
//! for _ in 0..80 {
//!     let params = generator.forward(&one_hot)?.unsqueeze(1)?;
//!     let (gamma, beta) = split_film_params(&params)?.remove(0);
//!     let y = film.forward(&features, &gamma, &beta)?;
//!     let prediction = y.flatten_from(1)?.mean(D::Minus1)?;
//!     let loss = (prediction - &target)?.sqr()?.mean_all()?;
//!     sgd.backward_step(&loss)?;
//!     losses.push(loss.to_scalar::<f32>()?);
//! }
//! assert!(losses[79] < 0.1 * losses[0], "loss did not fall: {losses:?}");
//! # Ok(())
//! # }
//! ```
//!
//! # Layouts and parametrisations
//! - [`ChannelLayout::ChannelsFirst`]: x is (N, C, *spatial), the CNN case.
//! - [`ChannelLayout::ChannelsLast`]: x is (N, *, C), e.g. [`modulate`] for transformers.
//! - [`GammaMode`]: γ as given, 1 + Δγ (default), sigmoid, tanh, exp, or fixed to 1;
//!   [`FilmConfig::use_beta`] switches β off.
//!
//! # Features
//! - `generator`: `FilmGenerator`, the linear layer from a conditioning vector to every
//!   block's (γ, β), built from a candle-nn `VarBuilder` (adds the candle-nn dependency).
//! - `serde`: `Serialize` and `Deserialize` for [`FilmConfig`], [`GammaMode`] and
//!   [`ChannelLayout`], in the names their `Display` gives.
//! - `cuda`: the fused kernels on NVIDIA GPUs.

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod error;
mod film;
mod gamma;
#[cfg(feature = "generator")]
mod generator;
#[cfg(any(feature = "cuda", test))]
mod launch_plan;
mod layout;
mod op;
pub mod reference;

pub use error::{FilmError, Result};
pub use film::{film, film_fused, film_relu, modulate, split_film_params, Film, FilmConfig};
pub use gamma::GammaMode;
#[cfg(feature = "generator")]
pub use generator::FilmGenerator;
pub use layout::ChannelLayout;

/// Compiles the README's example as a doctest, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
