//! The training loop: data → model → loss → step, with periodic validation, atomic
//! checkpoints, exact resume and a progress bar.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use clevr::batch::Mirror;
use clevr::dataset::{LoadOptions, QuestionSet};
use clevr::vocab::{TokenizerConfig, Vocabulary};
use film_optim::{Adam, AdamConfig};
use indicatif::{ProgressBar, ProgressStyle};

use crate::answer_attention::AnswerTargets;
use crate::data::{load_split, load_split_files, load_split_with, split_files, ImageSource, Split};
use crate::evaluate::{evaluate, loss_and_accuracy, Evaluation};
use crate::fresh_questions::{FirstStages, FreshQuestions, Stage};
use crate::intermediate_answers::{IntermediateTargets, Trace};
use crate::learning_rate::{budget_spent, learning_rate};
use crate::model::{FilmModel, SharedForward};
use crate::perception::{SceneTargets, StemImage};
use crate::presets::{ModelConfig, Preset, TrainingConfig};
use crate::run_dir::{load_model, model_tensors, save_tensors, RunConfig, RunDir, RunState};
use crate::seeded::seeded_var_builder;
use crate::weight_average::WeightAverage;

/// What `film-train train` was asked to do.
#[derive(Clone, Debug)]
pub struct TrainRequest {
    pub data: PathBuf,
    pub preset: Preset,
    pub out: PathBuf,
    pub epochs: Option<usize>,
    pub minutes: Option<f64>,
    pub seed: u64,
    /// Validation questions scored at each evaluation (all when `None`).
    pub val_limit: Option<usize>,
    /// Where resized images are cached (default: `DATA/.film-cache`).
    pub cache_dir: Option<PathBuf>,
    /// Where a features preset finds `<split>_features.npy` (default: `DATA/features`).
    pub features_dir: Option<PathBuf>,
    pub quiet: bool,
}

/// Where a finished (or stopped) training call left the run.
pub struct TrainOutcome {
    pub state: RunState,
    pub run: PathBuf,
}

/// Training variables: everything but BatchNorm's running statistics.
pub(crate) fn trainable(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = varmap.data().lock().expect("variable map lock poisoned");
    let mut vars: Vec<_> = data
        .iter()
        .filter(|(name, _)| !name.contains("running_"))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// A model (and its variables) for `config`, initialised from `seed`.
pub fn build_model(
    config: &crate::presets::ModelConfig,
    seed: u64,
    device: &Device,
) -> Result<(FilmModel, VarMap)> {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F32, device);
    let model = FilmModel::new(config, vb).context("building the model")?;
    Ok((model, varmap))
}

/// Starts a new run in `request.out`, or resumes the one there.
pub fn train(request: &TrainRequest, device: &Device) -> Result<TrainOutcome> {
    let run = RunDir::create(&request.out)?;
    let resumed = run.read_state()?;
    let new_run = resumed.is_none();
    let (mut config, mut vocab) = match &resumed {
        Some(_) => {
            let mut config = run.read_config()?;
            // A resumed run may be given a new budget: `--epochs` or `--minutes` replace the old one.
            if request.epochs.is_some() || request.minutes.is_some() {
                config.epochs = request.epochs;
                config.minutes = request.minutes;
                run.write_config(&config)?;
            }
            let vocab = Vocabulary::load(run.path())
                .with_context(|| format!("loading the vocabulary of {}", run.path().display()))?;
            (config, vocab)
        }
        None => {
            let train_files = split_files(&request.data, "train")?;
            let vocab = clevr::dataset::build_vocabulary(&train_files, TokenizerConfig::default())
                .context("building the vocabulary from the training questions")?;
            let config = RunConfig {
                preset: request.preset.name.clone(),
                model: request.preset.model.clone(),
                training: request.preset.training.clone(),
                data: request.data.clone(),
                seed: request.seed,
                epochs: request.epochs,
                minutes: request.minutes.or(if request.epochs.is_none() {
                    Some(request.preset.training.minutes)
                } else {
                    None
                }),
            };
            (config, vocab)
        }
    };
    let mut resumed = resumed;
    if let Some(state) = &mut resumed {
        let epochs_left = config.epochs.is_none_or(|e| state.epoch < e as u64);
        let time_left = config.minutes.is_none_or(|m| state.train_seconds < m * 60.0);
        state.finished &= !(epochs_left && time_left);
        if state.finished {
            eprintln!(
                "run {} already finished at step {}",
                run.path().display(),
                state.step
            );
            return Ok(TrainOutcome {
                state: state.clone(),
                run: run.path().to_path_buf(),
            });
        }
    }

    let source = ImageSource::for_model(
        &config.model,
        &config.data,
        request.cache_dir.as_deref(),
        request.features_dir.as_deref(),
    );
    // Attention, intermediate-answer, referent and relation-set targets run the programs of the
    // questions trained on: the file's, unless fresh questions (which always carry theirs)
    // replace them.
    let keep_programs = (config.training.attention_weight > 0.0
        || config.training.intermediate_weight > 0.0
        || config.training.referent_weight > 0.0
        || config.training.relation_set_weight > 0.0)
        && config.training.fresh_questions.is_none();
    let train_split = load_split_with(
        &config.data,
        "train",
        &vocab,
        &source,
        LoadOptions { keep_programs },
    )?;
    let train_files = split_files(&config.data, "train")?;
    // The switches that learn from the scene graphs share one read of the scene file.
    let scene_users: Vec<&str> = [
        (config.training.fresh_questions.is_some(), "--fresh-questions"),
        (config.training.curriculum_steps.is_some(), "--curriculum-steps"),
        (config.training.perception_weight > 0.0, "--perception-weight"),
        (config.training.attention_weight > 0.0, "--attention-weight"),
        (config.training.intermediate_weight > 0.0, "--intermediate-weight"),
        (config.training.referent_weight > 0.0, "--referent-weight"),
        (config.training.relation_set_weight > 0.0, "--relation-set-weight"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let scenes = match scene_users.is_empty() {
        true => Vec::new(),
        false => crate::data::read_scenes(&train_files, &scene_users.join(" and "))?,
    };
    let fresh = match config.training.fresh_questions {
        Some(per_image) => Some(FreshQuestions::new(
            scenes.clone(),
            &train_split.questions.images,
            per_image,
            FirstStages {
                lookups: config.training.lookups_first,
                relations: config.training.relations_first,
                zero_hop: config.training.zero_hop_first,
            },
            config.seed,
        )?),
        None => None,
    };
    if new_run {
        if let Some(fresh) = &fresh {
            // Words the generator uses that the questions file never does get ids of their
            // own (appended, so the file's ids keep their meaning) instead of <UNK>.
            let questions = fresh.every_kind();
            vocab
                .questions
                .expand(questions.iter().map(|q| q.question.as_str()))
                .context("adding the generated questions' words to the vocabulary")?;
        }
        if config.training.mirror {
            // A mirrored question needs both words even where the questions use one.
            vocab
                .questions
                .expand(["left right"])
                .context("adding the words --mirror swaps to the vocabulary")?;
        }
        config.model.question.vocab_size = vocab.questions.len();
        config.model.vision.num_answers = vocab.answers.len();
        vocab.save(run.path()).context("saving the vocabulary")?;
        run.write_config(&config)?;
    }
    let val_split = load_split(&config.data, "val", &vocab, &source)?;

    let (model, varmap) = build_model(&config.model, config.seed, device)?;
    let training = &config.training;
    let mut adam = Adam::new(
        trainable(&varmap),
        AdamConfig::new(training.learning_rate, training.weight_decay),
    );
    let mut average = training
        .weight_average
        .map(|decay| WeightAverage::new(&varmap, decay))
        .transpose()?;
    let mut state = match resumed {
        Some(state) => {
            let (model_path, optimizer_path) = run.checkpoint_paths(&state);
            load_model(&varmap, &model_path)?;
            let mut saved = candle_core::safetensors::load(&optimizer_path, device)
                .with_context(|| format!("reading {}", optimizer_path.display()))?;
            if let Some(average) = &mut average {
                average.load_state(&mut saved).with_context(|| {
                    format!("restoring the weight average from {}", optimizer_path.display())
                })?;
            }
            adam.load_state(saved)
                .with_context(|| format!("restoring {}", optimizer_path.display()))?;
            eprintln!(
                "resuming {} at step {} (epoch {})",
                run.path().display(),
                state.step,
                state.epoch
            );
            state
        }
        None => RunState::default(),
    };

    let mirror_words = match training.mirror {
        true => Some(mirror_words(&vocab.questions)?),
        false => None,
    };
    let epoch_batcher = |questions: Arc<QuestionSet>, epoch: u64| {
        Split {
            questions,
            ..train_split.clone()
        }
        .training_batcher(
            training.batch_size,
            config.seed,
            training.questions_per_image,
            mirror_words.map(|(left, right)| Mirror {
                left,
                right,
                seed: mirror_seed(config.seed, epoch),
            }),
        )
    };
    let mut next_questions = fresh.as_ref().map(|f| f.prepare(state.epoch, &vocab));
    let first_batcher = match next_questions.take() {
        Some(prepared) => epoch_batcher(Arc::new(prepared.wait()?), state.epoch)?,
        None => epoch_batcher(train_split.questions.clone(), state.epoch)?,
    };
    let progress = progress_bar(
        &config,
        first_batcher.plan(state.epoch).len(),
        &state,
        request.quiet,
    );
    let mut batcher = Some(first_batcher);
    let curriculum = training.curriculum_steps.map(crate::curriculum::curriculum);
    let scene_targets = match (
        &model.perception,
        training.perception_weight > 0.0,
        training.attention_weight > 0.0,
    ) {
        (None, true, _) => bail!("--perception-weight needs a model with a perception head"),
        (_, true, _) | (_, _, true) => {
            let first = train_split
                .questions
                .images
                .first()
                .context("the training split has no images")?;
            let size = crate::perception::png_size(&train_files.image_path(first)?)?;
            Some(SceneTargets::from_scenes(&scenes, size).context("scene targets")?)
        }
        _ => None,
    };
    let answer_targets = match (&model.attention, training.attention_weight > 0.0) {
        (Some(_), true) => Some(AnswerTargets::new(&scenes)),
        (None, true) => bail!("--attention-weight needs a model with an attention head"),
        _ => None,
    };
    // Heads on the classifier's hidden layer that predict what each question's program
    // computes besides its answer, each set with its loss weight.
    let mut program_traces = Vec::new();
    for (trace, heads, weight) in [
        (
            Trace::IntermediateAnswers,
            &model.intermediate,
            training.intermediate_weight,
        ),
        (Trace::Referents, &model.referents, training.referent_weight),
        (
            Trace::RelationSets,
            &model.relation_sets,
            training.relation_set_weight,
        ),
    ] {
        match (heads, weight > 0.0) {
            (Some(heads), true) => program_traces.push((
                IntermediateTargets::new(&scenes, &vocab.answers, trace),
                heads,
                weight,
            )),
            (None, true) => bail!("{} needs a model with those heads", trace.switch()),
            _ => {}
        }
    }
    let object_counts = curriculum.map(|_| crate::curriculum::object_counts(&scenes));
    let session_start = Instant::now();
    let seconds_before = state.train_seconds;
    let out_of_time = |state: &RunState| config.minutes.is_some_and(|m| state.train_seconds >= m * 60.0);
    let out_of_epochs = |state: &RunState| config.epochs.is_some_and(|e| state.epoch >= e as u64);
    let mut window = (0.0f64, 0.0f64, 0usize); // loss sum, accuracy sum, batches
    let mut perception_window = (0.0f64, 0usize); // attribute accuracy sum, batches

    'epochs: while !out_of_time(&state) && !out_of_epochs(&state) {
        let batcher = match (batcher.take(), next_questions.take(), &fresh) {
            (Some(b), _, _) => b,
            (None, Some(prepared), _) => epoch_batcher(Arc::new(prepared.wait()?), state.epoch)?,
            (None, None, Some(fresh)) => {
                epoch_batcher(Arc::new(fresh.question_set(state.epoch, &vocab)?), state.epoch)?
            }
            (None, None, None) => epoch_batcher(train_split.questions.clone(), state.epoch)?,
        };
        // The next epoch's questions are generated while this one trains.
        next_questions = fresh.as_ref().map(|f| f.prepare(state.epoch + 1, &vocab));
        // Plans depend on the seed, the epoch and the epoch's first step only, so a
        // resumed run recomputes the plan it stopped in.
        let first_step = state.step - state.batches_done_in_epoch as u64;
        let plan = match (&curriculum, &object_counts) {
            (Some(c), Some(objects)) if first_step < c.steps => {
                let difficulty = crate::curriculum::difficulty(batcher.questions(), objects)?;
                batcher.curriculum_plan(state.epoch, first_step, &difficulty, c)
            }
            _ => batcher.plan(state.epoch),
        };
        let batches_per_epoch = plan.len();
        crate::epoch_plan::EpochPlan {
            split: &train_split.name,
            source_name: match fresh {
                Some(_) => "the questions generated by --fresh-questions",
                None => "the questions file",
            },
            epoch: state.epoch,
            questions: batcher.questions().len(),
            batch_size: training.batch_size,
            batches: batches_per_epoch,
            done: state.batches_done_in_epoch,
        }
        .check()?;
        for batch in batcher.batches(plan).skip(state.batches_done_in_epoch) {
            let batch = batch?;
            let answers = batch
                .answers
                .as_ref()
                .context("a training question has no answer")?
                .to_device(device)?;
            let lengths = batch.question_lengths()?;
            let step_start = Instant::now();
            // With one question per image the stem sees one image per question, as in the
            // paper: BatchNorm's statistics then count an image drawn twice twice, and a
            // run without grouping repeats the earlier default's batches exactly.
            let images = if training.questions_per_image > 1 {
                batch.images.clone()
            } else {
                batch.question_images()?
            };
            let rows = if training.questions_per_image > 1 {
                batch.image_rows.clone()
            } else {
                Tensor::arange(0u32, lengths.len() as u32, &candle_core::Device::Cpu)?
            };
            let (images, rows) = (images.to_device(device)?, rows.to_device(device)?);
            let questions = batch.questions.to_device(device)?;
            let SharedForward {
                logits,
                stem,
                blocks,
                hidden,
            } = if stem_frozen(training, state.epoch) {
                model.forward_shared_frozen_stem_t(&images, &rows, &questions, &lengths)?
            } else {
                model.forward_shared_t(&images, &rows, &questions, &lengths, true)?
            };
            let (mut loss, accuracy) = loss_and_accuracy(&logits, &answers)?;
            let mut seen = None;
            if let (Some(targets), Some(head), Some(cells)) =
                (&answer_targets, &model.attention, &scene_targets)
            {
                let (_, _, h, w) = blocks.dims4()?;
                let images = question_images(&batch, batcher.questions())?;
                let targets = targets.batch(
                    batcher.questions(),
                    &batch.positions,
                    &images,
                    cells,
                    (h, w),
                    device,
                )?;
                let attention_loss = crate::answer_attention::loss(&head.forward(&blocks)?, &targets)?;
                loss = (loss + (attention_loss * training.attention_weight)?)?;
            }
            for (targets, heads, weight) in &program_traces {
                let targets = targets.batch(batcher.questions(), &batch.positions, device)?;
                if let Some(trace_loss) = heads.loss(&hidden, &targets)? {
                    loss = (loss + (trace_loss * *weight)?)?;
                }
            }
            if let (Some(targets), Some(head), true) = (
                &scene_targets,
                &model.perception,
                training.perception_weight > 0.0,
            ) {
                let (_, _, h, w) = stem.dims4()?;
                let images = stem_images(&batch, &rows, batcher.questions())?;
                let targets = targets.batch(&images, (h, w), device)?;
                let scores = head.forward(&stem)?;
                let perception_loss = crate::perception::loss(&scores, &targets)?;
                loss = (loss + (perception_loss * training.perception_weight)?)?;
                seen = Some(crate::perception::attribute_accuracy(&scores, &targets)?);
            }
            let loss_value = loss.to_scalar::<f32>()? as f64;
            if !loss_value.is_finite() {
                bail!(
                    "the loss became {loss_value} at step {}: training stopped; the last good checkpoint (step {}) is kept in {}",
                    state.step + 1,
                    run.read_state()?.map_or(0, |s| s.step),
                    run.path().display()
                );
            }
            let spent = budget_spent(&config, &state, batches_per_epoch);
            adam.set_learning_rate(learning_rate(training, state.step + 1, spent));
            adam.step(&loss.backward()?)?;
            if let Some(average) = &mut average {
                average.update()?;
            }
            state.step += 1;
            state.batches_done_in_epoch += 1;
            state.train_seconds = seconds_before + session_start.elapsed().as_secs_f64();
            window = (window.0 + loss_value, window.1 + accuracy, window.2 + 1);
            if let Some(seen) = seen {
                perception_window = (perception_window.0 + seen, perception_window.1 + 1);
            }
            let samples_per_s = lengths.len() as f64 / step_start.elapsed().as_secs_f64();
            progress.set_position(progress_position(&config, &state, batches_per_epoch));
            progress.set_message(format!(
                "loss {:.3} acc {:.1}% {:.0} samples/s",
                window.0 / window.2 as f64,
                100.0 * window.1 / window.2 as f64,
                samples_per_s
            ));
            let end_of_epoch = state.batches_done_in_epoch == batches_per_epoch;
            if end_of_epoch {
                state.epoch += 1;
                state.batches_done_in_epoch = 0;
            }
            let stop = out_of_time(&state) || out_of_epochs(&state);
            if state.step % training.eval_every as u64 == 0 || end_of_epoch || stop {
                let validate = || {
                    evaluate(
                        &model,
                        &val_split,
                        training.batch_size.max(64),
                        request.val_limit,
                        device,
                    )
                };
                let perception =
                    (perception_window.1 > 0).then(|| perception_window.0 / perception_window.1 as f64);
                // With a weight average, the average is what is scored and kept as best;
                // on request the trained weights' score is recorded beside it.
                let trained = match &average {
                    Some(_) if training.score_trained_weights => Some(validate()?),
                    _ => None,
                };
                // Until the first stages are over the model has been asked some kinds of
                // question alone, and the validation set asks everything: say so beside
                // its score.
                let epochs_begun = state.epoch + u64::from(state.batches_done_in_epoch > 0);
                let stage = fresh.as_ref().map(|f| f.stage(epochs_begun.saturating_sub(1)));
                let mut validate_and_record = || {
                    let eval = validate()?;
                    let mut fields = training_fields(window, perception, trained.as_ref());
                    match stage {
                        Some(Stage::Lookups) => fields.insert("lookups_only".into(), true.into()),
                        Some(Stage::Relations) => fields.insert("relation_lookups_only".into(), true.into()),
                        Some(Stage::ZeroHop) => fields.insert("zero_hop_only".into(), true.into()),
                        Some(Stage::Everything) | None => None,
                    };
                    record(&run, &mut state, &eval, fields, &varmap, &progress)
                };
                match &average {
                    Some(average) => average.with_averaged(validate_and_record)?,
                    None => validate_and_record()?,
                }
                window = (0.0, 0.0, 0);
                perception_window = (0.0, 0);
                state.finished = stop;
                let mut optimizer = adam.state()?;
                if let Some(average) = &average {
                    optimizer.extend(average.state()?);
                }
                run.save_checkpoint(&state, &model_tensors(&varmap), &optimizer)?;
            }
            if stop {
                break 'epochs;
            }
        }
    }
    progress.finish_and_clear();
    Ok(TrainOutcome {
        state,
        run: run.path().to_path_buf(),
    })
}

/// The `image_index` of each image the stem was given, and whether it was mirrored, where
/// question i read row `rows[i]`.
fn stem_images(
    batch: &clevr::batch::Batch,
    rows: &Tensor,
    questions: &QuestionSet,
) -> Result<Vec<StemImage>> {
    let rows = rows.to_vec1::<u32>()?;
    let given = rows.iter().max().map_or(0, |&r| r as usize + 1);
    let mut images = vec![None; given];
    for (&row, image) in rows.iter().zip(question_images(batch, questions)?) {
        images[row as usize] = Some(image);
    }
    images
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .context("a batch image is read by no question")
}

/// The image each question of `batch` read, as the stem was given it.
fn question_images(batch: &clevr::batch::Batch, questions: &QuestionSet) -> Result<Vec<StemImage>> {
    let rows = batch.image_rows.to_vec1::<u32>()?;
    Ok(rows
        .iter()
        .zip(&batch.positions)
        .map(|(&row, &position)| StemImage {
            image_index: questions.image_index[position] as usize,
            mirrored: batch.mirrored[row as usize],
        })
        .collect())
}

/// Whether epoch `epoch` trains with the stem frozen (`--freeze-stem-after`).
fn stem_frozen(training: &TrainingConfig, epoch: u64) -> bool {
    training.freeze_stem_after.is_some_and(|first| epoch >= first)
}

/// The seed that picks epoch `epoch`'s mirrored images: another half every epoch, apart
/// from the run's other seeded draws.
fn mirror_seed(seed: u64, epoch: u64) -> u64 {
    const MIRROR_MIX: u64 = 0x6A09_E667_F3BC_C909;
    seed ^ MIRROR_MIX ^ (epoch + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The ids of `left` and `right` in `vocab`, which `--mirror` swaps. Other words about
/// left and right (`leftmost`, as CLEVR-Humans' questions may say) would be wrong in a
/// mirrored question and are refused.
fn mirror_words(vocab: &clevr::vocab::QuestionVocab) -> Result<(u32, u32)> {
    let others: Vec<&str> = (0..vocab.len() as u32)
        .filter_map(|id| vocab.token(id))
        .filter(|t| (t.contains("left") || t.contains("right")) && *t != "left" && *t != "right")
        .collect();
    if !others.is_empty() {
        bail!(
            "--mirror swaps only the words left and right in questions, and the run's vocabulary \
             also has {}: a mirrored question would keep their old meaning",
            others.join(", ")
        );
    }
    let id = |word: &str| {
        vocab.id(word).with_context(|| {
            format!("--mirror swaps the words left and right in questions, and the run's vocabulary has no {word:?}")
        })
    };
    Ok((id("left")?, id("right")?))
}

/// The metrics of the training batches since the last evaluation: mean loss and accuracy
/// over `window` (loss sum, accuracy sum, batches), the perception head's mean attribute
/// accuracy, and the trained weights' validation scores when a weight average was scored.
fn training_fields(
    window: (f64, f64, usize),
    perception: Option<f64>,
    trained: Option<&Evaluation>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    if window.2 > 0 {
        fields.insert("train_loss".into(), (window.0 / window.2 as f64).into());
        fields.insert("train_accuracy".into(), (window.1 / window.2 as f64).into());
    }
    if let Some(seen) = perception {
        fields.insert("train_perception_accuracy".into(), seen.into());
    }
    if let Some(trained) = trained {
        fields.insert("trained_weights".into(), trained.summary_json());
    }
    fields
}

/// Appends the metrics of an evaluation, with `training` (see [`training_fields`]), and
/// keeps the best model.
fn record(
    run: &RunDir,
    state: &mut RunState,
    eval: &Evaluation,
    training: serde_json::Map<String, serde_json::Value>,
    varmap: &VarMap,
    progress: &ProgressBar,
) -> Result<()> {
    let note = if training.contains_key("lookups_only") {
        "  (trained on lookups alone so far)"
    } else if training.contains_key("relation_lookups_only") {
        "  (trained on lookups, some across a relation, alone so far)"
    } else if training.contains_key("zero_hop_only") {
        "  (trained on questions without relations alone so far)"
    } else {
        ""
    };
    let val = eval.overall.accuracy().unwrap_or(0.0);
    let mut record = eval.summary_json();
    let fields = record.as_object_mut().expect("summary is an object");
    fields.insert("step".into(), state.step.into());
    fields.insert("epoch".into(), state.epoch.into());
    fields.insert("train_seconds".into(), state.train_seconds.into());
    fields.extend(training);
    run.append_metrics(&record)?;
    // A picture is not worth stopping a training run for: say what failed and go on.
    if let Err(err) = crate::training_curve::draw(run.path()) {
        progress.suspend(|| eprintln!("warning: training curve not redrawn: {err:#}"));
    }
    if state.best_val_accuracy.is_none_or(|best| val > best) {
        state.best_val_accuracy = Some(val);
        state.best_step = Some(state.step);
        save_tensors(&model_tensors(varmap), &run.best_path())?;
    }
    // Printed above the bar, and also when there is no terminal to draw the bar on.
    progress.suspend(|| {
        eprintln!(
            "step {:>6}  val accuracy {:.1}% ({} questions)  best {:.1}%{note}",
            state.step,
            100.0 * val,
            eval.overall.total,
            100.0 * state.best_val_accuracy.unwrap_or(0.0)
        )
    });
    Ok(())
}

/// The bar counts seconds under a time budget and batches under an epoch budget.
fn progress_bar(config: &RunConfig, batches_per_epoch: usize, state: &RunState, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let (length, unit) = match config.minutes {
        Some(m) => ((m * 60.0) as u64, "s"),
        None => (
            (config.epochs.unwrap_or(1) * batches_per_epoch) as u64,
            " batches",
        ),
    };
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}}{unit} ETA {{eta}}  {{msg}}"
        ))
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    bar.set_position(progress_position(config, state, batches_per_epoch));
    bar
}

fn progress_position(config: &RunConfig, state: &RunState, batches_per_epoch: usize) -> u64 {
    match config.minutes {
        Some(_) => state.train_seconds as u64,
        None => state.epoch * batches_per_epoch as u64 + state.batches_done_in_epoch as u64,
    }
}

/// Loads a trained run's best model (or its last checkpoint when no best exists yet).
pub fn load_run(run_path: &Path, device: &Device) -> Result<(RunConfig, Vocabulary, FilmModel)> {
    let run = RunDir::open(run_path)?;
    let config = run.read_config()?;
    let vocab = Vocabulary::load(run.path())
        .with_context(|| format!("loading the vocabulary of {}", run.path().display()))?;
    let (model, varmap) = build_model(&config.model, config.seed, device)?;
    let best = run.best_path();
    let weights = if best.exists() {
        best
    } else {
        let state = run
            .read_state()?
            .with_context(|| format!("{} has no checkpoint yet", run.path().display()))?;
        run.checkpoint_paths(&state).0
    };
    load_model(&varmap, &weights)?;
    Ok((config, vocab, model))
}

/// `split` of the dataset `data` as a trained model reads it, for `eval`: pixels through
/// the default cache, or features from `features_dir` (default `<data>/features`). With
/// `questions`, that file's questions about the split's images replace the split's own
/// (e.g. the official generator's questions about the same scenes).
pub fn load_eval_split(
    data: &Path,
    split: &str,
    questions: Option<&Path>,
    vocab: &Vocabulary,
    model: &ModelConfig,
    features_dir: Option<&Path>,
) -> Result<Split> {
    let mut files = split_files(data, split)?;
    if let Some(path) = questions {
        files.questions = path.to_path_buf();
    }
    load_split_files(
        files,
        vocab,
        &ImageSource::for_model(model, data, None, features_dir),
        LoadOptions::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clevr::vocab::QuestionVocab;

    fn vocab(questions: &[&str]) -> QuestionVocab {
        QuestionVocab::build(questions.iter().copied(), TokenizerConfig::default()).unwrap()
    }

    #[test]
    fn the_mirror_swaps_left_and_right_and_refuses_other_words_about_them() {
        let v = vocab(&["Is the cube left of the sphere?", "What is right of it?"]);
        let (left, right) = mirror_words(&v).unwrap();
        assert_eq!((v.token(left), v.token(right)), (Some("left"), Some("right")));

        let err = mirror_words(&vocab(&["Is the leftmost cube left of the sphere right of it?"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("also has leftmost"), "{err}");
        let err = mirror_words(&vocab(&["Is the cube left of the sphere?"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no \"right\""), "{err}");
    }
}
