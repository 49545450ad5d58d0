//! `film-train analyze`: the FiLM paper's analysis of a trained run, as pictures, tables
//! and one markdown report. γ and β statistics and histograms (Figure 5), test-time
//! ablations (Figure 7), where the model looks (Figure 4) and 2-D embeddings
//! of the FiLM parameters (Figure 6).

pub mod ablate;
pub mod attention;
pub mod embed;
pub mod figures;
pub mod gamma;
pub mod params;
pub mod pass;
pub mod report;
pub mod stats;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Args;
use clevr::dataset::{LoadOptions, QuestionSet};
use film_layer::GammaMode;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::{load_split, split_files, ImageSource};
use crate::train::load_run;
use ablate::{Ablation, Ablator, Target};
use params::{question_means, FilmShape};
use pass::{run_pass, PassConfig};
use report::{Analysis, ExampleRow, StatRow};

pub use figures::{histograms_size, EMBEDDING_SIZE, NOISE_SIZE};

/// `film-train analyze`'s arguments.
#[derive(Args, Clone, Debug)]
pub struct AnalyzeArgs {
    /// The trained run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// The dataset folder (default: the one the run was trained on); its training split
    /// gives the means of the mean ablations.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The split analysed.
    #[arg(long, default_value = "val")]
    pub split: String,
    /// Where resized images are cached (default: DATA/.film-cache, as for training).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Folder for report.md and the pictures (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Analyse only the first N questions of the split.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Training questions the training-set means are taken over (the first ones in file
    /// order; only the question encoder runs on them).
    #[arg(long, default_value_t = 20_000)]
    pub train_limit: usize,
    /// Noise levels σ of the noise ablations, comma-separated.
    #[arg(long, default_value = "0.1,0.2,0.4,0.6,0.8,1.0", value_delimiter = ',')]
    pub noise: Vec<f64>,
    /// Questions (on distinct images) whose "where the model looks" picture is drawn.
    #[arg(long, default_value_t = 6)]
    pub examples: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Questions per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// cpu, or cuda in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the whole analysis and writes `OUT/report.md`; returns its path.
pub fn analyze(args: &AnalyzeArgs, device: &Device) -> Result<PathBuf> {
    if args.noise.iter().any(|s| !s.is_finite() || *s < 0.0) {
        bail!(
            "--noise {:?}: noise levels must be finite and non-negative",
            args.noise
        );
    }
    std::fs::create_dir_all(args.out.join("looks"))
        .with_context(|| format!("creating {}", args.out.display()))?;
    let (config, vocab, model) = load_run(&args.run, device)?;
    let data = args.data.clone().unwrap_or(config.data.clone());
    let vision = &config.model.vision;
    let shape = FilmShape::of(vision);
    if shape.blocks.is_empty() {
        bail!(
            "{}: no block is conditioned, there are no FiLM parameters to analyse",
            args.run.display()
        );
    }
    let mode = vision.block.gamma;
    let progress = progress_bar(args.quiet);

    progress.set_message("training-set means");
    let train_files = split_files(&data, "train")?;
    let (train_questions, _) = QuestionSet::load(&train_files, &vocab, LoadOptions::default())
        .with_context(|| format!("loading the training questions of {}", data.display()))?;
    let means = question_means(
        &model,
        &shape,
        &train_questions,
        Some(args.train_limit),
        args.batch,
        device,
    )?;
    drop(train_questions);

    let ablations = ablation_list(mode, vision.block.use_beta, &args.noise);
    let source = ImageSource::for_model(&config.model, &data, args.cache_dir.as_deref(), None);
    let split = load_split(&data, &args.split, &vocab, &source)?;
    progress.set_message(format!("scoring {} ablations on {}", ablations.len(), args.split));
    let mut ablator = Ablator::new(shape.clone(), mode, means.clone(), args.seed);
    let pass = run_pass(
        &model,
        &split,
        &mut ablator,
        &PassConfig {
            ablations: &ablations,
            limit: args.limit,
            batch_size: args.batch,
            examples: args.examples,
        },
        &progress,
        device,
    )?;
    progress.finish_and_clear();
    if pass.table.is_empty() {
        bail!("split {} has no questions to analyse", args.split);
    }

    let table = &pass.table;
    let groups = figures::stat_groups(table);
    let stats: Vec<StatRow> = groups
        .iter()
        .map(|g| StatRow {
            group: g.name.clone(),
            gamma: stats::summarize(&g.gamma).expect("groups are not empty"),
            beta: stats::summarize(&g.beta).expect("groups are not empty"),
        })
        .collect();
    figures::draw_histograms(&args.out.join(report::HISTOGRAMS), &groups, mode)?;
    let noise_plot = figures::draw_noise(&args.out.join(report::NOISE), &ablations, &pass.scores)?;
    let explained = figures::draw_embeddings(&args.out.join(report::EMBEDDINGS), table)?;

    let examples = write_examples(&args.out, &data, &split, &vocab, &pass.examples)?;

    let metrics = args.run.join("metrics.jsonl");
    let curve = metrics
        .is_file()
        .then(|| args.out.join(crate::training_curve::FILE_NAME));
    if let Some(curve) = &curve {
        crate::training_curve::draw_to(&metrics, curve)?;
    }

    let analysis = Analysis {
        run: args.run.clone(),
        preset: config.preset.clone(),
        data,
        split: args.split.clone(),
        questions: table.len(),
        train_mean_questions: means.questions,
        gamma_mode: mode,
        use_beta: vision.block.use_beta,
        blocks: shape.blocks.iter().map(|k| k + 1).collect(),
        stats,
        ablations: ablations.iter().copied().zip(pass.scores).collect(),
        explained,
        examples,
        pool: vision.pool,
        training_curve: curve.is_some(),
        noise_plot,
        seed: args.seed,
    };
    report::write(&args.out, &analysis)
}

fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} questions ETA {eta}")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar
}

/// The ablations that change something for this run: none (the reference), the two mean
/// ablations and noise on γ and β at each level. A γ fixed to 1 or a β switched off by the
/// run's config cannot be ablated.
fn ablation_list(mode: GammaMode, use_beta: bool, noise: &[f64]) -> Vec<Ablation> {
    let mut targets = Vec::new();
    if mode != GammaMode::Fixed {
        targets.push(Target::Gamma);
    }
    if use_beta {
        targets.push(Target::Beta);
    }
    let mut list = vec![Ablation::None];
    list.extend(targets.iter().map(|&t| Ablation::TrainingMean(t)));
    for &t in &targets {
        list.extend(noise.iter().filter(|&&s| s > 0.0).map(|&s| Ablation::Noise(t, s)));
    }
    list
}

/// Draws where the model looks for each kept example into `out/looks/`.
fn write_examples(
    out: &Path,
    data: &Path,
    split: &crate::data::Split,
    vocab: &clevr::vocab::Vocabulary,
    kept: &[pass::Example],
) -> Result<Vec<ExampleRow>> {
    let files = split_files(data, &split.name)?;
    let set = &split.questions;
    let mut examples = Vec::new();
    for (i, example) in kept.iter().enumerate() {
        let file = format!("looks/{:02}-question-{}.png", i + 1, example.position);
        let image_name = &set.images[set.image_slot[example.position] as usize];
        let row = ExampleRow {
            file: file.clone(),
            image: image_name.clone(),
            question: question_text(vocab, set.question_tokens(example.position)),
            answer: vocab
                .answers
                .answer(set.answers[example.position])
                .unwrap_or("?")
                .to_string(),
            predicted: vocab.answers.answer(example.predicted).unwrap_or("?").to_string(),
            live_channels: example.look.live_channels,
            channels: example.look.channels,
        };
        let subtitle = format!(
            "{image_name} · answer: {} · model: {} · pooled from {} of {} channels",
            row.answer, row.predicted, row.live_channels, row.channels
        );
        attention::write_look(
            &out.join(&file),
            &files.image_path(image_name)?,
            &example.look,
            &row.question,
            &subtitle,
        )?;
        examples.push(row);
    }
    Ok(examples)
}

/// The question's words, without the start, end and padding tokens.
fn question_text(vocab: &clevr::vocab::Vocabulary, ids: &[u32]) -> String {
    let words: Vec<&str> = ids
        .iter()
        .filter_map(|&id| vocab.questions.token(id))
        .filter(|t| !(t.starts_with('<') && t.ends_with('>')))
        .collect();
    let mut text = words.join(" ").replace(" ?", "?").replace(" ;", ";");
    if let Some(first) = text.get(0..1) {
        text.replace_range(0..1, &first.to_uppercase());
    }
    text
}
