//! `film-train analyze`: the FiLM paper's analysis of a trained run, as pictures, tables
//! and one markdown report. γ and β statistics and histograms (Figure 5), test-time
//! ablations (Section 5.3, Figure 7), where the model looks (Figure 4) and 2-D embeddings
//! of the FiLM parameters (Figure 6).

pub mod ablate;
pub mod attention;
pub mod embed;
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
use clevr::QuestionType;
use film_layer::GammaMode;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::SeriesLabelPosition;

use crate::data::{default_cache_dir, image_config, load_split, split_files};
use crate::plots::{
    histogram_grid, line_charts, scatter_panels, HistogramColumn, HistogramPanel, LineChart, ScatterPanel,
    Series,
};
use crate::train::load_run;
use ablate::{Ablation, Ablator, Target};
use params::{question_means, FilmShape};
use pass::{run_pass, PassConfig, Scores};
use report::{Analysis, ExampleRow, StatRow};

/// Bins of every histogram: fine enough to show the peak at zero over the observed range.
const HISTOGRAM_BINS: usize = 60;
const HISTOGRAM_PANEL: (u32, u32) = (560, 250);
pub const NOISE_SIZE: (u32, u32) = (1000, 900);
pub const EMBEDDING_SIZE: (u32, u32) = (1400, 650);

/// The size of the histogram picture of a run with `blocks` conditioned blocks: one row
/// for all blocks together and one per block, γ and β side by side.
pub fn histograms_size(blocks: usize) -> (u32, u32) {
    (
        2 * HISTOGRAM_PANEL.0,
        50 + HISTOGRAM_PANEL.1 * (blocks as u32 + 1),
    )
}

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
    let cache = args.cache_dir.clone().unwrap_or_else(|| default_cache_dir(&data));
    let split = load_split(
        &data,
        &args.split,
        &vocab,
        image_config(config.model.image_size),
        &cache,
    )?;
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
    let groups = stat_groups(table);
    let stats: Vec<StatRow> = groups
        .iter()
        .map(|g| StatRow {
            group: g.name.clone(),
            gamma: stats::summarize(&g.gamma).expect("groups are not empty"),
            beta: stats::summarize(&g.beta).expect("groups are not empty"),
        })
        .collect();
    draw_histograms(&args.out.join(report::HISTOGRAMS), &groups, mode)?;
    let noise_plot = draw_noise(&args.out.join(report::NOISE), &ablations, &pass.scores)?;
    let explained = draw_embeddings(&args.out.join(report::EMBEDDINGS), table)?;

    let split_files = split_files(&data, &args.split)?;
    let mut examples = Vec::new();
    for (i, example) in pass.examples.iter().enumerate() {
        let set = &split.questions;
        let file = format!("looks/{:02}-question-{}.png", i + 1, example.position);
        let image_name = &set.images[set.image_slot[example.position] as usize];
        let row = ExampleRow {
            file: file.clone(),
            image: image_name.clone(),
            question: question_text(&vocab, set.question_tokens(example.position)),
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
            &args.out.join(&file),
            &split_files.image_path(image_name)?,
            &example.look,
            &row.question,
            &subtitle,
        )?;
        examples.push(row);
    }

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

/// The values one row of the statistics table (and of the histograms) is computed over.
struct Group {
    name: String,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// All blocks together, then each conditioned block.
fn stat_groups(table: &params::FilmTable) -> Vec<Group> {
    let mut groups = vec![Group {
        name: "all blocks".into(),
        gamma: table.gamma.clone(),
        beta: table.beta.clone(),
    }];
    for (b, &k) in table.shape.blocks.iter().enumerate() {
        groups.push(Group {
            name: format!("block {}", k + 1),
            gamma: table.block_values(&table.gamma, b),
            beta: table.block_values(&table.beta, b),
        });
    }
    groups
}

fn draw_histograms(path: &Path, groups: &[Group], mode: GammaMode) -> Result<()> {
    let column = |symbol: &str, pick: fn(&Group) -> &Vec<f32>| HistogramColumn {
        x_label: format!("{symbol} value"),
        panels: groups
            .iter()
            .map(|g| {
                let h = stats::Histogram::of(pick(g), HISTOGRAM_BINS);
                HistogramPanel {
                    title: format!("{symbol}, {}", g.name),
                    lo: h.lo,
                    hi: h.hi,
                    counts: h.counts,
                }
            })
            .collect(),
    };
    let columns = [column("γ", |g| &g.gamma), column("β", |g| &g.beta)];
    let size = histograms_size(groups.len() - 1);
    let title = format!("FiLM parameters as applied (γ parametrisation: {mode})");
    histogram_grid(path, size, &title, &columns)?;
    Ok(())
}

/// Accuracy against σ for γ and β noise, overall and per question type; σ = 0 is the
/// trained model.
/// Returns whether there was any noise level to draw.
fn draw_noise(path: &Path, ablations: &[Ablation], scores: &[Scores]) -> Result<bool> {
    let baseline = &scores[0];
    let chart = |target: Target| -> Option<LineChart> {
        let levels: Vec<(f64, &Scores)> = std::iter::once((0.0, baseline))
            .chain(ablations.iter().zip(scores).filter_map(|(a, s)| match a {
                Ablation::Noise(t, sigma) if *t == target => Some((*sigma, s)),
                _ => None,
            }))
            .collect();
        if levels.len() < 2 {
            return None;
        }
        let mut series = vec![Series {
            name: "overall".into(),
            color: 0,
            points: levels
                .iter()
                .filter_map(|(s, sc)| Some((*s, sc.overall.accuracy()?)))
                .collect(),
        }];
        for t in QuestionType::ALL {
            series.push(Series {
                name: t.name().into(),
                color: 1 + t.index(),
                points: levels
                    .iter()
                    .filter_map(|(s, sc)| Some((*s, sc.by_type.get(&t.index())?.accuracy()?)))
                    .collect(),
            });
        }
        Some(LineChart {
            title: format!("Gaussian noise added to {}", target.symbol()),
            x_label: "σ of the noise".into(),
            y_label: "accuracy".into(),
            y_range: Some((0.0, 1.0)),
            // Accuracy falls as σ grows: the lower left is the free corner.
            legend: SeriesLabelPosition::LowerLeft,
            series,
        })
    };
    let charts: Vec<LineChart> = [Target::Gamma, Target::Beta]
        .into_iter()
        .filter_map(chart)
        .collect();
    if charts.is_empty() {
        return Ok(false);
    }
    line_charts(
        path,
        NOISE_SIZE,
        "Accuracy under noise on the FiLM parameters",
        &charts,
    )?;
    Ok(true)
}

/// PCA of each question's (γ, β) for the first and last conditioned block; returns the
/// variance shares of (PC1, PC2) per drawn block, as (block number, shares).
fn draw_embeddings(path: &Path, table: &params::FilmTable) -> Result<Vec<(usize, [f64; 2])>> {
    let blocks = &table.shape.blocks;
    let mut picked = vec![0];
    if blocks.len() > 1 {
        picked.push(blocks.len() - 1);
    }
    let mut explained = Vec::new();
    let mut panels = Vec::new();
    for b in picked {
        let projection = embed::pca_2d(&table.block_rows(b), 2 * table.shape.channels);
        let [e1, e2] = projection.explained;
        explained.push((blocks[b] + 1, projection.explained));
        panels.push(ScatterPanel {
            title: format!("block {}: PCA of (γ, β)", blocks[b] + 1),
            x_label: format!("PC1 ({:.0}% of variance)", 100.0 * e1),
            y_label: format!("PC2 ({:.0}% of variance)", 100.0 * e2),
            points: projection
                .points
                .iter()
                .zip(&table.types)
                .map(|(&(x, y), &t)| (x, y, t as usize))
                .collect(),
        });
    }
    let classes: Vec<&str> = QuestionType::ALL.iter().map(|t| t.name()).collect();
    scatter_panels(
        path,
        EMBEDDING_SIZE,
        "FiLM parameters per question, by question type",
        &classes,
        &panels,
    )?;
    Ok(explained)
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
