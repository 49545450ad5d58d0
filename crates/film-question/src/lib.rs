//! The FiLM generator of Perez et al. (2018): a question encoder that reads a question and
//! predicts, for every FiLMed block of the vision network, one scale Δγ and one shift β per
//! feature map.
//!
//! Token ids (N, T) → embedding → one-layer GRU → the state at each question's last real
//! token (padding never reaches it) → linear head → (N, K, 2C).

mod activations;
#[cfg(feature = "cuda")]
mod cuda;
mod encoder;
mod gru;
pub mod recurrence;
mod word_attention;
// The GPU recurrence's schedule; compiled for tests too, which run it on an emulator.
#[cfg(any(feature = "cuda", test))]
mod schedule;

pub use encoder::{QuestionEncoder, QuestionEncoderConfig};
pub use gru::Gru;
pub use word_attention::{WordAttention, WordAttentionHead};
