//! The whole FiLM model: question encoder (FiLM generator) and FiLMed network.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use film_question::QuestionEncoder;
use film_vision::FilmedNetwork;

use crate::answer_attention::AttentionHead;
use crate::intermediate_answers::{IntermediateHeads, Trace};
use crate::perception::PerceptionHead;
use crate::presets::ModelConfig;
use crate::scene_bottleneck::SceneBottleneck;

/// Question and image in, answer logits out. Weights live under `generator.` and
/// `network.` in the safetensors files.
pub struct FilmModel {
    pub generator: QuestionEncoder,
    pub network: FilmedNetwork,
    /// Training-only scene supervision of the stem (`perception.` in the files).
    pub perception: Option<PerceptionHead>,
    /// The blocks read the perception head's scene probabilities (`bottleneck.` in the
    /// files); needs the perception head.
    bottleneck: Option<SceneBottleneck>,
    /// Training-only supervision of where the answer lies on the last block's output
    /// (`attention.` in the files).
    pub attention: Option<AttentionHead>,
    /// Training-only prediction of the program's intermediate answers from the
    /// classifier's hidden layer (`intermediate.` in the files).
    pub intermediate: Option<IntermediateHeads>,
    /// Training-only prediction of the attributes of the objects the program picks out,
    /// from the classifier's hidden layer (`referents.` in the files).
    pub referents: Option<IntermediateHeads>,
    /// Training-only prediction of how many objects each relation of the program finds,
    /// from the classifier's hidden layer (`relation_sets.` in the files).
    pub relation_sets: Option<IntermediateHeads>,
    question_only: bool,
}

/// What one training forward pass gives: the answer logits (N, answers), the stem's output
/// for the distinct images (M, C, h, w), the last block's output (N, C, h, w) and the
/// classifier's hidden layer (N, F).
pub struct SharedForward {
    pub logits: Tensor,
    pub stem: Tensor,
    pub blocks: Tensor,
    pub hidden: Tensor,
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
            bottleneck: match (config.scene_bottleneck, config.perception_head) {
                (false, _) => None,
                (true, true) => Some(SceneBottleneck::new(config.vision.channels, vb.pp("bottleneck"))?),
                (true, false) => {
                    candle_core::bail!("the scene bottleneck needs the perception head (--perception-weight)")
                }
            },
            attention: if config.attention_head {
                Some(AttentionHead::new(config.vision.channels, vb.pp("attention"))?)
            } else {
                None
            },
            intermediate: if config.intermediate_heads {
                Some(IntermediateHeads::new(
                    config.vision.classifier_hidden,
                    config.vision.num_answers,
                    Trace::IntermediateAnswers,
                    vb.pp("intermediate"),
                )?)
            } else {
                None
            },
            referents: if config.referent_heads {
                Some(IntermediateHeads::new(
                    config.vision.classifier_hidden,
                    config.vision.num_answers,
                    Trace::Referents,
                    vb.pp("referents"),
                )?)
            } else {
                None
            },
            relation_sets: if config.relation_set_heads {
                Some(IntermediateHeads::new(
                    config.vision.classifier_hidden,
                    config.vision.num_answers,
                    Trace::RelationSets,
                    vb.pp("relation_sets"),
                )?)
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
        let stem = self.stem_t(images, train)?;
        let x = self
            .network
            .blocks_t(&self.blocks_input_t(&stem, train)?, &params, train)?;
        self.network.classifier_t(&x, train)
    }

    /// The stem's output (M, C, h, w) for M `images`: what the perception head reads.
    pub fn stem_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        self.network.stem_t(&self.vision_input(images)?, train)
    }

    /// What the first block reads, from the stem's output: the stem's output itself, or
    /// with the scene bottleneck the head's scene probabilities mapped to the blocks'
    /// channels.
    pub fn blocks_input_t(&self, stem: &Tensor, train: bool) -> Result<Tensor> {
        match (&self.bottleneck, &self.perception) {
            (Some(bottleneck), Some(head)) => {
                let (m, _, h, w) = stem.dims4()?;
                bottleneck.forward_t(&head.forward(stem)?, (m, h, w), train)
            }
            _ => Ok(stem.clone()),
        }
    }

    /// The blocks' input for `images`: [`Self::stem_t`], then [`Self::blocks_input_t`].
    pub fn trunk_input_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        self.blocks_input_t(&self.stem_t(images, train)?, train)
    }

    /// For N questions about M <= N distinct `images`: the answer logits (N, answers), the
    /// stem's output for those images (M, C, h, w) and the last block's output (N, C, h, w).
    /// Question i reads image `image_rows[i]` (u32, (N,)). The stem runs once per distinct
    /// image, so several questions about one image share its cost, forward and backward.
    pub fn forward_shared_t(
        &self,
        images: &Tensor,
        image_rows: &Tensor,
        questions: &Tensor,
        lengths: &[usize],
        train: bool,
    ) -> Result<SharedForward> {
        self.forward_shared_with(images, image_rows, questions, lengths, train, false)
    }

    /// [`Self::forward_shared_t`] in training with the stem frozen: it runs in evaluation
    /// mode and its output is cut from the graph, so no gradient reaches it and the
    /// backward pass skips it; everything after the stem trains as usual.
    pub fn forward_shared_frozen_stem_t(
        &self,
        images: &Tensor,
        image_rows: &Tensor,
        questions: &Tensor,
        lengths: &[usize],
    ) -> Result<SharedForward> {
        self.forward_shared_with(images, image_rows, questions, lengths, true, true)
    }

    fn forward_shared_with(
        &self,
        images: &Tensor,
        image_rows: &Tensor,
        questions: &Tensor,
        lengths: &[usize],
        train: bool,
        frozen_stem: bool,
    ) -> Result<SharedForward> {
        let params = self.film_params(questions, lengths)?;
        let stem = if frozen_stem {
            self.stem_t(images, false)?.detach()
        } else {
            self.stem_t(images, train)?
        };
        let input = self.blocks_input_t(&stem, train)?;
        let per_question = if input.dim(0)? == image_rows.dim(0)? && is_identity(image_rows)? {
            input
        } else {
            input.index_select(image_rows, 0)?
        };
        let blocks = self.network.blocks_t(&per_question, &params, train)?;
        let hidden = self.network.classifier_hidden_t(&blocks, train)?;
        Ok(SharedForward {
            logits: self.network.classifier_output(&hidden)?,
            stem,
            blocks,
            hidden,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn tiny(perception_head: bool, scene_bottleneck: bool) -> ModelConfig {
        let mut config = crate::presets::by_name("tiny").unwrap().model;
        config.question.vocab_size = 10;
        config.vision.num_answers = 5;
        config.perception_head = perception_head;
        config.scene_bottleneck = scene_bottleneck;
        config
    }

    /// The `tiny` model with the perception head and the scene bottleneck, its variables,
    /// and two random images of its input size.
    fn tiny_with_images() -> (candle_nn::VarMap, FilmModel, Tensor) {
        let dev = Device::Cpu;
        let config = tiny(true, true);
        let varmap = candle_nn::VarMap::new();
        let model = FilmModel::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        let side = config.image_size;
        let images = Tensor::randn(0f32, 1.0, (2, 3, side, side), &dev).unwrap();
        (varmap, model, images)
    }

    #[test]
    fn the_scene_bottleneck_feeds_the_blocks_from_the_perception_head() {
        let dev = Device::Cpu;
        let (varmap, model, images) = tiny_with_images();
        let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        assert!(
            names.iter().any(|n| n.starts_with("bottleneck.embed.conv.")),
            "{names:?}"
        );

        let stem = model.stem_t(&images, true).unwrap();
        let input = model.blocks_input_t(&stem, true).unwrap();
        // The blocks' shape is kept, and what they read is not the stem's output.
        assert_eq!(input.dims(), stem.dims());
        let differs = (&input - &stem).unwrap().abs().unwrap().sum_all().unwrap();
        assert!(differs.to_scalar::<f32>().unwrap() > 0.0);

        // The answers' loss reaches the perception head through the bottleneck.
        let questions = Tensor::new(&[[1u32, 2, 3], [4, 5, 6]], &dev).unwrap();
        let rows = Tensor::new(&[0u32, 1], &dev).unwrap();
        let logits = model
            .forward_shared_t(&images, &rows, &questions, &[3, 3], true)
            .unwrap()
            .logits;
        let grads = logits.sum_all().unwrap().backward().unwrap();
        let head_weight = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .find(|(n, _)| n.starts_with("perception.") && n.ends_with("weight"))
            .map(|(_, v)| v.as_tensor().clone())
            .unwrap();
        assert!(
            grads.get(&head_weight).is_some(),
            "no gradient for the perception head"
        );
    }

    #[test]
    fn a_frozen_stem_is_neither_trained_nor_updates_its_statistics() {
        let dev = Device::Cpu;
        let (varmap, model, images) = tiny_with_images();
        let rows = Tensor::new(&[0u32, 1, 1], &dev).unwrap();
        let questions = Tensor::new(&[[1u32, 2, 3], [4, 5, 6], [7, 8, 9]], &dev).unwrap();
        let stem_vars = || -> Vec<(String, Vec<f32>)> {
            let data = varmap.data().lock().unwrap();
            let mut vars: Vec<_> = data
                .iter()
                .filter(|(n, _)| n.starts_with("network.stem."))
                .map(|(n, v)| (n.clone(), v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
                .collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            vars
        };
        let before = stem_vars();
        assert!(
            before.iter().any(|(n, _)| n.ends_with("running_mean")),
            "{before:?}"
        );

        let frozen = model
            .forward_shared_frozen_stem_t(&images, &rows, &questions, &[3, 3, 3])
            .unwrap();
        // The stem's output is the evaluation-mode one, cut from the graph.
        let evaluated = model.stem_t(&images, false).unwrap();
        let gap = (&frozen.stem - &evaluated)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(gap.to_scalar::<f32>().unwrap(), 0.0);
        let grads = frozen.logits.sum_all().unwrap().backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            let has_gradient = grads.get(var.as_tensor()).is_some();
            if name.starts_with("network.stem.") {
                assert!(!has_gradient, "the frozen stem's {name} has a gradient");
            } else if name.starts_with("network.classifier.") && name.ends_with("weight") {
                assert!(has_gradient, "{name} has no gradient");
            }
        }
        drop(data);
        assert_eq!(
            stem_vars(),
            before,
            "the frozen stem changed its running statistics"
        );

        // The same step unfrozen trains the stem and moves its statistics: the checks
        // above are not vacuous.
        let trained = model
            .forward_shared_t(&images, &rows, &questions, &[3, 3, 3], true)
            .unwrap();
        let grads = trained.logits.sum_all().unwrap().backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let stem_weight = data
            .get("network.stem.0.conv.weight")
            .unwrap()
            .as_tensor()
            .clone();
        drop(data);
        assert!(grads.get(&stem_weight).is_some());
        assert_ne!(stem_vars(), before);
    }

    #[test]
    fn the_scene_bottleneck_without_the_perception_head_is_an_error() {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let err = FilmModel::new(&tiny(false, true), vb).err().unwrap().to_string();
        assert!(err.contains("perception head"), "{err}");
    }

    #[test]
    fn in_evaluation_a_shared_stem_answers_as_one_stem_per_question() {
        // Evaluation runs the stem once per distinct image; in evaluation mode that must
        // give each question what a stem pass of its own gives it.
        let dev = Device::Cpu;
        let (_, model, images) = tiny_with_images();
        let rows = Tensor::new(&[1u32, 0, 1, 1], &dev).unwrap();
        let questions = Tensor::new(&[[1u32, 2, 3], [4, 5, 6], [7, 8, 9], [2, 2, 0]], &dev).unwrap();
        let lengths = [3, 3, 3, 2];
        let gap = |train: bool| {
            let shared = model
                .forward_shared_t(&images, &rows, &questions, &lengths, train)
                .unwrap()
                .logits;
            let per_question = model
                .forward_t(
                    &images.index_select(&rows, 0).unwrap(),
                    &questions,
                    &lengths,
                    train,
                )
                .unwrap();
            (&shared - &per_question)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let largest_gap = gap(false);
        assert!(
            largest_gap < 1e-5,
            "shared and per-question logits differ by {largest_gap}"
        );
        // In training mode the batch statistics differ, so the test above is not vacuous.
        let training_gap = gap(true);
        assert!(
            training_gap > 1e-4,
            "batch statistics should differ: {training_gap}"
        );
    }
}
