//! The command line: one subcommand per job, and the default run when none is given.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use clevr::QuestionType;
use clevr_synth::attributes::Cogent;
use clevr_synth::dataset::{generate, GenerateConfig};
use film_layer::GammaMode;
use film_vision::{FilmPosition, Pool, ResidualSource, Stem};
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::split_files;
use crate::evaluate::{evaluate, type_key, Evaluation};
use crate::presets::{self, ModelConfig, Preset};
use crate::profile::{profile, ProfileRequest};
use crate::train::{load_eval_split, load_run, train, TrainRequest};

/// Where the default run keeps its data and its run directory (both git-ignored).
const DEFAULT_DATA: &str = "data/mini-clevr";
const DEFAULT_RUN: &str = "runs/default";

#[derive(Parser)]
#[command(
    name = "film-train",
    version,
    about = "Train, evaluate and question FiLM visual-reasoning models."
)]
#[command(long_about = "Train, evaluate and question FiLM visual-reasoning models.\n\n\
    With no subcommand: generate the embedded CLEVR-format dataset into data/mini-clevr (unless a \
    complete one is there), train the `default` preset into runs/default within its time budget \
    (resuming it if unfinished), evaluate it on the validation split and print what to try next.")]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Threads for the CPU kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// List the presets, or print one as JSON.
    Presets { name: Option<String> },
    /// Generate a CLEVR-format dataset with the embedded renderer and question generator.
    Generate(GenerateArgs),
    /// Run every question's program on its scene and compare with its answer.
    Verify {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "val")]
        split: String,
    },
    /// Train (or resume) a model.
    Train(TrainArgs),
    /// Accuracy of a trained run on a split: overall, per question type and family.
    Eval {
        #[arg(long)]
        run: PathBuf,
        /// The dataset folder (default: the one the run was trained on).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value = "val")]
        split: String,
        /// For a features preset: the folder of `<split>_features.npy` (default: DATA/features).
        #[arg(long)]
        features: Option<PathBuf>,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Time training steps on synthetic inputs and show where the time goes.
    Profile {
        #[arg(long, default_value = "mini")]
        preset: String,
        #[arg(long)]
        batch: Option<usize>,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// On CUDA, run f32 matrix products and convolutions on TF32 tensor cores (see
        /// docs/gpu.md).
        #[arg(long)]
        tf32: bool,
        /// Side of the square input image (a pixel-stem preset only).
        #[arg(long)]
        image_size: Option<usize>,
        /// Stride-2 convolutions of the pixel stem (a pixel-stem preset only).
        #[arg(long)]
        downsamplings: Option<usize>,
    },
    /// Ask a trained run a question about an image.
    Ask {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        image: PathBuf,
        question: String,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Also write where the model looks (the positions its pooled features come from)
        /// over the image, as a PNG.
        #[arg(long, value_name = "OUT.png")]
        explain: Option<PathBuf>,
    },
    /// Serve a page and a JSON API to ask a trained run about images, see where it looks
    /// and the γ and β each question gives its blocks (docs/training.md, "Serving").
    Serve(crate::serve::ServeArgs),
    /// The paper's analysis of a trained run: γ/β statistics, ablations, where the model
    /// looks, parameter embeddings; writes OUT/report.md and its pictures.
    Analyze(crate::analyze::AnalyzeArgs),
    /// Several runs' validation accuracy against questions seen and against minutes, as
    /// one picture and a Markdown table (the ablation plots of docs/results.md).
    Compare {
        /// Runs as LABEL=RUN_DIR (or RUN_DIR, labelled by its folder name).
        #[arg(required = true)]
        runs: Vec<crate::compare::LabelledRun>,
        /// The picture to write.
        #[arg(long, value_name = "OUT.png")]
        out: PathBuf,
        /// Questions seen at which the table reads each run, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [64_000u64, 128_000, 256_000, 512_000, 1_024_000])]
        at: Vec<u64>,
    },
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = GenerateConfig::default().train_images)]
    train_images: usize,
    #[arg(long, default_value_t = GenerateConfig::default().val_images)]
    val_images: usize,
    #[arg(long, default_value_t = GenerateConfig::default().questions_per_image)]
    questions_per_image: usize,
    /// Image size, WIDTHxHEIGHT.
    #[arg(long, default_value = "480x320")]
    size: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// CoGenT condition A or B.
    #[arg(long)]
    cogent: Option<String>,
    /// Render and ask about an existing CLEVR scenes JSON instead of sampling scenes.
    #[arg(long, requires = "split")]
    scenes: Option<PathBuf>,
    /// The split name to write `--scenes` as.
    #[arg(long)]
    split: Option<String>,
}

#[derive(Args)]
struct TrainArgs {
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
    /// The blocks read the perception head's per-cell object and attribute probabilities
    /// instead of the stem's features (needs --perception-weight; see docs/training.md).
    #[arg(long)]
    scene_bottleneck: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// On CUDA, run f32 matrix products and convolutions on TF32 tensor cores (see
    /// docs/gpu.md).
    #[arg(long)]
    tf32: bool,
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
    /// What each block's residual connection adds: projection (the paper: the block's
    /// 1x1 projection of its input) or input (the block's input unchanged).
    #[arg(long, value_parser = parse_residual, conflicts_with = "no_residual")]
    residual: Option<ResidualSource>,
    /// Classifier pooling: max or mean.
    #[arg(long, value_parser = parse_pool)]
    pool: Option<Pool>,
    /// Number of FiLMed blocks.
    #[arg(long)]
    blocks: Option<usize>,
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

fn parse_pool(s: &str) -> Result<Pool, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown pooling {s:?}: expected max or mean"))
}

/// The device named on the command line.
fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if candle_core::utils::cuda_is_available() => Ok(crate::gpu::cuda_device(0)?),
        "cuda" => bail!("--device cuda: this film-train was built without CUDA support; rebuild with `--features cuda` (see docs/gpu.md)"),
        other => bail!("unknown device {other:?}: expected cpu or cuda"),
    }
}

/// The device for `train` and `profile`, with TF32 products switched on when asked for.
fn training_device(name: &str, tf32: bool) -> Result<Device> {
    let device = device(name)?;
    if tf32 {
        if !device.is_cuda() {
            bail!("--tf32 is for --device cuda: the CPU has no TF32 arithmetic");
        }
        crate::gpu::allow_tf32();
    }
    Ok(device)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(threads) = cli.threads {
        // candle and film-layer size their thread pools from this variable on first use.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    match cli.command {
        None => default_run(),
        Some(Command::Presets { name }) => {
            match name {
                Some(name) => println!("{}", serde_json::to_string_pretty(&presets::by_name(&name)?)?),
                None => {
                    for p in presets::all() {
                        println!("{:<16} {}", p.name, p.description);
                    }
                    println!("\n`film-train presets NAME` prints one as JSON.");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Generate(args)) => {
            run_generate(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Verify { data, split }) => {
            let report = clevr::verify::verify(&split_files(&data, &split)?)?;
            print!("{report}");
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::Train(args)) => {
            let request = train_request(&args)?;
            let outcome = train(&request, &training_device(&args.device, args.tf32)?)?;
            println!(
                "trained {} steps; best validation accuracy {}; run directory {}",
                outcome.state.step,
                outcome
                    .state
                    .best_val_accuracy
                    .map_or("n/a".into(), |a| format!("{:.1}%", 100.0 * a)),
                outcome.run.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Eval {
            run,
            data,
            split,
            features,
            json,
            device: dev,
        }) => {
            let dev = device(&dev)?;
            let (config, vocab, model) = load_run(&run, &dev)?;
            let data = data.unwrap_or(config.data.clone());
            let split_data = load_eval_split(&data, &split, &vocab, &config.model, features.as_deref())?;
            let eval = evaluate(&model, &split_data, 64, None, &dev)?;
            if json {
                println!("{}", eval.summary_json());
            } else {
                print_evaluation(&eval, &vocab, &split);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Profile {
            preset,
            batch,
            steps,
            warmup,
            json,
            device: dev,
            tf32,
            image_size,
            downsamplings,
        }) => {
            let mut preset = presets::by_name(&preset)?;
            override_pixel_stem(&mut preset.model, image_size, downsamplings, &preset.name)?;
            let request = ProfileRequest {
                model: preset.model,
                batch: batch.unwrap_or(preset.training.batch_size),
                learning_rate: preset.training.learning_rate,
                weight_decay: preset.training.weight_decay,
                steps: steps.max(1),
                warmup,
            };
            let result = profile(&request, &training_device(&dev, tf32)?)?;
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                print!("{result}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Ask {
            run,
            image,
            question,
            device: dev,
            explain,
        }) => {
            let dev = device(&dev)?;
            ask(&run, &image, &question, explain.as_deref(), &dev)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Compare { runs, out, at }) => {
            let curves = runs
                .iter()
                .map(crate::compare::read_curve)
                .collect::<Result<Vec<_>>>()?;
            crate::compare::draw(&curves, &out)?;
            print!("{}", crate::compare::table(&curves, &at));
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Serve(args)) => {
            crate::serve::serve(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Analyze(args)) => {
            let report = crate::analyze::analyze(&args, &device(&args.device)?)?;
            println!("wrote {}", report.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_generate(args: &GenerateArgs) -> Result<()> {
    let (width, height) = args
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .with_context(|| format!("--size {:?}: expected WIDTHxHEIGHT, e.g. 480x320", args.size))?;
    let cogent = match args.cogent.as_deref() {
        None => None,
        Some("A") => Some(Cogent::A),
        Some("B") => Some(Cogent::B),
        Some(other) => bail!("--cogent {other:?}: expected A or B"),
    };
    let config = GenerateConfig {
        out: args.out.clone(),
        train_images: args.train_images,
        val_images: args.val_images,
        questions_per_image: args.questions_per_image,
        width,
        height,
        seed: args.seed,
        cogent,
        scenes: args.scenes.clone().zip(args.split.clone()),
    };
    generate_with_progress(&config)
}

fn generate_with_progress(config: &GenerateConfig) -> Result<()> {
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template("rendering {pos}/{len} images [{bar:30}] {per_sec} ETA {eta}")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    let summary =
        generate(config, &progress).with_context(|| format!("generating {}", config.out.display()))?;
    progress.finish_and_clear();
    for (split, images, questions) in &summary.splits {
        println!("{split}: {images} images, {questions} questions");
    }
    println!("wrote {}", config.out.display());
    Ok(())
}

fn train_request(args: &TrainArgs) -> Result<TrainRequest> {
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
    if let Some(k) = args.questions_per_image {
        if k == 0 {
            bail!("--questions-per-image: at least 1");
        }
        training.questions_per_image = k;
    }
    if let Some(weight) = args.perception_weight {
        if !(weight >= 0.0 && weight.is_finite()) {
            bail!("--perception-weight {weight}: expected a finite weight of 0 or more");
        }
        training.perception_weight = weight;
        model.perception_head = weight > 0.0;
    }
    if args.scene_bottleneck {
        if !model.perception_head {
            bail!("--scene-bottleneck: the blocks read the perception head, so it needs --perception-weight W with W > 0");
        }
        model.scene_bottleneck = true;
    }
    if model.scene_bottleneck && !model.perception_head {
        bail!(
            "--perception-weight 0: the `{}` preset's blocks read the perception head (its \
             scene bottleneck), so the head must train; use --preset mini for a model without it",
            args.preset
        );
    }
    if let Some(steps) = args.curriculum_steps {
        training.curriculum_steps = (steps > 0).then_some(steps);
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
    model.question_only |= args.question_only;
    override_pixel_stem(model, args.image_size, args.downsamplings, &args.preset)?;
    if let Some(pool) = args.pool {
        model.vision.pool = pool;
    }
    if let Some(blocks) = args.blocks {
        model.vision.num_blocks = blocks;
        model.question.num_blocks = blocks;
        model.vision.conditioned = vec![true; blocks];
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
fn override_pixel_stem(
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

fn print_evaluation(eval: &Evaluation, vocab: &clevr::vocab::Vocabulary, split: &str) {
    let pct = |t: &crate::evaluate::Tally| t.accuracy().map_or("-".into(), |a| format!("{:.1}%", 100.0 * a));
    println!(
        "{split}: {} questions, overall accuracy {}",
        eval.overall.total,
        pct(&eval.overall)
    );
    println!("\n{:<20} {:>9} {:>8}", "question type", "accuracy", "n");
    for t in QuestionType::ALL {
        if let Some(tally) = eval.by_type.get(&t.index()) {
            println!("{:<20} {:>9} {:>8}", t.name(), pct(tally), tally.total);
        }
    }
    println!("\n{:<20} {:>9} {:>8}", "question family", "accuracy", "n");
    for (family, tally) in &eval.by_family {
        let name = if *family == u16::MAX {
            "unknown".to_string()
        } else {
            family.to_string()
        };
        println!("{:<20} {:>9} {:>8}", name, pct(tally), tally.total);
    }
    let mut confusions: Vec<_> = eval.confusions.iter().collect();
    confusions.sort_by(|a, b| b.1.cmp(a.1));
    println!("\nmost confused answers (expected → predicted):");
    for ((expected, predicted), count) in confusions.into_iter().take(10) {
        let name = |id: u32| vocab.answers.answer(id).unwrap_or("?").to_string();
        println!("  {:>10} → {:<10} {count}", name(*expected), name(*predicted));
    }
}

fn ask(run: &Path, image: &Path, question: &str, explain: Option<&Path>, dev: &Device) -> Result<()> {
    let asker = crate::ask::Asker::load(run, dev)?;
    let unknown: Vec<String> = asker
        .words(question)
        .into_iter()
        .filter(|w| !w.known)
        .map(|w| w.word)
        .collect();
    if !unknown.is_empty() {
        eprintln!(
            "note: words not in the training vocabulary (read as <UNK>): {}",
            unknown.join(", ")
        );
    }
    let picture = clevr::image::decode_png(image)?;
    let reply = asker.ask(&picture, question)?;
    println!("{question}");
    for candidate in &reply.answers {
        println!("  {:>6.1}%  {}", 100.0 * candidate.probability, candidate.answer);
    }
    if let Some(out) = explain {
        let png = asker.explain_png(&picture, question, &reply)?;
        crate::run_dir::write_atomic(out, &png)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// The job `cargo run --release -p film-train` does.
fn default_run() -> Result<ExitCode> {
    let data = PathBuf::from(DEFAULT_DATA);
    let complete = data.join("questions").join("CLEVR_val_questions.json").is_file();
    if complete {
        println!("using the embedded dataset in {}", data.display());
    } else {
        println!(
            "generating the embedded dataset into {} (once; see docs/embedded-dataset.md)",
            data.display()
        );
        generate_with_progress(&GenerateConfig {
            out: data.clone(),
            ..GenerateConfig::default()
        })?;
    }
    let preset = presets::by_name("default")?;
    let minutes = preset.training.minutes;
    println!(
        "training the `default` preset for up to {minutes} minutes into {DEFAULT_RUN} (rerun to resume)"
    );
    let request = TrainRequest {
        data: data.clone(),
        preset,
        out: PathBuf::from(DEFAULT_RUN),
        epochs: None,
        minutes: None,
        seed: 0,
        val_limit: None,
        cache_dir: None,
        features_dir: None,
        quiet: false,
    };
    let dev = Device::Cpu;
    train(&request, &dev)?;
    let (config, vocab, model) = load_run(Path::new(DEFAULT_RUN), &dev)?;
    let split = load_eval_split(&data, "val", &vocab, &config.model, None)?;
    let eval = evaluate(&model, &split, 64, None, &dev)?;
    println!();
    println!("{:<20} {:>9}", "question type", "accuracy");
    for t in QuestionType::ALL {
        if let Some(a) = eval.by_type.get(&t.index()).and_then(|t| t.accuracy()) {
            println!("{:<20} {:>8.1}%  ({})", t.name(), 100.0 * a, type_key(t));
        }
    }
    println!(
        "{:<20} {:>8.1}%  ({} validation questions)",
        "overall",
        100.0 * eval.overall.accuracy().unwrap_or(0.0),
        eval.overall.total
    );
    println!("\nrun directory: {DEFAULT_RUN} (best model: {DEFAULT_RUN}/best.safetensors, metrics: {DEFAULT_RUN}/metrics.jsonl)");
    println!("try:\n  cargo run --release -p film-train -- ask --run {DEFAULT_RUN} --image {}/images/val/CLEVR_val_000000.png \"How many cubes are there?\"", data.display());
    println!("  cargo run --release -p film-train -- eval --run {DEFAULT_RUN} --split val");
    println!("  cargo run --release -p film-train -- analyze --run {DEFAULT_RUN} --out {DEFAULT_RUN}/analysis   (report.md with the paper's analysis)");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn train_args(extra: &[&str]) -> std::result::Result<TrainArgs, clap::Error> {
        let mut argv = vec!["film-train", "train", "--data", "d", "--out", "o"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Some(Command::Train(args)) => Ok(args),
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
    fn tf32_is_refused_on_the_cpu() {
        let err = training_device("cpu", true).unwrap_err();
        assert!(err.to_string().contains("--tf32 is for --device cuda"), "{err}");
        assert!(training_device("cpu", false).unwrap().is_cpu());
    }
}
