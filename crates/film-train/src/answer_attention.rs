//! Where the answer lies (`--attention-weight W`): a head on the last block's output
//! predicts, for each cell, whether an object the answer is about is centred there. The
//! objects come from running the question's program on its training scene
//! ([`clevr::executor::answer_objects`]: the counted set, the queried object, both sides of
//! a comparison), their cells from the scene's `pixel_coords`. Its loss, weighted by W, is
//! added to the answer's during training; at test time the head is unused.
//!
//! The blocks have to find those objects to answer at all; the head says which they are
//! at every cell, where the answer alone says only whether the end result was right. A
//! counted set marked on the grid is also what a mean over the grid can count.

use anyhow::Result;
use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use clevr::dataset::QuestionSet;
use clevr::executor::answer_objects;
use clevr::Scene;

use crate::perception::{SceneTargets, StemImage};
use crate::program_scenes::ProgramScenes;

/// A 1x1 convolution from the last block's channels to one score per cell.
pub struct AttentionHead {
    linear: Linear,
}

impl AttentionHead {
    pub fn new(channels: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(AttentionHead {
            linear: candle_nn::linear(channels, 1, vb)?,
        })
    }

    /// Scores (N·h·w,) for the last block's output (N, C, h, w), cells in row-major order
    /// within each question.
    pub fn forward(&self, blocks: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = blocks.dims4()?;
        let cells = blocks.permute((0, 2, 3, 1))?.reshape((n * h * w, c))?;
        self.linear.forward(&cells)?.flatten_all()
    }
}

/// The training scenes, by `image_index`, whose objects the programs select.
pub struct AnswerTargets<'a> {
    scenes: ProgramScenes<'a>,
}

impl<'a> AnswerTargets<'a> {
    pub fn new(scenes: &'a [Scene]) -> Self {
        AnswerTargets {
            scenes: ProgramScenes::new(scenes),
        }
    }

    /// 1 at the cells of the objects each question's answer is about, else 0, (N·h·w,) f32
    /// for the questions at `positions` of `set`, question i seeing `images[i]`.
    pub fn batch(
        &self,
        set: &QuestionSet,
        positions: &[usize],
        images: &[StemImage],
        cells: &SceneTargets,
        (h, w): (usize, usize),
        device: &Device,
    ) -> Result<Tensor> {
        let mut targets = vec![0f32; positions.len() * h * w];
        for (row, (&position, &image)) in positions.iter().zip(images).enumerate() {
            let objects = self
                .scenes
                .run(set, position, "--attention-weight", answer_objects)?;
            for cell in cells.object_cells(image, &objects, (h, w))? {
                targets[row * h * w + cell] = 1.0;
            }
        }
        Ok(Tensor::from_vec(targets, positions.len() * h * w, device)?)
    }
}

/// The head's loss: binary cross-entropy per cell, averaged.
pub fn loss(scores: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    crate::perception::stable_binary_cross_entropy(scores, targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perception::tests::{object, scene};
    use clevr::{Color, ProgramNode, Shape};

    #[test]
    fn targets_mark_the_cells_of_the_objects_the_answer_is_about() {
        // A 2x2 grid over the 480x320 image: a red cube top left, a blue sphere top
        // right, a red cylinder bottom right.
        let scenes = [scene(vec![
            object(10, 10, 9.0, Color::Red, Shape::Cube),
            object(470, 10, 9.0, Color::Blue, Shape::Sphere),
            object(470, 300, 9.0, Color::Red, Shape::Cylinder),
        ])];
        let count_red = vec![
            ProgramNode::new("scene", &[]),
            ProgramNode::with_value("filter_color", &[0], "red"),
            ProgramNode::new("count", &[1]),
        ];
        let sphere_colour = vec![
            ProgramNode::new("scene", &[]),
            ProgramNode::with_value("filter_shape", &[0], "sphere"),
            ProgramNode::new("unique", &[1]),
            ProgramNode::new("query_color", &[2]),
        ];
        let set = QuestionSet {
            image_index: vec![3, 3],
            programs: Some(vec![count_red, sphere_colour]),
            ..QuestionSet::default()
        };
        let cells = SceneTargets::from_scenes(&scenes, (480, 320)).unwrap();
        let targets = AnswerTargets::new(&scenes);
        let image = |mirrored| StemImage {
            image_index: 3,
            mirrored,
        };
        let t = targets
            .batch(
                &set,
                &[1, 0],
                &[image(false), image(true)],
                &cells,
                (2, 2),
                &Device::Cpu,
            )
            .unwrap();
        assert_eq!(
            t.to_vec1::<f32>().unwrap(),
            // The sphere's cell; then both red objects, in the mirrored image.
            [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
        );

        let without_programs = QuestionSet {
            programs: None,
            ..set
        };
        let err = targets
            .batch(
                &without_programs,
                &[0],
                &[image(false)],
                &cells,
                (2, 2),
                &Device::Cpu,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("loaded without programs"), "{err}");
    }

    #[test]
    fn the_head_scores_every_cell_of_every_question() {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
        let head = AttentionHead::new(6, vb).unwrap();
        let blocks = Tensor::ones((2, 6, 3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(head.forward(&blocks).unwrap().dims(), [24]);
    }
}
