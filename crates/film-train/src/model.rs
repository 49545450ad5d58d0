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
        self.network
            .forward_t(&self.vision_input(images)?, &params, train)
    }

    /// The images the network is given: `images`, or blank ones for the question-only
    /// baseline. Code that runs the network's stages itself (analysis) starts from here.
    pub fn vision_input(&self, images: &Tensor) -> Result<Tensor> {
        if self.question_only {
            images.zeros_like()
        } else {
            Ok(images.clone())
        }
    }
}
