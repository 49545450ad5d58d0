//! The scene bottleneck (`--scene-bottleneck`): the FiLMed blocks read what the perception
//! head sees instead of the stem's own features. Per cell, that is the probability that an
//! object's centre lies there, and that probability times the probabilities of each colour,
//! shape, material and size. A conv → BatchNorm → ReLU then maps these maps to the blocks'
//! channels.
//!
//! Why: with the ground-truth scene in this form as its input, the same FiLM network
//! learns to reason far sooner than it does from pixels (docs/results.md). The head learns to
//! see from the scene graphs within a few thousand steps, so the blocks get nearly that input
//! early on. The head's scores stay differentiable, so the answers' loss trains the stem
//! through them as well. The model still sees only the image and the question at test time.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;
use film_vision::ConvNormRelu;

use crate::perception::{CLASSES, HEAD_OUTPUTS};

/// The perception head's scores to the blocks' input.
pub struct SceneBottleneck {
    embed: ConvNormRelu,
}

impl SceneBottleneck {
    /// A 3×3 convolution from the head's [`HEAD_OUTPUTS`] maps to `channels`, as the
    /// features stem reads its input; weights under `embed.` in `vb`.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(SceneBottleneck {
            embed: ConvNormRelu::new(HEAD_OUTPUTS, channels, 3, 1, 1, vb.pp("embed"))?,
        })
    }

    /// The blocks' input (M, C, h, w) from the head's scores (M·h·w, HEAD_OUTPUTS) for M
    /// images on an h × w grid, cells in row-major order within each image.
    pub fn forward_t(
        &self,
        scores: &Tensor,
        (m, h, w): (usize, usize, usize),
        train: bool,
    ) -> Result<Tensor> {
        let maps = scene_probabilities(scores)?
            .reshape((m, h, w, HEAD_OUTPUTS))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        self.embed.forward_t(&maps, train)
    }
}

/// Per cell: the objectness probability (a sigmoid), then each attribute's softmax
/// scaled by it, so that a cell without an object reads near zero everywhere, as the
/// rasterised ground-truth scene does.
pub fn scene_probabilities(scores: &Tensor) -> Result<Tensor> {
    let objectness = (scores.narrow(D::Minus1, 0, 1)?.neg()?.exp()? + 1.0)?.recip()?;
    let mut parts = vec![objectness.clone()];
    let mut offset = 1;
    for classes in CLASSES {
        let logits = scores.narrow(D::Minus1, offset, classes)?;
        parts.push(candle_nn::ops::softmax(&logits, D::Minus1)?.broadcast_mul(&objectness)?);
        offset += classes;
    }
    Tensor::cat(&parts, D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn probabilities_are_objectness_times_each_attributes_softmax() {
        // One cell sure of an object whose attributes are the first of each group, one
        // sure of none.
        let mut scores = vec![-30f32; 2 * HEAD_OUTPUTS];
        scores[0] = 30.0;
        let mut offset = 1;
        for classes in CLASSES {
            scores[offset] = 30.0;
            offset += classes;
        }
        let scores = Tensor::from_vec(scores, (2, HEAD_OUTPUTS), &Device::Cpu).unwrap();
        let p = scene_probabilities(&scores).unwrap().to_vec2::<f32>().unwrap();
        let mut expected = vec![0f32; HEAD_OUTPUTS];
        expected[0] = 1.0;
        let mut offset = 1;
        for classes in CLASSES {
            expected[offset] = 1.0;
            offset += classes;
        }
        for (got, want) in p[0].iter().zip(&expected) {
            assert!((got - want).abs() < 1e-6, "{:?}", p[0]);
        }
        assert!(p[1].iter().all(|v| v.abs() < 1e-6), "{:?}", p[1]);

        // Uncertain scores: each group sums to the objectness probability.
        let scores = Tensor::new(&[[0f32; HEAD_OUTPUTS]], &Device::Cpu).unwrap();
        let p = scene_probabilities(&scores).unwrap().to_vec2::<f32>().unwrap();
        assert!((p[0][0] - 0.5).abs() < 1e-6);
        let mut offset = 1;
        for classes in CLASSES {
            let sum: f32 = p[0][offset..offset + classes].iter().sum();
            assert!((sum - 0.5).abs() < 1e-6, "{sum}");
            offset += classes;
        }
    }

    #[test]
    fn the_bottleneck_maps_scores_to_the_blocks_channels_and_passes_gradients() {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let bottleneck = SceneBottleneck::new(8, vb).unwrap();
        let scores = candle_core::Var::from_tensor(
            &Tensor::randn(0f32, 1.0, (2 * 3 * 4, HEAD_OUTPUTS), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let out = bottleneck.forward_t(scores.as_tensor(), (2, 3, 4), true).unwrap();
        assert_eq!(out.dims(), [2, 8, 3, 4]);
        let grads = out.sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(scores.as_tensor())
            .expect("a gradient for the head's scores");
        assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    }
}
