//! The whole FiLM model: question encoder (FiLM generator) and FiLMed network.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use film_question::QuestionEncoder;
use film_vision::FilmedNetwork;

use crate::perception::PerceptionHead;
use crate::presets::ModelConfig;

/// Question and image in, answer logits out. Weights live under `generator.` and
/// `network.` in the safetensors files.
pub struct FilmModel {
    pub generator: QuestionEncoder,
    pub network: FilmedNetwork,
    /// Training-only scene supervision of the stem (`perception.` in the files).
    pub perception: Option<PerceptionHead>,
    question_only: bool,
}

impl FilmModel {
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(FilmModel {
            generator: QuestionEncoder::new(&config.question, vb.pp("generator"))?,
            network: FilmedNetwork::new(&config.vision, vb.pp("network"))?,
            perception: if config.perception_head {
                Some(PerceptionHead::new(config.vision.channels, vb.pp("perception"))?)
            } else {
                None
            },
            question_only: config.question_only,
        })
    }

    /// The raw FiLM parameters (N, K, 2C) for padded `questions` of true `lengths`.
    pub fn film_params(&self, questions: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        self.generator.forward(questions, lengths)
    }

    /// Answer logits (N, answers) for N questions and their N images; `train` selects
    /// batch statistics in BatchNorm.
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

    /// Answer logits (N, answers) for N questions about M <= N distinct `images`, and the
    /// stem's output for those images (M, C, h, w): question i reads image
    /// `image_rows[i]` (u32, (N,)). The stem runs once per distinct image, so several
    /// questions about one image share its cost, forward and backward.
    pub fn forward_shared_t(
        &self,
        images: &Tensor,
        image_rows: &Tensor,
        questions: &Tensor,
        lengths: &[usize],
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        let params = self.film_params(questions, lengths)?;
        let stem = self.network.stem_t(&self.vision_input(images)?, train)?;
        let per_question = if stem.dim(0)? == image_rows.dim(0)? && is_identity(image_rows)? {
            stem.clone()
        } else {
            stem.index_select(image_rows, 0)?
        };
        let x = self.network.blocks_t(&per_question, &params, train)?;
        Ok((self.network.classifier_t(&x, train)?, stem))
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

/// Whether `rows` (u32) is 0, 1, …, n-1: every question has an image of its own.
fn is_identity(rows: &Tensor) -> Result<bool> {
    Ok(rows
        .to_device(&candle_core::Device::Cpu)?
        .to_vec1::<u32>()?
        .iter()
        .enumerate()
        .all(|(i, &r)| r as usize == i))
}
