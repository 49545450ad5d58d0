//! The answers on the way to the answer: heads on the classifier's hidden layer that
//! predict what the question's program computes besides its answer. Their losses,
//! weighted, are added to the answer's during training; at test time the heads are unused.
//!
//! Two traces of the program can be supervised, each with its own heads and weight:
//! - `--intermediate-weight W` ([`Trace::IntermediateAnswers`]): what the program computes
//!   before its last step ([`clevr::executor::intermediate_answers`]): the two attributes
//!   an attribute comparison compares, the two counts a number comparison compares, the
//!   count an `exist` tests, the attribute a "same as" step copies. "Is the cube the same
//!   colour as the sphere?" alone says one bit per question, and the bit is a comparison
//!   of two lookups the network has not learnt yet. Told the cube's colour and the
//!   sphere's, the hidden layer must hold both, each in a place of its own, which is what
//!   the comparison needs: the question teaches two lookups as well as its answer.
//! - `--referent-weight W` ([`Trace::Referents`]): the colour, shape, material and size
//!   of the (at most two) objects the program picks out ([`clevr::executor::referents`]).
//!   "What colour is the thing left of the cube?" says which of eight colours; told all
//!   four attributes of the thing and of the cube, the network learns which objects the
//!   relation picked, several bits per question instead of about three.
//! - `--relation-set-weight W` ([`Trace::RelationSets`]): how many objects each of the (at
//!   most two) `relate` or "same as" steps finds ([`clevr::executor::relation_set_sizes`]).
//!   A relation across the grid is what the network is slowest to learn, and the answer
//!   says little about it: "What colour is the cube left of the sphere?" is answered from
//!   one object. Told how many things are left of the sphere, the hidden layer must hold
//!   the whole set the relation finds, on every question that has one.

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use clevr::dataset::QuestionSet;
use clevr::executor::{intermediate_answers, referents, relation_set_sizes, Answer, ExecError};
use clevr::vocab::AnswerIndex;
use clevr::{AttributeKind, ProgramNode, Scene};

use crate::program_scenes::ProgramScenes;

/// Which of the program's computations a set of heads predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    /// The (at most two) answers computed just before the last step.
    IntermediateAnswers,
    /// The four attributes of each of the (at most two) objects the program picks out.
    Referents,
    /// How many objects each of the (at most two) relations of the program finds.
    RelationSets,
}

impl Trace {
    /// The heads' names in the weight files, one per slot.
    pub fn slot_names(self) -> &'static [&'static str] {
        match self {
            Trace::IntermediateAnswers | Trace::RelationSets => &["first", "second"],
            Trace::Referents => &[
                "first_color",
                "first_shape",
                "first_material",
                "first_size",
                "second_color",
                "second_shape",
                "second_material",
                "second_size",
            ],
        }
    }

    /// The switch that turns the heads on, for error messages.
    pub fn switch(self) -> &'static str {
        match self {
            Trace::IntermediateAnswers => "--intermediate-weight",
            Trace::Referents => "--referent-weight",
            Trace::RelationSets => "--relation-set-weight",
        }
    }

    /// The answer each slot holds for `program` on `scene`, `None` where it holds none.
    fn answers(self, program: &[ProgramNode], scene: &Scene) -> Result<Vec<Option<Answer>>, ExecError> {
        Ok(match self {
            Trace::IntermediateAnswers => intermediate_answers(program, scene)?.to_vec(),
            Trace::Referents => referents(program, scene)?
                .into_iter()
                .flat_map(|object| {
                    AttributeKind::ALL
                        .map(|kind| object.map(|i| Answer::Attribute(scene.objects[i].attribute(kind))))
                })
                .collect(),
            Trace::RelationSets => relation_set_sizes(program, scene)?
                .into_iter()
                .map(|size| size.map(Answer::Count))
                .collect(),
        })
    }
}

/// One linear map per slot from the classifier's hidden layer to answer logits.
pub struct IntermediateHeads {
    heads: Vec<Linear>,
}

impl IntermediateHeads {
    pub fn new(hidden: usize, answers: usize, trace: Trace, vb: VarBuilder) -> candle_core::Result<Self> {
        let heads = trace
            .slot_names()
            .iter()
            .map(|name| candle_nn::linear(hidden, answers, vb.pp(name)))
            .collect::<candle_core::Result<_>>()?;
        Ok(IntermediateHeads { heads })
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

/// One batch's targets, per slot: the rows (u32) that have an answer there and those
/// answers' ids (u32), or `None` when no row has one.
pub struct IntermediateBatch {
    slots: Vec<Option<(Tensor, Tensor)>>,
}

/// The training scenes, by `image_index`, that the programs run on, the answer ids, and
/// which trace of the programs to read.
pub struct IntermediateTargets<'a> {
    scenes: ProgramScenes<'a>,
    answers: &'a AnswerIndex,
    trace: Trace,
}

impl<'a> IntermediateTargets<'a> {
    pub fn new(scenes: &'a [Scene], answers: &'a AnswerIndex, trace: Trace) -> Self {
        IntermediateTargets {
            scenes: ProgramScenes::new(scenes),
            answers,
            trace,
        }
    }

    /// The targets for the questions at `positions` of `set`. An answer the answer index
    /// does not hold (a count no question's answer is) is left unsupervised.
    pub fn batch(
        &self,
        set: &QuestionSet,
        positions: &[usize],
        device: &Device,
    ) -> Result<IntermediateBatch> {
        let mut slots: Vec<(Vec<u32>, Vec<u32>)> = vec![Default::default(); self.trace.slot_names().len()];
        for (row, &position) in positions.iter().enumerate() {
            let trace = self.trace;
            let found = self.scenes.run(set, position, trace.switch(), |program, scene| {
                trace.answers(program, scene)
            })?;
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
        Ok(IntermediateBatch {
            slots: slots
                .into_iter()
                .map(to_tensors)
                .collect::<candle_core::Result<_>>()?,
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
        let targets = IntermediateTargets::new(&scenes, &answers, Trace::IntermediateAnswers);
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
    fn referent_targets_are_each_picked_object_s_attributes_by_row() {
        let scenes = three_objects();
        // No "small": the objects' size is left unsupervised.
        let answers = AnswerIndex::build(["blue", "red", "cube", "sphere", "metal", "yes", "no"]);
        let targets = IntermediateTargets::new(&scenes, &answers, Trace::Referents);
        let unique = |shape: &str, at: usize| {
            [
                ProgramNode::new("scene", &[]),
                ProgramNode::with_value("filter_shape", &[at], shape),
                ProgramNode::new("unique", &[at + 1]),
            ]
        };
        let mut sphere_colour = unique("sphere", 0).to_vec();
        sphere_colour.push(ProgramNode::new("query_color", &[2]));
        let mut cube_colour_equals_sphere_colour = unique("cube", 0).to_vec();
        cube_colour_equals_sphere_colour.push(ProgramNode::new("query_color", &[2]));
        cube_colour_equals_sphere_colour.extend(unique("sphere", 4));
        cube_colour_equals_sphere_colour.extend([
            ProgramNode::new("query_color", &[6]),
            ProgramNode::new("equal_color", &[3, 7]),
        ]);
        let any_red = vec![
            ProgramNode::new("scene", &[]),
            ProgramNode::with_value("filter_color", &[0], "red"),
            ProgramNode::new("exist", &[1]),
        ];
        let set = questions(vec![sphere_colour, cube_colour_equals_sphere_colour, any_red]);
        let batch = targets.batch(&set, &[0, 1, 2], &Device::Cpu).unwrap();
        let id = |a: &str| answers.id(a).unwrap();
        let names = Trace::Referents.slot_names();
        let expected = [
            ("first_color", Some((vec![0, 1], vec![id("blue"), id("red")]))),
            ("first_shape", Some((vec![0, 1], vec![id("sphere"), id("cube")]))),
            (
                "first_material",
                Some((vec![0, 1], vec![id("metal"), id("metal")])),
            ),
            ("first_size", None),
            ("second_color", Some((vec![1], vec![id("blue")]))),
            ("second_shape", Some((vec![1], vec![id("sphere")]))),
            ("second_material", Some((vec![1], vec![id("metal")]))),
            ("second_size", None),
        ];
        assert_eq!(names.len(), expected.len());
        for (j, (name, slot_targets)) in expected.into_iter().enumerate() {
            assert_eq!(names[j], name);
            assert_eq!(slot(&batch, j), slot_targets, "{name}");
        }
    }

    #[test]
    fn a_count_outside_the_answers_is_unsupervised_and_missing_programs_are_an_error() {
        let scenes = three_objects();
        let answers = AnswerIndex::build(["0", "1", "no", "yes"]);
        let targets = IntermediateTargets::new(&scenes, &answers, Trace::IntermediateAnswers);
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
        let heads = IntermediateHeads::new(4, 3, Trace::IntermediateAnswers, vb).unwrap();
        let hidden = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let rows = Tensor::new(&[2u32], &Device::Cpu).unwrap();
        let ids = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let batch = IntermediateBatch {
            slots: vec![Some((rows.clone(), ids.clone())), None],
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
        let empty = IntermediateBatch {
            slots: vec![None, None],
        };
        assert!(heads.loss(&hidden, &empty).unwrap().is_none());
    }
}
