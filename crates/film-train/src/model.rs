//! The whole FiLM model: question encoder (FiLM generator) and FiLMed network.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use film_question::QuestionEncoder;
use film_vision::FilmedNetwork;

use crate::presets::ModelConfig;

/// Question and image in, answer logits out. Weights live under `generator.` and
/// `network.` in the safetensors files.
pub struct FilmModel {
    pub generator: QuestionEncoder,
    pub network: FilmedNetwork,
    question_only: bool,
}

impl FilmModel {
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(FilmModel {
            generator: QuestionEncoder::new(&config.question, vb.pp("generator"))?,
            network: FilmedNetwork::new(&config.vision, vb.pp("network"))?,
            question_only: config.question_only,
        })
    }

    /// The raw FiLM parameters (N, K, 2C) for padded `questions` of true `lengths`.
    pub fn film_params(&self, questions: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        self.generator.forward(questions, lengths)
    }

    /// Answer logits (N, answers); `train` selects batch statistics in BatchNorm.
    pub fn forward_t(
        &self,
        images: &Tensor,
        questions: &Tensor,
        lengths: &[usize],
        train: bool,
    ) -> Result<Tensor> {
        let params = self.film_params(questions, lengths)?;
        if self.question_only {
            return self.network.forward_t(&images.zeros_like()?, &params, train);
        }
        self.network.forward_t(images, &params, train)
    }
}
