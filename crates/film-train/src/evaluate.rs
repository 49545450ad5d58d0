//! Accuracy of a model on a split: overall, per question type (the paper's five columns),
//! per question family, and the most confused answers.

use std::collections::BTreeMap;

use anyhow::Result;
use candle_core::{Device, Tensor, D};
use clevr::QuestionType;
use serde::Serialize;

use crate::data::Split;
use crate::model::FilmModel;

/// The JSON key of a question type: `exist`, `count`, `compare_numbers`, ….
pub fn type_key(t: QuestionType) -> &'static str {
    match t {
        QuestionType::Exist => "exist",
        QuestionType::Count => "count",
        QuestionType::CompareNumbers => "compare_numbers",
        QuestionType::QueryAttribute => "query_attribute",
        QuestionType::CompareAttribute => "compare_attribute",
    }
}

/// Correct and total counts.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Tally {
    pub correct: usize,
    pub total: usize,
}

impl Tally {
    pub fn add(&mut self, correct: bool) {
        self.correct += usize::from(correct);
        self.total += 1;
    }

    pub fn accuracy(&self) -> Option<f64> {
        (self.total > 0).then(|| self.correct as f64 / self.total as f64)
    }
}

/// What `eval` reports.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    pub overall: Tally,
    pub by_type: BTreeMap<usize, Tally>,
    pub by_family: BTreeMap<u16, Tally>,
    /// (expected answer id, predicted answer id) → count, wrong answers only.
    pub confusions: BTreeMap<(u32, u32), usize>,
}

impl Evaluation {
    /// Overall and per-type accuracies as the JSON object `eval --json` prints.
    pub fn summary_json(&self) -> serde_json::Value {
        let by_type: serde_json::Map<String, serde_json::Value> = QuestionType::ALL
            .iter()
            .filter_map(|&t| {
                let acc = self.by_type.get(&t.index())?.accuracy()?;
                Some((type_key(t).to_string(), acc.into()))
            })
            .collect();
        serde_json::json!({
            "overall": self.overall.accuracy(),
            "by_type": by_type,
            "n": self.overall.total,
        })
    }
}

/// Runs the model in evaluation mode over `split`, optionally only the first `limit`
/// questions, on `device`.
pub fn evaluate(
    model: &FilmModel,
    split: &Split,
    batch_size: usize,
    limit: Option<usize>,
    device: &Device,
) -> Result<Evaluation> {
    let batcher = split.batcher(batch_size, 0, false)?;
    let mut eval = Evaluation::default();
    let mut seen = 0;
    for batch in batcher.epoch(0) {
        let batch = batch?;
        let Some(answers) = &batch.answers else {
            anyhow::bail!(
                "split {} has questions without answers (a test split?): nothing to score",
                split.name
            );
        };
        let lengths = batch.question_lengths()?;
        // In evaluation mode BatchNorm uses its running statistics, so an image's stem
        // output does not depend on its batch: one stem pass per distinct image gives each
        // question the same input as a pass per question, for a fraction of the work.
        let logits = model
            .forward_shared_t(
                &batch.images.to_device(device)?,
                &batch.image_rows.to_device(device)?,
                &batch.questions.to_device(device)?,
                &lengths,
                false,
            )?
            .logits;
        let predicted = logits
            .argmax(D::Minus1)?
            .to_device(&Device::Cpu)?
            .to_vec1::<u32>()?;
        let expected = answers.to_vec1::<u32>()?;
        let types = batch.types.to_vec1::<u8>()?;
        for (i, (&p, &e)) in predicted.iter().zip(&expected).enumerate() {
            let correct = p == e;
            eval.overall.add(correct);
            if (types[i] as usize) < QuestionType::ALL.len() {
                eval.by_type.entry(types[i] as usize).or_default().add(correct);
            }
            let family = split.questions.families[batch.positions[i]];
            eval.by_family.entry(family).or_default().add(correct);
            if !correct {
                *eval.confusions.entry((e, p)).or_default() += 1;
            }
        }
        seen += predicted.len();
        if limit.is_some_and(|l| seen >= l) {
            break;
        }
    }
    Ok(eval)
}

/// Cross-entropy loss and accuracy of `logits` against `answers`.
pub fn loss_and_accuracy(logits: &Tensor, answers: &Tensor) -> Result<(Tensor, f64)> {
    let loss = candle_nn::loss::cross_entropy(logits, answers)?;
    let predicted = logits.argmax(D::Minus1)?;
    let correct = predicted
        .eq(answers)?
        .to_dtype(candle_core::DType::F64)?
        .mean_all()?
        .to_scalar::<f64>()?;
    Ok((loss, correct))
}
