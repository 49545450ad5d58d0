//! `film-train train`'s arguments, and how they turn a preset into a training request.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use film_layer::GammaMode;
use film_question::WordAttention;
use film_vision::{FilmPosition, Pool, ResidualSource, Stem};

use crate::presets::{self, ModelConfig, Preset};
use crate::train::TrainRequest;

#[derive(Args)]
pub(super) struct TrainArgs {
    /// A CLEVR-layout folder (questions/, scenes/, images/).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "default")]
    preset: String,
    /// The run directory; an unfinished run there is resumed.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Resume the run in this directory (same as --out).
    #[arg(long, conflicts_with = "out")]
    resume: Option<PathBuf>,
    #[arg(long, conflicts_with = "minutes")]
    epochs: Option<usize>,
    #[arg(long)]
    minutes: Option<f64>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// Ask N new questions about each training scene every epoch instead of reading the
    /// questions file's (needs scenes/CLEVR_train_scenes.json); 0 trains on the file.
    #[arg(long, value_name = "N")]
    fresh_questions: Option<usize>,
    /// The first EPOCHS epochs of fresh questions ask lookups alone ("What color is the
    /// large metal cube?"), then every kind; 0 turns it off. Needs --fresh-questions.
    #[arg(long, value_name = "EPOCHS")]
    lookups_first: Option<u64>,
    /// The next EPOCHS epochs, after any lookups first, ask lookups directly or across one
    /// spatial relation ("What color is the cube left of the large sphere?"), before any
    /// zero-hop stage; 0 turns it off. Needs --fresh-questions.
    #[arg(long, value_name = "EPOCHS")]
    relations_first: Option<u64>,
    /// The next EPOCHS epochs, after any lookups and relations first, ask only the
    /// questions without a relation (lookups, counts, exists and comparisons of objects
    /// named by their attributes); 0 turns it off. Needs --fresh-questions.
    #[arg(long, value_name = "EPOCHS")]
    zero_hop_first: Option<u64>,
    /// Keep K questions about one image together in a batch, so the image stem runs once
    /// for them; 1 is the paper's plain shuffle.
    #[arg(long, value_name = "K")]
    questions_per_image: Option<usize>,
    /// Easy questions first: the first S steps draw their batches from the easiest
    /// questions (fewest objects, shortest programs), a pool growing from a fifth of them
    /// to all; 0 turns it off. Needs programs and scenes/CLEVR_train_scenes.json.
    #[arg(long, value_name = "S")]
    curriculum_steps: Option<u64>,
    /// Supervise the stem from the scene graphs: a head on its output predicts each
    /// cell's object and attributes, its loss weighted by W and added to the answer's
    /// (training only); 0 turns it off. Needs scenes/CLEVR_train_scenes.json.
    #[arg(long, value_name = "W")]
    perception_weight: Option<f64>,
    /// Supervise where the answer lies: a head on the last block's output predicts, for each
    /// cell, whether an object the answer is about (found by running the question's program
    /// on its scene) is centred there, its loss weighted by W and added to the answer's
    /// (training only); 0 turns it off. Needs programs and scenes/CLEVR_train_scenes.json.
    #[arg(long, value_name = "W")]
    attention_weight: Option<f64>,
    /// Supervise the answers on the way to the answer: two heads on the classifier's
    /// hidden layer predict what the question's program computes before its last step (the
    /// two attributes a comparison compares, the two counts a number comparison compares,
    /// the count behind an exist, the attribute a "same as" copies), their loss weighted by
    /// W and added to the answer's (training only); 0 turns it off. Needs programs and
    /// scenes/CLEVR_train_scenes.json.
    #[arg(long, value_name = "W")]
    intermediate_weight: Option<f64>,
    /// Supervise the objects a question refers to: eight heads on the classifier's hidden
    /// layer predict the colour, shape, material and size of the (at most two) objects the
    /// question's program picks out (the object a lookup reads, the two a comparison
    /// compares, the object a relation starts from), their loss weighted by W and added to
    /// the answer's (training only); 0 turns it off. Needs programs and
    /// scenes/CLEVR_train_scenes.json.
    #[arg(long, value_name = "W")]
    referent_weight: Option<f64>,
    /// Supervise what each relation finds: two heads on the classifier's hidden layer
    /// predict how many objects each of the (at most two) `relate` or "same as" steps of
    /// the question's program finds, their loss weighted by W and added to the answer's
    /// (training only); 0 turns it off. Needs programs and scenes/CLEVR_train_scenes.json.
    #[arg(long, value_name = "W")]
    relation_set_weight: Option<f64>,
    /// The blocks read the perception head's per-cell object and attribute probabilities
    /// instead of the stem's features (needs --perception-weight; see docs/training.md).
    #[arg(long)]
    scene_bottleneck: bool,
    /// Raise the learning rate linearly from 0 over the first N steps; 0 turns it off.
    #[arg(long, value_name = "N")]
    warmup_steps: Option<u64>,
    /// Once this share of the budget (epochs or minutes) is spent, lower the learning rate
    /// linearly to zero at its end: 0.75 decays over the last quarter; 1 turns it off.
    #[arg(long, value_name = "FRACTION")]
    lr_decay_from: Option<f64>,
    /// Evaluate, and keep as the best model, an exponential moving average of the weights
    /// with this decay per step (e.g. 0.999) instead of the weights as trained; 0 turns it
    /// off. Training itself is unchanged.
    #[arg(long, value_name = "DECAY")]
    weight_average: Option<f64>,
    /// With --weight-average (or a preset's), also score the weights as trained at each
    /// evaluation, recorded as `trained_weights` in metrics.jsonl: a second evaluation each
    /// time.
    #[arg(long)]
    score_trained_weights: bool,
    /// Mirror about half of the training images left to right each epoch and swap `left`
    /// and `right` in their questions (true or false; needs a pixel stem).
    #[arg(long, value_name = "BOOL")]
    mirror: Option<bool>,
    /// From epoch EPOCHS on (counting from 0), the stem is frozen: it runs in evaluation
    /// mode and is no longer trained, so each step skips its backward pass.
    #[arg(long, value_name = "EPOCHS")]
    freeze_stem_after: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "cpu")]
    pub(super) device: String,
    /// On CUDA, run f32 matrix products and convolutions on TF32 tensor cores (see
    /// docs/gpu.md).
    #[arg(long)]
    pub(super) tf32: bool,
    /// Validation questions scored at each evaluation (default: all).
    #[arg(long)]
    val_limit: Option<usize>,
    /// For a features preset (`paper-features`): the folder holding `train_features.npy` and
    /// `val_features.npy`, one (images, C, H, W) array per split (default: DATA/features).
    #[arg(long)]
    features: Option<PathBuf>,
    /// Where FiLM sits in each block.
    #[arg(long, value_parser = parse_position)]
    film_position: Option<FilmPosition>,
    /// Which blocks are conditioned, e.g. 1,0,0,0.
    #[arg(long)]
    condition_blocks: Option<String>,
    /// γ parametrisation: plain, one-plus-delta, sigmoid, tanh, exp, fixed.
    #[arg(long)]
    gamma: Option<GammaMode>,
    /// Fix β to 0.
    #[arg(long)]
    no_beta: bool,
    /// Remove the residual connection of each block.
    #[arg(long)]
    no_residual: bool,
    /// Each block also reads each channel's mean, maximum and coordinate-weighted means
    /// over its whole input, added at every cell (true or false).
    #[arg(long, value_name = "BOOL")]
    global_context: Option<bool>,
    /// What each block's residual connection adds: projection (the paper: the block's
    /// 1x1 projection of its input) or input (the block's input unchanged).
    #[arg(long, value_parser = parse_residual, conflicts_with = "no_residual")]
    residual: Option<ResidualSource>,
    /// Classifier pooling: max (the paper's), mean, max-mean (both, side by side) or
    /// max-count (the maximum and the mean of the tanh: a count of the positions where a
    /// channel fires).
    #[arg(long, value_parser = parse_pool)]
    pool: Option<Pool>,
    /// Number of FiLMed blocks.
    #[arg(long)]
    blocks: Option<usize>,
    /// Channels of the FiLMed blocks, and so of the stem's output and of each block's
    /// (γ, β) (the preset's by default; the stem's inner convolutions follow unless
    /// --stem-width is given).
    #[arg(long, value_name = "C")]
    channels: Option<usize>,
    /// Width of the question encoder's GRU state (the preset's by default).
    #[arg(long, value_name = "H")]
    question_hidden: Option<usize>,
    /// Channels of the classifier's 1x1 convolution, which the pool reads (the preset's by
    /// default).
    #[arg(long, value_name = "C")]
    classifier_channels: Option<usize>,
    /// Width of the classifier's hidden layer, which the answer and the auxiliary heads
    /// read (the preset's by default).
    #[arg(long, value_name = "H")]
    classifier_hidden: Option<usize>,
    /// Each block reads the question through its own attention over the words: add (its
    /// (γ, β) are the paper's head's plus those of the words it attends to), replace (the
    /// attended words' alone) or off (the paper's head alone).
    #[arg(long, value_parser = parse_word_attention, value_name = "MODE")]
    word_attention: Option<WordAttentionArg>,
    /// A question-only baseline: the network is given a blank image.
    #[arg(long)]
    question_only: bool,
    /// Side of the square input image in pixels (a pixel-stem preset only).
    #[arg(long)]
    image_size: Option<usize>,
    /// Stride-2 convolutions of the pixel stem (a pixel-stem preset only); the blocks see
    /// maps of image_size / 2^downsamplings pixels.
    #[arg(long)]
    downsamplings: Option<usize>,
    /// Channels of the pixel stem's convolutions before its last (a pixel-stem preset
    /// only; default: the blocks' channels), so that a larger input costs less.
    #[arg(long, value_name = "C")]
    stem_width: Option<usize>,
    /// Stride of the pixel stem's first convolution (even; kernel twice the stride;
    /// default 2): 4 reads a 128x128 input in 8x8 patches at about the cost of a 64x64 stem.
    #[arg(long, value_name = "S")]
    stem_first_stride: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_position(s: &str) -> Result<FilmPosition, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        format!("unknown FiLM position {s:?}: expected after-norm, before-norm, after-relu, after-residual or before-input-conv")
    })
}

fn parse_residual(s: &str) -> Result<ResidualSource, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown residual {s:?}: expected projection or input"))
}

/// `--word-attention`'s value: a mode, or off.
#[derive(Clone, Copy)]
struct WordAttentionArg(Option<WordAttention>);

fn parse_word_attention(s: &str) -> Result<WordAttentionArg, String> {
    if s == "off" {
        return Ok(WordAttentionArg(None));
    }
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map(|mode| WordAttentionArg(Some(mode)))
        .map_err(|_| format!("unknown word attention {s:?}: expected add, replace or off"))
}

fn parse_pool(s: &str) -> Result<Pool, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown pooling {s:?}: expected max, mean, max-mean or max-count"))
}

pub(super) fn train_request(args: &TrainArgs) -> Result<TrainRequest> {
    let mut preset: Preset = presets::by_name(&args.preset)?;
    let (model, training) = (&mut preset.model, &mut preset.training);
    if let Some(batch) = args.batch {
        training.batch_size = batch;
    }
    if let Some(lr) = args.lr {
        training.learning_rate = lr;
    }
    if let Some(per_image) = args.fresh_questions {
        training.fresh_questions = (per_image > 0).then_some(per_image);
    }
    // A preset's first stages are fresh questions: training on the file turns them off too.
    let file = training.fresh_questions.is_none();
    for (flag, given, epochs) in [
        ("--lookups-first", args.lookups_first, &mut training.lookups_first),
        (
            "--relations-first",
            args.relations_first,
            &mut training.relations_first,
        ),
        (
            "--zero-hop-first",
            args.zero_hop_first,
            &mut training.zero_hop_first,
        ),
    ] {
        match given {
            Some(n) if n > 0 && file => {
                bail!("{flag} asks the first epochs' questions fresh, so it needs --fresh-questions N with N > 0")
            }
            Some(n) => *epochs = n,
            None if file => *epochs = 0,
            None => {}
        }
    }
    if let Some(k) = args.questions_per_image {
        if k == 0 {
            bail!("--questions-per-image: at least 1");
        }
        training.questions_per_image = k;
    }
    // Each auxiliary head exists exactly when its loss has a weight.
    let heads = [
        (
            "--perception-weight",
            args.perception_weight,
            &mut training.perception_weight,
            &mut model.perception_head,
        ),
        (
            "--attention-weight",
            args.attention_weight,
            &mut training.attention_weight,
            &mut model.attention_head,
        ),
        (
            "--intermediate-weight",
            args.intermediate_weight,
            &mut training.intermediate_weight,
            &mut model.intermediate_heads,
        ),
        (
            "--referent-weight",
            args.referent_weight,
            &mut training.referent_weight,
            &mut model.referent_heads,
        ),
        (
            "--relation-set-weight",
            args.relation_set_weight,
            &mut training.relation_set_weight,
            &mut model.relation_set_heads,
        ),
    ];
    for (flag, weight, training_weight, head) in heads {
        if let Some(weight) = weight {
            if !(weight >= 0.0 && weight.is_finite()) {
                bail!("{flag} {weight}: expected a finite weight of 0 or more");
            }
            *training_weight = weight;
            *head = weight > 0.0;
        }
    }
    model.scene_bottleneck |= args.scene_bottleneck;
    if model.scene_bottleneck && !model.perception_head {
        bail!(
            "the scene bottleneck (--scene-bottleneck, or the `{}` preset's) makes the blocks \
             read the perception head, so it needs --perception-weight W with W > 0; \
             --preset mini has neither",
            args.preset
        );
    }
    if let Some(steps) = args.curriculum_steps {
        training.curriculum_steps = (steps > 0).then_some(steps);
    }
    if let Some(steps) = args.warmup_steps {
        training.warmup_steps = steps;
    }
    if let Some(from) = args.lr_decay_from {
        if !(0.0..=1.0).contains(&from) {
            bail!("--lr-decay-from {from}: expected a share of the budget in [0, 1], e.g. 0.75 (1 turns it off)");
        }
        training.lr_decay_from = (from < 1.0).then_some(from);
    }
    if let Some(decay) = args.weight_average {
        if !(0.0..1.0).contains(&decay) {
            bail!("--weight-average {decay}: expected a decay in [0, 1), e.g. 0.999 (0 turns it off)");
        }
        training.weight_average = (decay > 0.0).then_some(decay);
    }
    if args.score_trained_weights {
        if training.weight_average.is_none() {
            bail!("--score-trained-weights scores the trained weights beside a weight average; this run has none (--weight-average DECAY)");
        }
        training.score_trained_weights = true;
    }
    if let Some(mirror) = args.mirror {
        training.mirror = mirror;
    }
    if let Some(epochs) = args.freeze_stem_after {
        training.freeze_stem_after = Some(epochs);
    }
    let block = &mut model.vision.block;
    if let Some(position) = args.film_position {
        block.film_position = position;
    }
    if let Some(gamma) = args.gamma {
        block.gamma = gamma;
    }
    block.use_beta &= !args.no_beta;
    block.residual &= !args.no_residual;
    if let Some(source) = args.residual {
        block.residual_source = source;
    }
    if let Some(context) = args.global_context {
        block.global_context = context;
    }
    model.question_only |= args.question_only;
    override_pixel_stem(model, args.image_size, args.downsamplings, &args.preset)?;
    if let Some(width) = args.stem_width {
        if !matches!(model.vision.stem, Stem::Pixels { .. }) {
            bail!(
                "--stem-width needs a pixel stem; preset {:?} reads pre-extracted features",
                args.preset
            );
        }
        if width == 0 {
            bail!("--stem-width 0: the stem needs at least one channel");
        }
        model.vision.stem_width = Some(width);
    }
    if let Some(stride) = args.stem_first_stride {
        override_first_stride(model, stride, &args.preset)?;
    }
    if let Some(pool) = args.pool {
        model.vision.pool = pool;
    }
    if let Some(blocks) = args.blocks {
        model.set_blocks(blocks);
    }
    if let Some(WordAttentionArg(mode)) = args.word_attention {
        model.question.word_attention = mode;
    }
    if let Some(channels) = args.channels {
        if !(1..=4096).contains(&channels) {
            bail!("--channels {channels}: expected between 1 and 4096 channels per block");
        }
        model.vision.channels = channels;
        model.question.channels = channels;
    }
    if let Some(hidden) = args.question_hidden {
        if !(1..=16_384).contains(&hidden) {
            bail!("--question-hidden {hidden}: expected a GRU width between 1 and 16384");
        }
        model.question.hidden_dim = hidden;
    }
    for (flag, value, width) in [
        (
            "--classifier-channels",
            args.classifier_channels,
            &mut model.vision.classifier_channels,
        ),
        (
            "--classifier-hidden",
            args.classifier_hidden,
            &mut model.vision.classifier_hidden,
        ),
    ] {
        if let Some(value) = value {
            if !(1..=16_384).contains(&value) {
                bail!("{flag} {value}: expected a width between 1 and 16384");
            }
            *width = value;
        }
    }
    if let Some(list) = &args.condition_blocks {
        let flags: Vec<bool> = list
            .split(',')
            .map(|f| match f.trim() {
                "1" => Ok(true),
                "0" => Ok(false),
                other => bail!("--condition-blocks {list:?}: {other:?} is neither 1 nor 0"),
            })
            .collect::<Result<_>>()?;
        if flags.len() != model.vision.num_blocks {
            bail!(
                "--condition-blocks lists {} blocks but the model has {}",
                flags.len(),
                model.vision.num_blocks
            );
        }
        model.vision.conditioned = flags;
    }
    let out = args
        .out
        .clone()
        .or(args.resume.clone())
        .context("--out RUN_DIR (or --resume RUN_DIR) is required")?;
    Ok(TrainRequest {
        data: args.data.clone(),
        preset,
        out,
        epochs: args.epochs,
        minutes: args.minutes,
        seed: args.seed,
        val_limit: args.val_limit,
        cache_dir: None,
        features_dir: args.features.clone(),
        quiet: args.quiet,
    })
}

/// Applies `--image-size` and `--downsamplings`, which only a pixel stem has.
pub(super) fn override_pixel_stem(
    model: &mut ModelConfig,
    image_size: Option<usize>,
    downsamplings: Option<usize>,
    preset: &str,
) -> Result<()> {
    if image_size.is_none() && downsamplings.is_none() {
        return Ok(());
    }
    let Stem::Pixels {
        downsamplings: current,
    } = &mut model.vision.stem
    else {
        bail!("--image-size and --downsamplings need a pixel stem; preset {preset:?} reads pre-extracted features");
    };
    if let Some(d) = downsamplings {
        *current = d;
    }
    if let Some(size) = image_size {
        crate::limits::check_image_size_flag(size)?;
        model.image_size = size;
    }
    let map = u32::try_from(*current)
        .ok()
        .and_then(|d| model.image_size.checked_shr(d))
        .unwrap_or(0);
    if *current == 0 || map == 0 {
        bail!(
            "--image-size {} with {} downsamplings leaves no feature map (each halves the side; at least one is needed)",
            model.image_size,
            current
        );
    }
    Ok(())
}

/// Applies `--stem-first-stride`, checking that a feature map is left.
fn override_first_stride(model: &mut ModelConfig, stride: usize, preset: &str) -> Result<()> {
    let Stem::Pixels { downsamplings } = model.vision.stem else {
        bail!("--stem-first-stride needs a pixel stem; preset {preset:?} reads pre-extracted features");
    };
    if stride < 2 || !stride.is_multiple_of(2) {
        bail!("--stem-first-stride {stride}: expected an even stride of at least 2 (the kernel is twice the stride, the padding half of it)");
    }
    let later = downsamplings.saturating_sub(1);
    let map = u32::try_from(later)
        .ok()
        .and_then(|d| (model.image_size / stride).checked_shr(d))
        .unwrap_or(0);
    if map == 0 {
        bail!(
            "--image-size {} with a first stride of {stride} and {later} more stride-2 convolutions leaves no feature map",
            model.image_size
        );
    }
    model.vision.stem_first_stride = Some(stride);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn image_size_and_downsamplings_override_a_pixel_stem() {
        let mut model = presets::by_name("mini").unwrap().model;
        override_pixel_stem(&mut model, Some(128), Some(4), "mini").unwrap();
        assert_eq!(model.image_size, 128);
        assert_eq!(model.vision.stem, Stem::Pixels { downsamplings: 4 });
        override_pixel_stem(&mut model, Some(96), None, "mini").unwrap();
        assert_eq!(
            (model.image_size, model.vision.stem),
            (96, Stem::Pixels { downsamplings: 4 })
        );
    }

    #[test]
    fn stem_overrides_that_cannot_work_are_refused() {
        let mut features = presets::by_name("paper-features").unwrap().model;
        let err = override_pixel_stem(&mut features, Some(128), None, "paper-features").unwrap_err();
        assert!(err.to_string().contains("pre-extracted features"), "{err}");
        let mut mini = presets::by_name("mini").unwrap().model;
        let err = override_pixel_stem(&mut mini, Some(8), Some(4), "mini").unwrap_err();
        assert!(err.to_string().contains("leaves no feature map"), "{err}");
        let err = override_pixel_stem(&mut mini, None, Some(0), "mini").unwrap_err();
        assert!(err.to_string().contains("at least one"), "{err}");
        let err = override_pixel_stem(&mut mini, Some(100_000), None, "mini").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--image-size 100000: the side must be between 1 and 1024 pixels"
        );
    }

    #[test]
    fn stem_width_narrows_a_pixel_stem_only() {
        let narrow = train_request(&train_args(&["--stem-width", "32"]).unwrap()).unwrap();
        assert_eq!(narrow.preset.model.vision.stem_width, Some(32));
        let default = train_request(&train_args(&[]).unwrap()).unwrap();
        assert_eq!(default.preset.model.vision.stem_width, None);
        let err = train_request(&train_args(&["--stem-width", "0"]).unwrap()).unwrap_err();
        assert!(err.to_string().contains("at least one channel"), "{err}");
        let features = ["--preset", "paper-features", "--stem-width", "32"];
        let err = train_request(&train_args(&features).unwrap()).unwrap_err();
        assert!(err.to_string().contains("pre-extracted features"), "{err}");
    }

    #[test]
    fn classifier_widths_set_the_pooled_channels_and_the_hidden_layer() {
        let wide = train_request(
            &train_args(&["--classifier-channels", "512", "--classifier-hidden", "384"]).unwrap(),
        )
        .unwrap();
        let vision = &wide.preset.model.vision;
        assert_eq!((vision.classifier_channels, vision.classifier_hidden), (512, 384));
        let default = train_request(&train_args(&[]).unwrap()).unwrap();
        let vision = &default.preset.model.vision;
        assert_eq!((vision.classifier_channels, vision.classifier_hidden), (256, 256));
        let err = train_request(&train_args(&["--classifier-hidden", "0"]).unwrap()).unwrap_err();
        assert!(err.to_string().contains("--classifier-hidden 0"), "{err}");
    }

    #[test]
    fn channels_widen_the_blocks_and_their_film_parameters_together() {
        let wide = train_request(&train_args(&["--channels", "128"]).unwrap()).unwrap();
        let model = &wide.preset.model;
        assert_eq!((model.vision.channels, model.question.channels), (128, 128));
        let default = train_request(&train_args(&[]).unwrap()).unwrap();
        assert_eq!(default.preset.model.vision.channels, 64);
        let err = train_request(&train_args(&["--channels", "0"]).unwrap()).unwrap_err();
        assert!(err.to_string().contains("--channels 0"), "{err}");
    }

    #[test]
    fn lr_decay_from_takes_a_share_of_the_budget_and_one_turns_it_off() {
        let decay = |value: &str| {
            let flag = format!("--lr-decay-from={value}");
            train_request(&train_args(&[flag.as_str()]).unwrap())
        };
        assert_eq!(decay("0.75").unwrap().preset.training.lr_decay_from, Some(0.75));
        assert_eq!(decay("0").unwrap().preset.training.lr_decay_from, Some(0.0));
        assert_eq!(decay("1").unwrap().preset.training.lr_decay_from, None);
        for wrong in ["1.5", "-0.25"] {
            let err = decay(wrong).unwrap_err();
            assert!(err.to_string().contains("--lr-decay-from"), "{err}");
        }
    }

    #[test]
    fn freeze_stem_after_names_the_first_frozen_epoch() {
        let frozen = train_request(&train_args(&["--freeze-stem-after", "6"]).unwrap()).unwrap();
        assert_eq!(frozen.preset.training.freeze_stem_after, Some(6));
        let default = train_request(&train_args(&[]).unwrap()).unwrap();
        assert_eq!(default.preset.training.freeze_stem_after, None);
    }

    #[test]
    fn stem_first_stride_reads_a_larger_input_in_patches() {
        let flags = [
            "--image-size",
            "128",
            "--downsamplings",
            "3",
            "--stem-first-stride",
            "4",
        ];
        let patches = train_request(&train_args(&flags).unwrap()).unwrap();
        assert_eq!(patches.preset.model.vision.stem_first_stride, Some(4));
        assert_eq!(patches.preset.model.image_size, 128);
        let default = train_request(&train_args(&[]).unwrap()).unwrap();
        assert_eq!(default.preset.model.vision.stem_first_stride, None);
        for (stride, message) in [
            ("3", "even stride"),
            ("0", "even stride"),
            ("128", "no feature map"),
        ] {
            let flags = ["--stem-first-stride", stride];
            let err = train_request(&train_args(&flags).unwrap()).unwrap_err();
            assert!(err.to_string().contains(message), "{stride}: {err}");
        }
        let features = ["--preset", "paper-features", "--stem-first-stride", "4"];
        let err = train_request(&train_args(&features).unwrap()).unwrap_err();
        assert!(err.to_string().contains("pre-extracted features"), "{err}");
    }

    fn train_args(extra: &[&str]) -> std::result::Result<TrainArgs, clap::Error> {
        let mut argv = vec!["film-train", "train", "--data", "d", "--out", "o"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Some(Command::Train(args)) => Ok(*args),
            _ => panic!("not parsed as train"),
        }
    }

    #[test]
    fn train_uses_the_default_preset_and_keeps_its_head_training() {
        let default = train_request(&train_args(&[]).unwrap()).unwrap();
        assert_eq!(default.preset.name, "default");
        assert!(default.preset.model.scene_bottleneck);
        let err = train_request(&train_args(&["--perception-weight", "0"]).unwrap()).unwrap_err();
        assert!(err.to_string().contains("scene bottleneck"), "{err}");
        let plain = train_request(&train_args(&["--preset", "mini", "--perception-weight", "0"]).unwrap());
        assert!(!plain.unwrap().preset.model.perception_head);
        let err =
            train_request(&train_args(&["--preset", "mini", "--scene-bottleneck"]).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("--perception-weight W with W > 0"),
            "{err}"
        );
    }

    #[test]
    fn first_stages_need_fresh_questions() {
        let given = [
            "--lookups-first",
            "4",
            "--relations-first",
            "3",
            "--zero-hop-first",
            "2",
        ];
        let on = train_request(&train_args(&given).unwrap()).unwrap();
        assert_eq!(on.preset.training.lookups_first, 4);
        assert_eq!(on.preset.training.relations_first, 3);
        assert_eq!(on.preset.training.zero_hop_first, 2);
        for args in [&["--lookups-first", "0"][..], &["--fresh-questions", "0"]] {
            let off = train_request(&train_args(args).unwrap()).unwrap();
            assert_eq!(off.preset.training.lookups_first, 0);
            assert_eq!(off.preset.training.relations_first, 0);
            assert_eq!(off.preset.training.zero_hop_first, 0);
        }
        for (args, flag) in [
            (
                &["--preset", "mini", "--lookups-first", "2"][..],
                "--lookups-first",
            ),
            (
                &["--lookups-first", "2", "--fresh-questions", "0"],
                "--lookups-first",
            ),
            (&["--preset", "mini", "--zero-hop-first", "1"], "--zero-hop-first"),
            (
                &["--preset", "mini", "--relations-first", "1"],
                "--relations-first",
            ),
        ] {
            let err = train_request(&train_args(args).unwrap()).unwrap_err().to_string();
            assert!(
                err.contains("needs --fresh-questions N") && err.starts_with(flag),
                "{err}"
            );
        }
    }

    /// docs/training.md names the flags that turn `mini` into `default`: they must.
    #[test]
    fn mini_with_the_documented_flags_is_the_default_preset() {
        let flags = "--preset mini --lr 2e-3 --blocks 2 --perception-weight 1 --scene-bottleneck \
                     --fresh-questions 10 --lookups-first 6 --questions-per-image 8 \
                     --curriculum-steps 3000 --weight-average 0.995 --mirror true \
                     --intermediate-weight 0.3 --question-hidden 128";
        let flags: Vec<&str> = flags.split_whitespace().collect();
        let from_mini = train_request(&train_args(&flags).unwrap()).unwrap().preset;
        let default = train_request(&train_args(&[]).unwrap()).unwrap().preset;
        assert_eq!(from_mini.model, default.model);
        assert_eq!(from_mini.training, default.training);
    }

    #[test]
    fn trained_weights_are_scored_only_on_request_and_only_beside_an_average() {
        let default = train_request(&train_args(&[]).unwrap()).unwrap();
        assert!(default.preset.training.weight_average.is_some());
        assert!(!default.preset.training.score_trained_weights);
        let paired = train_request(&train_args(&["--score-trained-weights"]).unwrap()).unwrap();
        assert!(paired.preset.training.score_trained_weights);
        let err = train_request(&train_args(&["--weight-average", "0", "--score-trained-weights"]).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("this run has none"), "{err}");
    }

    #[test]
    fn residual_flag_sets_the_blocks_shortcut() {
        let default = train_request(&train_args(&[]).unwrap()).unwrap();
        assert_eq!(
            default.preset.model.vision.block.residual_source,
            ResidualSource::Projection
        );
        let input = train_request(&train_args(&["--residual", "input"]).unwrap()).unwrap();
        assert_eq!(
            input.preset.model.vision.block.residual_source,
            ResidualSource::Input
        );
        let err = train_args(&["--residual", "skip"])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("expected projection or input"), "{err}");
        let err = train_args(&["--residual", "input", "--no-residual"])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("cannot be used with"), "{err}");
    }

    #[test]
    fn word_attention_flag_sets_how_the_blocks_read_the_question() {
        let reading = |flags: &[&str]| {
            train_request(&train_args(flags).unwrap())
                .unwrap()
                .preset
                .model
                .question
                .word_attention
        };
        assert_eq!(reading(&[]), None);
        assert_eq!(reading(&["--word-attention", "add"]), Some(WordAttention::Add));
        assert_eq!(
            reading(&["--word-attention", "replace"]),
            Some(WordAttention::Replace)
        );
        assert_eq!(reading(&["--word-attention", "off"]), None);
        let err = train_args(&["--word-attention", "sometimes"])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("expected add, replace or off"), "{err}");
    }

    #[test]
    fn pool_flag_sets_the_classifiers_pool() {
        let pool = |flags: &[&str]| {
            train_request(&train_args(flags).unwrap())
                .unwrap()
                .preset
                .model
                .vision
                .pool
        };
        assert_eq!(pool(&[]), Pool::Max);
        assert_eq!(pool(&["--pool", "max-mean"]), Pool::MaxMean);
        assert_eq!(pool(&["--pool", "max-count"]), Pool::MaxCount);
        let err = train_args(&["--pool", "sum"]).err().expect("refused").to_string();
        assert!(err.contains("expected max, mean, max-mean or max-count"), "{err}");
    }
}
