//! `report.md` (and `analysis.json` with the same numbers) in the analysis folder: one
//! file a user opens to see every table and picture.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clevr::QuestionType;
use film_layer::GammaMode;
use film_vision::Pool;
use serde_json::json;

use super::ablate::Ablation;
use super::pass::Scores;
use super::stats::{Summary, NEAR_ZERO};
use crate::evaluate::{type_key, Tally};
use crate::run_dir::write_atomic;

pub const REPORT: &str = "report.md";
pub const JSON: &str = "analysis.json";
pub const HISTOGRAMS: &str = "film-histograms.png";
pub const NOISE: &str = "noise.png";
pub const EMBEDDINGS: &str = "embeddings.png";

/// Statistics of one group of values (all blocks, or one block).
pub struct StatRow {
    pub group: String,
    pub gamma: Summary,
    pub beta: Summary,
}

/// One "where the model looks" picture.
pub struct ExampleRow {
    pub file: String,
    pub image: String,
    pub question: String,
    pub answer: String,
    pub predicted: String,
    pub live_channels: usize,
    pub channels: usize,
}

/// Everything the report shows.
pub struct Analysis {
    pub run: PathBuf,
    pub preset: String,
    pub data: PathBuf,
    pub split: String,
    pub questions: usize,
    pub train_mean_questions: usize,
    pub gamma_mode: GammaMode,
    pub use_beta: bool,
    /// 1-based numbers of the conditioned blocks.
    pub blocks: Vec<usize>,
    pub stats: Vec<StatRow>,
    pub ablations: Vec<(Ablation, Scores)>,
    /// (block number, variance share of PC1 and PC2).
    pub explained: Vec<(usize, [f64; 2])>,
    pub examples: Vec<ExampleRow>,
    pub pool: Pool,
    pub training_curve: bool,
    pub noise_plot: bool,
    pub seed: u64,
}

/// Writes `report.md` and `analysis.json` into `out`; returns the report's path.
pub fn write(out: &Path, analysis: &Analysis) -> Result<PathBuf> {
    let path = out.join(REPORT);
    write_atomic(&path, markdown(analysis).as_bytes())?;
    write_atomic(
        &out.join(JSON),
        serde_json::to_string_pretty(&to_json(analysis))?.as_bytes(),
    )?;
    Ok(path)
}

fn pct(t: &Tally) -> String {
    t.accuracy().map_or("–".into(), |a| format!("{:.1}%", 100.0 * a))
}

fn markdown(a: &Analysis) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# FiLM analysis of `{}`\n", a.run.display());
    let _ = writeln!(
        w,
        "Preset `{}`, γ parametrisation `{}`{}, conditioned blocks {:?} (numbered from 1). \
         Analysed: the first {} questions of split `{}` of `{}`. Produced by `film-train analyze`; \
         the numbers are also in [{JSON}]({JSON}).\n",
        a.preset,
        a.gamma_mode,
        if a.use_beta { "" } else { ", β fixed to 0" },
        a.blocks,
        a.questions,
        a.split,
        a.data.display()
    );
    if a.training_curve {
        let _ = writeln!(w, "## Training curve\n\n![training curve](training-curve.png)\n");
    }

    let _ = writeln!(w, "## γ and β\n");
    let _ = writeln!(
        w,
        "γ is the scale the blocks apply (after the `{}` parametrisation), β the shift, one \
         value per question, block and channel. \"Near zero\" means |v| < {NEAR_ZERO} · max |v| \
         over the same group (the threshold is in the last column). Paper, on CLEVR: γ from \
         −15 to 19 with a sharp peak at 0, 36% of γ and 76% of β negative.\n",
        a.gamma_mode
    );
    let _ = writeln!(
        w,
        "| group | param | min | max | mean | std | negative | near zero | threshold |\n|---|---|---|---|---|---|---|---|---|"
    );
    for row in &a.stats {
        for (symbol, s) in [("γ", &row.gamma), ("β", &row.beta)] {
            let _ = writeln!(
                w,
                "| {} | {symbol} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1}% | {:.1}% | {:.3} |",
                row.group,
                s.min,
                s.max,
                s.mean,
                s.std,
                100.0 * s.fraction_negative,
                100.0 * s.fraction_near_zero,
                s.near_zero_below
            );
        }
    }
    let _ = writeln!(
        w,
        "\n![histograms of γ and β]({})\n\nHistograms: {} equal bins over each group's range; \
         bars are the fraction of the group's values; the grey line is 0.\n",
        super::report::HISTOGRAMS,
        super::figures::HISTOGRAM_BINS
    );

    let _ = writeln!(w, "## Test-time ablations\n");
    let _ = writeln!(
        w,
        "The network is run with the FiLM parameters changed after the generator: replaced by \
         their mean over the first {} training questions (per block and channel, taken on the \
         applied γ), or with Gaussian noise added to the applied value (seed {}). Paper, on \
         CLEVR: γ → mean costs 65.4 points of accuracy, β → mean 1.0.\n",
        a.train_mean_questions, a.seed
    );
    let fixed: Vec<&str> = [
        (a.gamma_mode == GammaMode::Fixed).then_some("γ to 1"),
        (!a.use_beta).then_some("β to 0"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !fixed.is_empty() {
        let _ = writeln!(
            w,
            "This run fixes {}: ablations of a parameter the network does not use are left out.\n",
            fixed.join(" and ")
        );
    }
    let _ = write!(w, "| ablation | overall |");
    for t in QuestionType::ALL {
        let _ = write!(w, " {} |", t.name());
    }
    let _ = writeln!(w, "\n|---|---|{}", "---|".repeat(QuestionType::ALL.len()));
    for (ablation, scores) in &a.ablations {
        let _ = write!(w, "| {} | {} |", ablation.describe(), pct(&scores.overall));
        for t in QuestionType::ALL {
            let _ = write!(w, " {} |", scores.by_type.get(&t.index()).map_or("–".into(), pct));
        }
        let _ = writeln!(w);
    }
    if a.noise_plot {
        let _ = writeln!(w, "\n![accuracy under noise]({NOISE})\n");
    }

    let _ = writeln!(w, "## Where the model looks\n");
    let _ = writeln!(
        w,
        "{}\n",
        match a.pool {
            Pool::Max =>
                "The classifier max-pools each of its projection's channels over the \
                          positions of the last block's output; each picture shows, per position, \
                          the fraction of channels whose maximum is there: the locations the \
                          final MLP's input comes from (the paper's Figure 4). Channels that are \
                          zero everywhere carry no location and are left out. The grid covers the \
                          whole image, which the network sees resized to a square.",
            Pool::MaxMean | Pool::MaxCount =>
                "The classifier pools each of its projection's channels twice, by maximum \
                          and by a mean; each picture shows, per position, the fraction of channels \
                          whose maximum is there (the mean half reads every position alike). \
                          Channels that are zero everywhere carry no location and are left out.",
            Pool::Mean =>
                "This run mean-pools, so every position contributes to the classifier; \
                           each picture shows each position's share of the summed activations of \
                           the classifier's projection.",
        }
    );
    for e in &a.examples {
        let _ = writeln!(
            w,
            "- {} (`{}`): answer **{}**, model **{}**\n\n  ![{}]({})\n",
            e.question, e.image, e.answer, e.predicted, e.question, e.file
        );
    }

    let _ = writeln!(w, "## FiLM parameter embeddings\n");
    let _ = writeln!(
        w,
        "Each question's (γ, β) of a block, 2C values, projected on its first two principal \
         components and coloured by question type (the paper's Figure 6 uses t-SNE; PCA is \
         deterministic, has no parameters to tune, and its axes are directions whose share of \
         the variance is known): {}.\n\n![embeddings]({EMBEDDINGS})",
        a.explained
            .iter()
            .map(|(b, [e1, e2])| format!("block {b}: PC1 {:.0}%, PC2 {:.0}%", 100.0 * e1, 100.0 * e2))
            .collect::<Vec<_>>()
            .join("; ")
    );
    md
}

fn scores_json(s: &Scores) -> serde_json::Value {
    let by_type: serde_json::Map<String, serde_json::Value> = QuestionType::ALL
        .iter()
        .filter_map(|&t| {
            Some((
                type_key(t).to_string(),
                s.by_type.get(&t.index())?.accuracy()?.into(),
            ))
        })
        .collect();
    json!({"overall": s.overall.accuracy(), "by_type": by_type, "n": s.overall.total})
}

fn to_json(a: &Analysis) -> serde_json::Value {
    let ablation = |ab: &Ablation| match ab {
        Ablation::None => json!({"kind": "none"}),
        Ablation::TrainingMean(t) => json!({"kind": "training_mean", "target": t.symbol()}),
        Ablation::Noise(t, sigma) => json!({"kind": "noise", "target": t.symbol(), "sigma": sigma}),
    };
    json!({
        "run": a.run,
        "preset": a.preset,
        "split": a.split,
        "questions": a.questions,
        "gamma_mode": a.gamma_mode.name(),
        "near_zero_fraction_of_max_abs": NEAR_ZERO,
        "stats": a.stats.iter().map(|r| json!({"group": r.group, "gamma": r.gamma, "beta": r.beta})).collect::<Vec<_>>(),
        "ablations": a.ablations.iter().map(|(ab, s)| json!({"ablation": ablation(ab), "accuracy": scores_json(s)})).collect::<Vec<_>>(),
        "embedding_explained_variance": a.explained.iter().map(|(b, e)| json!({"block": b, "pc1": e[0], "pc2": e[1]})).collect::<Vec<_>>(),
        "train_mean_questions": a.train_mean_questions,
    })
}
