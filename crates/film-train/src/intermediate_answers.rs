//! The answers on the way to the answer (`--intermediate-weight W`): two heads on the
//! classifier's hidden layer predict what the question's program computes before its last
//! step ([`clevr::executor::intermediate_answers`]): the two attributes an attribute
//! comparison compares, the two counts a number comparison compares, the count an `exist`
//! tests, the attribute a "same as" step copies. Their losses, weighted by W, are added to
//! the answer's during training; at test time the heads are unused.
//!
//! "Is the cube the same colour as the sphere?" alone says one bit per question, and the
//! bit is a comparison of two lookups the network has not learnt yet. Told the cube's colour
//! and the sphere's, the hidden layer must hold both, each in a place of its own, which
//! is what the comparison needs: the question teaches two lookups as well as its answer.

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use clevr::dataset::QuestionSet;
use clevr::executor::intermediate_answers;
use clevr::vocab::AnswerIndex;
use clevr::Scene;

use crate::program_scenes::ProgramScenes;

/// Two linear maps from the classifier's hidden layer to answer logits: the first and the
/// second intermediate answer.
pub struct IntermediateHeads {
    heads: [Linear; 2],
}

impl IntermediateHeads {
    pub fn new(hidden: usize, answers: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(IntermediateHeads {
            heads: [
                candle_nn::linear(hidden, answers, vb.pp("first"))?,
                candle_nn::linear(hidden, answers, vb.pp("second"))?,
            ],
        })
    }

    /// The heads' loss for the classifier's `hidden` layer (N, F): for each slot, the mean
    /// cross-entropy over the questions that have an answer there, summed over the slots.
    /// `None` when no question of the batch has one.
    pub fn loss(&self, hidden: &Tensor, targets: &IntermediateBatch) -> candle_core::Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for (head, slot) in self.heads.iter().zip(&targets.slots) {
            let Some((rows, answers)) = slot else { continue };
            let logits = head.forward(&hidden.index_select(rows, 0)?)?;
            let loss = candle_nn::loss::cross_entropy(&logits, answers)?;
            total = Some(match total {
                Some(t) => (t + loss)?,
                None => loss,
            });
        }
        Ok(total)
    }
}

/// One batch's targets, per slot: the rows (u32) that have an intermediate answer there and
/// those answers' ids (u32), or `None` when no row has one.
pub struct IntermediateBatch {
    slots: [Option<(Tensor, Tensor)>; 2],
}

/// The training scenes, by `image_index`, that the programs run on, and the answer ids.
pub struct IntermediateTargets<'a> {
    scenes: ProgramScenes<'a>,
    answers: &'a AnswerIndex,
}

impl<'a> IntermediateTargets<'a> {
    pub fn new(scenes: &'a [Scene], answers: &'a AnswerIndex) -> Self {
        IntermediateTargets {
            scenes: ProgramScenes::new(scenes),
            answers,
        }
    }

    /// The targets for the questions at `positions` of `set`. An intermediate answer the
    /// answer index does not hold (a count no question's answer is) is left unsupervised.
    pub fn batch(
        &self,
        set: &QuestionSet,
        positions: &[usize],
        device: &Device,
    ) -> Result<IntermediateBatch> {
        let mut slots: [(Vec<u32>, Vec<u32>); 2] = Default::default();
        for (row, &position) in positions.iter().enumerate() {
            let found = self
                .scenes
                .run(set, position, "--intermediate-weight", intermediate_answers)?;
            for (slot, answer) in slots.iter_mut().zip(found) {
                if let Some(id) = answer.and_then(|a| self.answers.id(&a.to_string())) {
                    slot.0.push(row as u32);
                    slot.1.push(id);
                }
            }
        }
        let to_tensors =
            |(rows, ids): (Vec<u32>, Vec<u32>)| -> candle_core::Result<Option<(Tensor, Tensor)>> {
                if rows.is_empty() {
                    return Ok(None);
                }
                let n = rows.len();
                Ok(Some((
                    Tensor::from_vec(rows, n, device)?,
                    Tensor::from_vec(ids, n, device)?,
                )))
            };
        let [first, second] = slots;
        Ok(IntermediateBatch {
            slots: [to_tensors(first)?, to_tensors(second)?],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perception::tests::{object, scene};
    use clevr::{Color, ProgramNode, Shape};

    fn three_objects() -> Vec<Scene> {
        vec![scene(vec![
            object(10, 10, 9.0, Color::Red, Shape::Cube),
            object(470, 10, 9.0, Color::Blue, Shape::Sphere),
            object(470, 300, 9.0, Color::Red, Shape::Cylinder),
        ])]
    }

    fn questions(programs: Vec<Vec<ProgramNode>>) -> QuestionSet {
        QuestionSet {
            image_index: vec![3; programs.len()],
            programs: Some(programs),
            ..QuestionSet::default()
        }
    }

    fn slot(batch: &IntermediateBatch, j: usize) -> Option<(Vec<u32>, Vec<u32>)> {
        batch.slots[j]
            .as_ref()
            .map(|(rows, ids)| (rows.to_vec1().unwrap(), ids.to_vec1().unwrap()))
    }

    #[test]
    fn targets_are_the_compared_attributes_and_counts_by_row() {
        let scenes = three_objects();
        let answers = AnswerIndex::build(["0", "1", "2", "blue", "red", "no", "yes"]);
        let targets = IntermediateTargets::new(&scenes, &answers);
        let cube_colour_equals_sphere_colour = vec![
            ProgramNode::new("scene", &[]),
            ProgramNode::with_value("filter_shape", &[0], "cube"),
            ProgramNode::new("unique", &[1]),
            ProgramNode::new("query_color", &[2]),
            ProgramNode::new("scene", &[]),
            ProgramNode::with_value("filter_shape", &[4], "sphere"),
            ProgramNode::new("unique", &[5]),
            ProgramNode::new("query_color", &[6]),
            ProgramNode::new("equal_color", &[3, 7]),
        ];
        let sphere_colour = vec![
            ProgramNode::new("scene", &[]),
            ProgramNode::with_value("filter_shape", &[0], "sphere"),
            ProgramNode::new("unique", &[1]),
            ProgramNode::new("query_color", &[2]),
        ];
        let any_red = vec![
            ProgramNode::new("scene", &[]),
            ProgramNode::with_value("filter_color", &[0], "red"),
            ProgramNode::new("exist", &[1]),
        ];
        let set = questions(vec![cube_colour_equals_sphere_colour, sphere_colour, any_red]);
        let batch = targets.batch(&set, &[1, 0, 2], &Device::Cpu).unwrap();
        let id = |a: &str| answers.id(a).unwrap();
        // Row 0, the plain lookup, has none; row 1 compares red with blue; row 2 counts the
        // two red objects.
        assert_eq!(slot(&batch, 0), Some((vec![1, 2], vec![id("red"), id("2")])));
        assert_eq!(slot(&batch, 1), Some((vec![1], vec![id("blue")])));

        let lookups_only = targets.batch(&set, &[1, 1], &Device::Cpu).unwrap();
        assert!(slot(&lookups_only, 0).is_none() && slot(&lookups_only, 1).is_none());
    }

    #[test]
    fn a_count_outside_the_answers_is_unsupervised_and_missing_programs_are_an_error() {
        let scenes = three_objects();
        let answers = AnswerIndex::build(["0", "1", "no", "yes"]);
        let targets = IntermediateTargets::new(&scenes, &answers);
        let any_red = vec![
            ProgramNode::new("scene", &[]),
            ProgramNode::with_value("filter_color", &[0], "red"),
            ProgramNode::new("exist", &[1]),
        ];
        let set = questions(vec![any_red]);
        let batch = targets.batch(&set, &[0], &Device::Cpu).unwrap();
        assert!(slot(&batch, 0).is_none());

        let without_programs = QuestionSet {
            programs: None,
            ..set
        };
        let err = targets
            .batch(&without_programs, &[0], &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("loaded without programs"), "{err}");
    }

    #[test]
    fn the_loss_reads_only_the_rows_with_a_target() {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
        let heads = IntermediateHeads::new(4, 3, vb).unwrap();
        let hidden = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let rows = Tensor::new(&[2u32], &Device::Cpu).unwrap();
        let ids = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let batch = IntermediateBatch {
            slots: [Some((rows.clone(), ids.clone())), None],
        };
        let loss = heads.loss(&hidden, &batch).unwrap().unwrap();
        let alone = heads.heads[0]
            .forward(&hidden.index_select(&rows, 0).unwrap())
            .unwrap();
        let expected = candle_nn::loss::cross_entropy(&alone, &ids).unwrap();
        assert_eq!(
            loss.to_scalar::<f32>().unwrap(),
            expected.to_scalar::<f32>().unwrap()
        );
        let empty = IntermediateBatch { slots: [None, None] };
        assert!(heads.loss(&hidden, &empty).unwrap().is_none());
    }
}
