//! The FiLMed residual vision network of Perez et al. (2018).
//!
//! A stem turns pixels (or pre-extracted features) into C feature maps; K FiLMed residual
//! blocks, each seeing two coordinate maps, are modulated by the question encoder's
//! (γ, β); a classifier pools them into answer logits. Every architecture ablation of the
//! paper's Table 2 is an option of [`VisionConfig`], not a copy of the block.

mod batch_norm;
#[cfg(any(feature = "cuda", test))]
mod batch_norm_launches;
mod config;
mod conv_norm;
#[cfg(feature = "cuda")]
mod cuda;
mod global_context;
mod layers;
mod model;
mod pool;

pub use batch_norm::BatchNorm;
pub use config::{BlockOptions, FilmPosition, Pool, ResidualSource, Stem, VisionConfig};
pub use global_context::GlobalContext;
pub use layers::coordinate_maps;
pub use model::{Classifier, ConvNormRelu, FilmedNetwork, FilmedResBlock};
pub use pool::global_max_pool;
