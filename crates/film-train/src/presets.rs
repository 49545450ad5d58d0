//! Named configurations a user can list, print and override: `tiny` (tests), `default`
//! (what `cargo run` and `film-train train` use), `mini` (the PyTorch reference's `small`
//! model, which the benchmarks time), `paper-raw` and `paper-features` (the paper's CLEVR
//! models).

use film_question::QuestionEncoderConfig;
use film_vision::{BlockOptions, Pool, Stem, VisionConfig};
use serde::{Deserialize, Serialize};

/// Everything that shapes the model, saved as `config.json` in a run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Side of the square input image in pixels (ignored by the features stem).
    pub image_size: usize,
    pub question: QuestionEncoderConfig,
    pub vision: VisionConfig,
    /// A baseline that never sees the image: the network gets a blank (all-zero) image, so
    /// its answer is a function of the question alone (`--question-only`).
    #[serde(default)]
    pub question_only: bool,
    /// A head on the stem's output that predicts each cell's object and its attributes
    /// during training (`--perception-weight`; see `perception.rs`).
    #[serde(default)]
    pub perception_head: bool,
    /// The blocks read the perception head's per-cell object and attribute probabilities
    /// instead of the stem's features (`--scene-bottleneck`; see `scene_bottleneck.rs`).
    #[serde(default)]
    pub scene_bottleneck: bool,
    /// A head on the last block's output that predicts, for each cell, whether an object
    /// the answer is about is centred there, during training (`--attention-weight`; see
    /// `answer_attention.rs`).
    #[serde(default)]
    pub attention_head: bool,
    /// Two heads on the classifier's hidden layer that predict the answers a question's
    /// program computes on the way to its own, during training (`--intermediate-weight`;
    /// see `intermediate_answers.rs`).
    #[serde(default)]
    pub intermediate_heads: bool,
    /// Eight heads on the classifier's hidden layer that predict the four attributes of
    /// each of the two objects a question's program picks out, during training
    /// (`--referent-weight`; see `intermediate_answers.rs`).
    #[serde(default)]
    pub referent_heads: bool,
    /// Two heads on the classifier's hidden layer that predict how many objects each of
    /// the (at most two) relations of a question's program finds, during training
    /// (`--relation-set-weight`; see `intermediate_answers.rs`).
    #[serde(default)]
    pub relation_set_heads: bool,
}

/// How a preset trains by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingConfig {
    pub batch_size: usize,
    pub learning_rate: f64,
    /// L2 penalty added to the gradient, as PyTorch's Adam does it.
    pub weight_decay: f64,
    /// Minutes of training when neither epochs nor minutes are given.
    pub minutes: f64,
    /// Evaluate on the validation split (and checkpoint) every this many steps.
    pub eval_every: usize,
    /// Ask this many new questions about each training scene every epoch instead of
    /// training on the questions file (`--fresh-questions`; needs the scene file).
    #[serde(default)]
    pub fresh_questions: Option<usize>,
    /// The first this many epochs of fresh questions are lookups alone ("What color is
    /// the large metal cube?"), so that the blocks learn to find an object by its
    /// attributes before everything else is asked (`--lookups-first`; 0 or absent: every
    /// question from the first epoch).
    #[serde(default)]
    pub lookups_first: u64,
    /// The next this many epochs, after any lookups first, ask lookups directly or across
    /// one spatial relation ("What color is the cube left of the large sphere?"), so that
    /// a relation is learnt before the questions that build on it (`--relations-first`;
    /// 0 or absent: none).
    #[serde(default)]
    pub relations_first: u64,
    /// The next this many epochs, after any lookups and relations first, ask only the
    /// questions without a relation: every object named by its attributes alone, as in
    /// lookups, counts, exists and the comparisons of two of them (`--zero-hop-first`; 0
    /// or absent: none).
    #[serde(default)]
    pub zero_hop_first: u64,
    /// Keep this many questions about one image together in a batch, so that the stem
    /// runs once for them (`--questions-per-image`; 1: the paper's plain shuffle).
    #[serde(default = "one")]
    pub questions_per_image: usize,
    /// Draw the first this many steps' batches from the easiest questions, a pool growing
    /// to all of them (`--curriculum-steps`; needs programs and the scene file).
    #[serde(default)]
    pub curriculum_steps: Option<u64>,
    /// Weight of the perception head's loss, added to the answer's (`--perception-weight`;
    /// needs the scene file).
    #[serde(default)]
    pub perception_weight: f64,
    /// Weight of the answer-attention head's loss, added to the answer's
    /// (`--attention-weight`; needs programs and the scene file).
    #[serde(default)]
    pub attention_weight: f64,
    /// Weight of the intermediate-answer heads' loss, added to the answer's
    /// (`--intermediate-weight`; needs programs and the scene file).
    #[serde(default)]
    pub intermediate_weight: f64,
    /// Weight of the referent heads' loss, added to the answer's (`--referent-weight`;
    /// needs programs and the scene file).
    #[serde(default)]
    pub referent_weight: f64,
    /// Weight of the relation-set heads' loss, added to the answer's
    /// (`--relation-set-weight`; needs programs and the scene file).
    #[serde(default)]
    pub relation_set_weight: f64,
    /// Raise the learning rate linearly from 0 to `learning_rate` over this many steps
    /// (`--warmup-steps`; 0: the full rate from the first step).
    #[serde(default)]
    pub warmup_steps: u64,
    /// Once this share of the run's budget (its epochs or minutes) is spent, lower the
    /// learning rate linearly to zero at the end of the budget (`--lr-decay-from`; absent:
    /// the same rate to the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_decay_from: Option<f64>,
    /// Evaluate, and keep as the best model, an exponential moving average of the weights
    /// with this decay per step instead of the weights as trained (`--weight-average`).
    #[serde(default)]
    pub weight_average: Option<f64>,
    /// With a weight average, also score the weights as trained at each evaluation and
    /// record them as `trained_weights` (`--score-trained-weights`): the paired curve of an
    /// ablation, at the price of a second evaluation.
    #[serde(default)]
    pub score_trained_weights: bool,
    /// Mirror about half of the training images left to right each epoch, with `left` and
    /// `right` swapped in their questions (`--mirror`; needs pixels).
    #[serde(default)]
    pub mirror: bool,
    /// From this epoch on the stem is frozen: it runs in evaluation mode (BatchNorm's
    /// running statistics) and is no longer trained, so the step skips its backward pass
    /// (`--freeze-stem-after`; absent: trained throughout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_stem_after: Option<u64>,
}

impl ModelConfig {
    /// Sets the number of FiLMed blocks, every one conditioned, and the generator's
    /// (γ, β) pairs to match.
    pub fn set_blocks(&mut self, blocks: usize) {
        self.vision.num_blocks = blocks;
        self.vision.conditioned = vec![true; blocks];
        self.question.num_blocks = blocks;
    }
}

fn one() -> usize {
    1
}

/// A named pair of model and training configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub name: String,
    pub description: String,
    pub model: ModelConfig,
    pub training: TrainingConfig,
}

/// The paper's training hyper-parameters: Adam, lr 3e-4, weight decay 1e-5, batch 64.
fn paper_training(minutes: f64, eval_every: usize) -> TrainingConfig {
    TrainingConfig {
        batch_size: 64,
        learning_rate: 3e-4,
        weight_decay: 1e-5,
        minutes,
        eval_every,
        fresh_questions: None,
        lookups_first: 0,
        zero_hop_first: 0,
        relations_first: 0,
        questions_per_image: 1,
        curriculum_steps: None,
        perception_weight: 0.0,
        attention_weight: 0.0,
        intermediate_weight: 0.0,
        referent_weight: 0.0,
        relation_set_weight: 0.0,
        warmup_steps: 0,
        lr_decay_from: None,
        weight_average: None,
        score_trained_weights: false,
        freeze_stem_after: None,
        mirror: false,
    }
}

fn pixels(
    image_size: usize,
    downsamplings: usize,
    channels: usize,
    embedding: usize,
    hidden: usize,
    classifier: (usize, usize),
) -> ModelConfig {
    ModelConfig {
        image_size,
        // The vocabulary and answer sizes are set from the data when a run starts.
        question: QuestionEncoderConfig {
            vocab_size: 0,
            embedding_dim: embedding,
            hidden_dim: hidden,
            num_blocks: 4,
            channels,
            word_attention: None,
        },
        vision: VisionConfig {
            stem: Stem::Pixels { downsamplings },
            channels,
            stem_width: None,
            stem_first_stride: None,
            num_blocks: 4,
            conditioned: vec![true; 4],
            block: BlockOptions::default(),
            classifier_channels: classifier.0,
            classifier_hidden: classifier.1,
            pool: Pool::Max,
            num_answers: 0,
        },
        question_only: false,
        perception_head: false,
        attention_head: false,
        intermediate_heads: false,
        referent_heads: false,
        relation_set_heads: false,
        scene_bottleneck: false,
    }
}

/// The PyTorch reference's `small` model: 64×64 pixels, 4 blocks of 64 channels, GRU 256.
fn mini_model() -> ModelConfig {
    pixels(64, 3, 64, 64, 256, (256, 256))
}

/// All presets, in the order `film-train presets` lists them.
pub fn all() -> Vec<Preset> {
    let mut tiny_model = pixels(32, 2, 16, 16, 32, (32, 32));
    tiny_model.set_blocks(2);
    vec![
        Preset {
            name: "tiny".into(),
            description: "32x32 pixels, 2 blocks of 16 channels: for tests, trains in seconds".into(),
            model: tiny_model,
            training: TrainingConfig {
                batch_size: 16,
                learning_rate: 3e-3,
                weight_decay: 0.0,
                ..paper_training(1.0, 50)
            },
        },
        Preset {
            name: "mini".into(),
            description: "64x64 pixels, 4 blocks of 64 channels, GRU 256: the PyTorch \
                          reference's `small` configuration, timed by the benchmarks"
                .into(),
            model: mini_model(),
            // The paper's Adam with lr 1e-3 instead of 3e-4: within the 25-minute budget
            // (about 8 epochs of the embedded dataset) it reaches in 3 epochs what 3e-4 reaches
            // in 8 (docs/results.md, "Learning rate of the default run").
            training: TrainingConfig {
                learning_rate: 1e-3,
                ..paper_training(25.0, 500)
            },
        },
        default_preset(),
        Preset {
            name: "paper-raw".into(),
            description: "the paper's raw-pixel model: 224x224, 4 stride-2 convolutions to 14x14, \
                          4 blocks of 128 channels, GRU 4096"
                .into(),
            model: pixels(224, 4, 128, 200, 4096, (512, 1024)),
            training: paper_training(600.0, 2000),
        },
        Preset {
            name: "paper-features".into(),
            description: "the paper's model on 1024x14x14 pre-extracted image features, \
                          4 blocks of 128 channels, GRU 4096"
                .into(),
            model: ModelConfig {
                image_size: 224,
                question: QuestionEncoderConfig::paper(0),
                vision: VisionConfig::paper_features(0),
                question_only: false,
                perception_head: false,
                attention_head: false,
                intermediate_heads: false,
                referent_heads: false,
                relation_set_heads: false,
                scene_bottleneck: false,
            },
            training: paper_training(600.0, 2000),
        },
    ]
}

/// `mini` with the departures from the paper that make it learn more per question on a
/// 25-minute CPU budget, each a switch any preset can use (docs/results.md, "Learning more
/// per question", measures each one).
fn default_preset() -> Preset {
    let mut model = mini_model();
    // Two blocks reach the lookup questions sooner than four on the same budget.
    model.set_blocks(2);
    // A GRU of 128: with the stem shared by 8 questions the encoder is the largest part of
    // the step, and at 128 it learns as much per question in about a sixth more steps
    // (docs/results.md, "A question encoder half as wide").
    model.question.hidden_dim = 128;
    model.perception_head = true;
    model.scene_bottleneck = true;
    model.intermediate_heads = true;
    Preset {
        name: "default".into(),
        description: "mini's 64x64 trunk with 2 blocks reading a scene-supervised perception \
                      head, GRU 128, fresh questions with lookups first, 8 questions per image, easy \
                      questions first, mirrored images, intermediate answers: the default run"
            .into(),
        model,
        training: TrainingConfig {
            // Twice mini's: on this model it leaves the plateau inside the budget, where
            // 1e-3 does not (docs/results.md, "The default at its budget").
            learning_rate: 2e-3,
            fresh_questions: Some(10),
            // Lookups alone for the first epochs: the blocks learn to find an object
            // before the other questions, which build on it, are asked
            // (docs/results.md, "Lookups first").
            lookups_first: 6,
            // The stem runs once per 8 questions: the same learning per question as 4
            // and more questions per minute (docs/results.md, "Eight questions per image").
            questions_per_image: 8,
            curriculum_steps: Some(3000),
            perception_weight: 1.0,
            // The answers a comparison or a count reads, predicted beside the answer: the
            // hidden layer learns to hold both sides of a comparison. A lower weight than
            // the answer's, so that the heads' first random guesses do not knock back
            // what the lookups taught (docs/results.md, "The answers on the way").
            intermediate_weight: 0.3,
            warmup_steps: 0,
            // Scored and kept as best in place of the weights as trained: a point or two
            // more at equal questions, training unchanged (docs/results.md, "A weight
            // average at full length").
            weight_average: Some(0.995),
            // Twice the scenes at no cost: after the breakout it lifts the second plateau
            // as more rendered scenes do (docs/results.md, "Mirrored images").
            mirror: true,
            ..paper_training(25.0, 500)
        },
    }
}

/// The preset called `name`, or an error listing the known names.
pub fn by_name(name: &str) -> anyhow::Result<Preset> {
    let presets = all();
    let names: Vec<_> = presets.iter().map(|p| p.name.clone()).collect();
    presets
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| anyhow::anyhow!("unknown preset {name:?}; the presets are {}", names.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_consistent() {
        for preset in all() {
            let mut vision = preset.model.vision.clone();
            vision.num_answers = 28;
            vision
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", preset.name));
            assert_eq!(
                preset.model.question.num_blocks, vision.num_blocks,
                "{}",
                preset.name
            );
            assert_eq!(preset.model.question.channels, vision.channels, "{}", preset.name);
            // The head trains exactly when its loss has a weight, and the bottleneck has
            // nothing to read without it.
            let (model, training) = (&preset.model, &preset.training);
            for (head, weight) in [
                (model.perception_head, training.perception_weight),
                (model.attention_head, training.attention_weight),
                (model.intermediate_heads, training.intermediate_weight),
                (model.referent_heads, training.referent_weight),
                (model.relation_set_heads, training.relation_set_weight),
            ] {
                assert_eq!(head, weight > 0.0, "{}", preset.name);
            }
            assert!(
                preset.model.perception_head || !preset.model.scene_bottleneck,
                "{}",
                preset.name
            );
            // Lookups and zero-hop questions first are fresh questions of some kinds.
            let stages = preset.training.lookups_first
                + preset.training.relations_first
                + preset.training.zero_hop_first;
            assert!(
                stages == 0 || preset.training.fresh_questions.is_some(),
                "{}",
                preset.name
            );
        }
    }

    #[test]
    fn unknown_preset_lists_the_names() {
        let err = by_name("huge").unwrap_err().to_string();
        assert!(
            err.contains("tiny, mini, default, paper-raw, paper-features"),
            "{err}"
        );
    }
}
