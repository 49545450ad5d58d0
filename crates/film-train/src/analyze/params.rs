//! The FiLM parameters a model gives each question, as the blocks apply them: γ after the
//! run's γ parametrisation and β, for the conditioned blocks only.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use clevr::dataset::QuestionSet;
use film_vision::VisionConfig;

use crate::model::FilmModel;

/// Which blocks carry FiLM parameters and how wide they are.
#[derive(Clone, Debug, PartialEq)]
pub struct FilmShape {
    /// Indices of the conditioned blocks (an unconditioned block ignores its parameters).
    pub blocks: Vec<usize>,
    /// Parameter pairs the generator emits (conditioned or not).
    pub all_blocks: usize,
    pub channels: usize,
}

impl FilmShape {
    pub fn of(config: &VisionConfig) -> FilmShape {
        FilmShape {
            blocks: (0..config.num_blocks)
                .filter(|&k| config.conditioned[k])
                .collect(),
            all_blocks: config.num_blocks,
            channels: config.channels,
        }
    }
}

/// Applied γ and β per question, `[question][conditioned block][channel]` flattened.
#[derive(Clone, Debug)]
pub struct FilmTable {
    pub shape: FilmShape,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    /// [`clevr::QuestionType::index`] per question (255 when unknown).
    pub types: Vec<u8>,
}

impl FilmTable {
    pub fn new(shape: FilmShape) -> FilmTable {
        FilmTable {
            shape,
            gamma: Vec::new(),
            beta: Vec::new(),
            types: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Appends a batch: `applied` from [`applied_params`], one type per question.
    pub fn push(&mut self, applied: &AppliedParams, types: &[u8]) {
        self.gamma.extend_from_slice(&applied.gamma);
        self.beta.extend_from_slice(&applied.beta);
        self.types.extend_from_slice(types);
    }

    /// All values of γ (or β) of conditioned block number `b` (an index into
    /// `shape.blocks`), over all questions.
    pub fn block_values(&self, values: &[f32], b: usize) -> Vec<f32> {
        let c = self.shape.channels;
        let per_question = self.shape.blocks.len() * c;
        values
            .chunks_exact(per_question)
            .flat_map(|q| q[b * c..(b + 1) * c].iter().copied())
            .collect()
    }

    /// Each question's (γ, β) of conditioned block `b`, as rows of 2C values.
    pub fn block_rows(&self, b: usize) -> Vec<f32> {
        let c = self.shape.channels;
        let per_question = self.shape.blocks.len() * c;
        self.gamma
            .chunks_exact(per_question)
            .zip(self.beta.chunks_exact(per_question))
            .flat_map(|(g, be)| {
                g[b * c..(b + 1) * c]
                    .iter()
                    .chain(&be[b * c..(b + 1) * c])
                    .copied()
            })
            .collect()
    }
}

/// One batch's parameters: the generator's raw output and the applied values.
pub struct AppliedParams {
    /// (N, K, 2C) raw output, row-major, on the CPU.
    pub raw: Vec<f32>,
    /// Applied γ and β of the conditioned blocks, `[question][conditioned block][channel]`.
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub batch: usize,
}

/// Runs the generator on a batch and converts its raw γ with the run's parametrisation
/// (film-layer's own [`film_layer::GammaMode::apply`], so it is exactly what the blocks apply).
pub fn applied_params(
    model: &FilmModel,
    shape: &FilmShape,
    questions: &Tensor,
    lengths: &[usize],
) -> Result<AppliedParams> {
    applied_from_raw(model, shape, &model.film_params(questions, lengths)?)
}

/// As [`applied_params`], from the generator's raw output `raw` (N, K, 2C).
pub fn applied_from_raw(model: &FilmModel, shape: &FilmShape, raw: &Tensor) -> Result<AppliedParams> {
    let c = shape.channels;
    let mode = model.network.config().block.gamma;
    let gamma_all = mode
        .apply(&raw.narrow(2, 0, c)?)?
        .to_device(&Device::Cpu)?
        .to_vec3::<f32>()?;
    let raw = raw.to_device(&Device::Cpu)?.to_vec3::<f32>()?;
    let batch = raw.len();
    let mut gamma = Vec::with_capacity(batch * shape.blocks.len() * c);
    let mut beta = Vec::with_capacity(batch * shape.blocks.len() * c);
    for (g, r) in gamma_all.iter().zip(&raw) {
        for &k in &shape.blocks {
            gamma.extend_from_slice(&g[k]);
            beta.extend_from_slice(&r[k][c..]);
        }
    }
    Ok(AppliedParams {
        raw: raw.into_iter().flatten().flatten().collect(),
        gamma,
        beta,
        batch,
    })
}

/// Per-channel means of the applied γ and β over a question set, `[conditioned block][channel]`.
#[derive(Clone, Debug)]
pub struct ParamMeans {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub questions: usize,
}

/// Means over the first `limit` questions of `set` (all when `None`). Only the question
/// encoder runs, so no image is read.
pub fn question_means(
    model: &FilmModel,
    shape: &FilmShape,
    set: &QuestionSet,
    limit: Option<usize>,
    batch_size: usize,
    device: &Device,
) -> Result<ParamMeans> {
    let n = limit.map_or(set.len(), |l| l.min(set.len()));
    if n == 0 {
        anyhow::bail!("no questions to average the FiLM parameters over");
    }
    let width = shape.blocks.len() * shape.channels;
    let (mut gamma, mut beta) = (vec![0f64; width], vec![0f64; width]);
    for start in (0..n).step_by(batch_size) {
        let positions: Vec<usize> = (start..(start + batch_size).min(n)).collect();
        let (questions, lengths) = question_batch(set, &positions, device)?;
        let applied = applied_params(model, shape, &questions, &lengths)
            .with_context(|| format!("FiLM parameters of questions {start}.."))?;
        for (sum, values) in [(&mut gamma, &applied.gamma), (&mut beta, &applied.beta)] {
            for row in values.chunks_exact(width) {
                for (s, &v) in sum.iter_mut().zip(row) {
                    *s += v as f64;
                }
            }
        }
    }
    let mean = |sum: Vec<f64>| sum.into_iter().map(|s| (s / n as f64) as f32).collect();
    Ok(ParamMeans {
        gamma: mean(gamma),
        beta: mean(beta),
        questions: n,
    })
}

/// The questions at `positions`, padded with `<NULL>` (0) as the batcher pads them, and
/// their true lengths.
pub fn question_batch(
    set: &QuestionSet,
    positions: &[usize],
    device: &Device,
) -> Result<(Tensor, Vec<usize>)> {
    let lengths: Vec<usize> = positions.iter().map(|&i| set.question_tokens(i).len()).collect();
    let longest = lengths.iter().copied().max().unwrap_or(0);
    let mut ids = vec![0u32; positions.len() * longest];
    for (row, &i) in positions.iter().enumerate() {
        let tokens = set.question_tokens(i);
        ids[row * longest..row * longest + tokens.len()].copy_from_slice(tokens);
    }
    Ok((
        Tensor::from_vec(ids, (positions.len(), longest), device)?,
        lengths,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_slices_follow_the_layout() {
        let shape = FilmShape {
            blocks: vec![0, 2],
            all_blocks: 3,
            channels: 2,
        };
        let mut table = FilmTable::new(shape);
        // Two questions; per question [block 0: c0 c1][block 2: c0 c1].
        table.gamma = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        table.beta = vec![-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0];
        table.types = vec![0, 1];
        assert_eq!(table.block_values(&table.gamma, 1), vec![3.0, 4.0, 7.0, 8.0]);
        assert_eq!(
            table.block_rows(0),
            vec![1.0, 2.0, -1.0, -2.0, 5.0, 6.0, -5.0, -6.0]
        );
    }
}
