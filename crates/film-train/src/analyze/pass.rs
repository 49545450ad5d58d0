//! One pass over the analysed split: every batch's FiLM parameters are recorded, the
//! network is run once per ablation on the same stem output (the stem does not see the
//! question), and the first few examples' pooling maps are kept.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, D};
use indicatif::ProgressBar;

use super::ablate::{Ablation, Ablator};
use super::attention::{looks, Look};
use super::params::{applied_params, FilmShape, FilmTable};
use crate::data::Split;
use crate::evaluate::Tally;
use crate::model::FilmModel;

/// Accuracy overall and per question type ([`clevr::QuestionType::index`]).
#[derive(Clone, Debug, Default)]
pub struct Scores {
    pub overall: Tally,
    pub by_type: BTreeMap<usize, Tally>,
}

/// A question whose pooling map is drawn.
#[derive(Clone, Debug)]
pub struct Example {
    /// Position in the split's question set.
    pub position: usize,
    pub predicted: u32,
    pub look: Look,
}

/// What the pass collected.
pub struct Pass {
    pub table: FilmTable,
    /// One per ablation, in the order asked.
    pub scores: Vec<Scores>,
    pub examples: Vec<Example>,
}

/// What to run over which questions.
pub struct PassConfig<'a> {
    pub ablations: &'a [Ablation],
    pub limit: Option<usize>,
    pub batch_size: usize,
    /// Questions (on distinct images, in split order) whose pooling maps are kept.
    pub examples: usize,
}

pub fn run_pass(
    model: &FilmModel,
    split: &Split,
    ablator: &mut Ablator,
    config: &PassConfig,
    progress: &ProgressBar,
    device: &Device,
) -> Result<Pass> {
    let shape = FilmShape::of(model.network.config());
    let network = &model.network;
    let mut pass = Pass {
        table: FilmTable::new(shape.clone()),
        scores: vec![Scores::default(); config.ablations.len()],
        examples: Vec::new(),
    };
    let mut images_seen = HashSet::new();
    let total = config
        .limit
        .map_or(split.questions.len(), |l| l.min(split.questions.len()));
    progress.set_length(total as u64);
    for batch in split.batcher(config.batch_size, 0, false)?.epoch(0) {
        let batch = batch?;
        let keep = (total - pass.table.len()).min(batch.positions.len());
        if keep == 0 {
            break;
        }
        let answers = batch
            .answers
            .as_ref()
            .with_context(|| {
                format!(
                    "split {} has questions without answers: nothing to score",
                    split.name
                )
            })?
            .narrow(0, 0, keep)?
            .to_vec1::<u32>()?;
        let types = batch.types.narrow(0, 0, keep)?.to_vec1::<u8>()?;
        let lengths: Vec<usize> = batch.lengths.to_vec1::<u32>()?[..keep]
            .iter()
            .map(|&l| l as usize)
            .collect();
        let questions = batch.questions.narrow(0, 0, keep)?.to_device(device)?;
        let images = batch.question_images()?.narrow(0, 0, keep)?.to_device(device)?;
        let params = applied_params(model, &shape, &questions, &lengths)?;
        pass.table.push(&params, &types);
        let stem = model.trunk_input_t(&images, false)?;
        let dims = (keep, shape.all_blocks, 2 * shape.channels);
        for (a, &ablation) in config.ablations.iter().enumerate() {
            let raw = Tensor::from_vec(ablator.raw(ablation, &params), dims, device)?;
            let x = network.blocks_t(&stem, &raw, false)?;
            let predicted = network
                .classifier_t(&x, false)?
                .argmax(D::Minus1)?
                .to_device(&Device::Cpu)?
                .to_vec1::<u32>()?;
            let scores = &mut pass.scores[a];
            for ((&p, &e), &t) in predicted.iter().zip(&answers).zip(&types) {
                scores.overall.add(p == e);
                scores.by_type.entry(t as usize).or_default().add(p == e);
            }
            if ablation == Ablation::None && pass.examples.len() < config.examples {
                let maps = looks(&network.classifier_map_t(&x, false)?, network.config().pool)?;
                for ((look, &position), &p) in maps.into_iter().zip(&batch.positions).zip(&predicted) {
                    let image = split.questions.image_slot[position];
                    if pass.examples.len() < config.examples && images_seen.insert(image) {
                        pass.examples.push(Example {
                            position,
                            predicted: p,
                            look,
                        });
                    }
                }
            }
        }
        progress.inc(keep as u64);
    }
    Ok(pass)
}
