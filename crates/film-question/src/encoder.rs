//! The question encoder: token ids → (γ, β) for every FiLMed block.

use candle_core::{Result, Tensor};
use candle_nn::{Embedding, Init, Module, VarBuilder};
use film_layer::FilmGenerator;
use serde::{Deserialize, Serialize};

use crate::gru::Gru;
use crate::word_attention::{padding_scores, WordAttention, WordAttentionHead};

/// Sizes of the FiLM generator; the defaults are the paper's CLEVR model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionEncoderConfig {
    /// Number of question tokens, special tokens included.
    pub vocab_size: usize,
    /// Width of the word embeddings.
    pub embedding_dim: usize,
    /// Width of the GRU state.
    pub hidden_dim: usize,
    /// Number of FiLMed blocks to condition: one (γ, β) pair each.
    pub num_blocks: usize,
    /// Feature maps per block: the length of each γ and β.
    pub channels: usize,
    /// Each block also (or only) reads the question through its own attention over the
    /// words ([`WordAttentionHead`]); absent: the paper's head on the last state alone, as
    /// in configs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_attention: Option<WordAttention>,
}

impl QuestionEncoderConfig {
    /// The paper's sizes for a vocabulary of `vocab_size` tokens.
    pub fn paper(vocab_size: usize) -> Self {
        QuestionEncoderConfig {
            vocab_size,
            embedding_dim: 200,
            hidden_dim: 4096,
            num_blocks: 4,
            channels: 128,
            word_attention: None,
        }
    }
}

/// Embedding → GRU → state at the last real token → FiLM generator head → (N, K, 2C).
///
/// Weight names follow the FiLM reference code: `embed`, `rnn.weight_ih_l0`…, `decoder`;
/// with word attention also `word_attention.*`.
#[derive(Clone, Debug)]
pub struct QuestionEncoder {
    embedding: Embedding,
    rnn: Gru,
    /// The paper's head; absent when word attention replaces it.
    decoder: Option<FilmGenerator>,
    word_attention: Option<WordAttentionHead>,
    config: QuestionEncoderConfig,
}

impl QuestionEncoder {
    pub fn new(config: &QuestionEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let c = config;
        // PyTorch's embedding init N(0, 1); the reference re-initialises only conv and
        // linear weights (Kaiming uniform).
        let table = vb.pp("embed").get_with_hints(
            (c.vocab_size, c.embedding_dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )?;
        let embedding = Embedding::new(table, c.embedding_dim);
        let rnn = Gru::new(c.embedding_dim, c.hidden_dim, vb.pp("rnn"))?;
        let decoder = (c.word_attention != Some(WordAttention::Replace))
            .then(|| FilmGenerator::new(c.hidden_dim, c.channels, c.num_blocks, vb.pp("decoder")))
            .transpose()?;
        let word_attention = c
            .word_attention
            .map(|_| WordAttentionHead::new(c.hidden_dim, c.channels, c.num_blocks, vb.pp("word_attention")))
            .transpose()?;
        Ok(QuestionEncoder {
            embedding,
            rnn,
            decoder,
            word_attention,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &QuestionEncoderConfig {
        &self.config
    }

    /// `tokens` (N, T) padded ids, `lengths` the real number of tokens of each row.
    /// Returns the raw FiLM parameters (N, K, 2C): per block, Δγ then β
    /// (`film_layer::split_film_params` cuts them apart).
    pub fn forward(&self, tokens: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let embedded = self.embedding.forward(tokens)?;
        let Some(attention) = &self.word_attention else {
            let last = self.rnn.last_states(&embedded, lengths)?;
            return self.paper_head(&last);
        };
        let (states, last) = self.rnn.all_and_last_states(&embedded, lengths)?;
        let padding = padding_scores(lengths, states.dim(1)?, states.device())?.to_dtype(states.dtype())?;
        let attended = attention.params(&states, &padding, &last)?;
        match &self.decoder {
            Some(_) => self.paper_head(&last)? + attended,
            None => Ok(attended),
        }
    }

    fn paper_head(&self, last: &Tensor) -> Result<Tensor> {
        let decoder = self
            .decoder
            .as_ref()
            .expect("the paper's head exists unless word attention replaces it");
        Ok(decoder.params(last)?)
    }
}
