//! The analysis pictures: histograms of γ and β, accuracy under noise, and the PCA
//! embeddings, from the numbers the pass collected.

use std::path::Path;

use anyhow::Result;
use clevr::QuestionType;
use film_layer::GammaMode;
use plotters::prelude::SeriesLabelPosition;

use super::ablate::{Ablation, Target};
use super::params::FilmTable;
use super::pass::Scores;
use super::{embed, stats};
use crate::plots::{
    histogram_grid, line_charts, scatter_panels, HistogramColumn, HistogramPanel, LineChart, ScatterPanel,
    Series,
};

/// Bins of every histogram: fine enough to show the peak at zero over the observed range.
pub const HISTOGRAM_BINS: usize = 60;
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

/// The values one row of the statistics table (and of the histograms) is computed over.
pub struct Group {
    pub name: String,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// All blocks together, then each conditioned block.
pub fn stat_groups(table: &FilmTable) -> Vec<Group> {
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

pub fn draw_histograms(path: &Path, groups: &[Group], mode: GammaMode) -> Result<()> {
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
pub fn draw_noise(path: &Path, ablations: &[Ablation], scores: &[Scores]) -> Result<bool> {
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
pub fn draw_embeddings(path: &Path, table: &FilmTable) -> Result<Vec<(usize, [f64; 2])>> {
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
