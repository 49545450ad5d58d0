//! The vision network's shape and the paper's architecture ablations, as one serde config.

use film_layer::GammaMode;
use serde::{Deserialize, Serialize};

/// What the network looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stem {
    /// RGB pixels, halved `downsamplings` times by 4x4 stride-2 convolutions (the paper's
    /// raw-pixel model: 4, from 224x224 to 14x14).
    Pixels { downsamplings: usize },
    /// Pre-extracted feature maps of `in_channels` channels (the paper: ResNet-101 conv4,
    /// 1024x14x14), projected by one 3x3 convolution.
    Features { in_channels: usize },
}

/// Where FiLM sits inside a residual block (the paper's Table 2, "moving FiLM").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilmPosition {
    /// conv3x3 → BN → FiLM → ReLU → + r: the paper's model.
    #[default]
    AfterNorm,
    /// conv3x3 → FiLM → BN → ReLU → + r.
    BeforeNorm,
    /// conv3x3 → BN → ReLU → FiLM → + r.
    AfterRelu,
    /// conv3x3 → BN → ReLU → + r → FiLM.
    AfterResidual,
    /// FiLM on the block input, before the 1x1 convolution.
    BeforeInputConv,
}

/// How the classifier reduces the spatial positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// The paper's: each channel's maximum over the positions.
    #[default]
    Max,
    /// Each channel's mean over the positions.
    Mean,
    /// Each channel's maximum and its mean side by side (twice the classifier's input).
    /// The mean is proportional to how many positions a channel fires at, which a count
    /// reads directly; the maximum only says whether one does.
    MaxMean,
    /// Each channel's maximum and the mean of its tanh side by side. The mean of the raw
    /// activation also grows with how strongly each position fires; the tanh saturates, so
    /// every position where a channel fires adds about the same, and the mean reads as a
    /// count of them.
    MaxCount,
}

impl Pool {
    /// Features the pool gives the classifier's hidden layer per projection channel.
    pub fn features_per_channel(self) -> usize {
        match self {
            Pool::Max | Pool::Mean => 1,
            Pool::MaxMean | Pool::MaxCount => 2,
        }
    }
}

/// What a block's residual connection adds to its FiLMed branch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResidualSource {
    /// The block's own 1x1 projection r = ReLU(conv1x1([x, coords])): the paper's block.
    #[default]
    Projection,
    /// The block's input x unchanged (an identity shortcut, as in ResNets). The stem's
    /// features then reach the classifier through no random projection at the start,
    /// which the lookup of a described object's attribute learns faster through.
    Input,
}

/// Options shared by every FiLMed residual block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockOptions {
    pub film_position: FilmPosition,
    /// How the generator's raw γ output becomes the scale.
    pub gamma: GammaMode,
    /// `false`: β fixed to 0.
    pub use_beta: bool,
    /// `false`: the block's output is its FiLMed branch alone.
    pub residual: bool,
    /// What the residual connection adds; absent in configs written before it existed.
    #[serde(default)]
    pub residual_source: ResidualSource,
    /// Each block also reads a summary of its whole input map, so that a cell can relate
    /// itself to objects beyond its receptive field (see [`crate::GlobalContext`]); off in
    /// the paper's block and in configs written before it existed.
    #[serde(default)]
    pub global_context: bool,
}

impl Default for BlockOptions {
    fn default() -> Self {
        BlockOptions {
            film_position: FilmPosition::AfterNorm,
            gamma: GammaMode::OnePlusDelta,
            use_beta: true,
            residual: true,
            residual_source: ResidualSource::Projection,
            global_context: false,
        }
    }
}

/// The FiLMed network; defaults follow the paper's CLEVR model on ResNet features.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub stem: Stem,
    /// Feature maps in the stem and every residual block (C).
    pub channels: usize,
    /// Channels of a pixel stem's convolutions before its last one, which gives
    /// `channels`; absent: `channels` throughout, as in the paper. The stem's first
    /// convolutions run at the highest resolution, so narrowing them is what makes a larger
    /// input affordable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem_width: Option<usize>,
    /// Stride of a pixel stem's first convolution, with a kernel twice as wide and half
    /// the stride of padding (the stride-2 convolution's 4x4 kernel and padding of 1, scaled);
    /// absent: 2, as the other convolutions. A stride of 4 reads a large input in patches
    /// at the cost of a stem for an input half its side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stem_first_stride: Option<usize>,
    /// Number of FiLMed residual blocks (K).
    pub num_blocks: usize,
    /// Which blocks FiLM conditions; an unconditioned block uses γ = 1, β = 0.
    pub conditioned: Vec<bool>,
    pub block: BlockOptions,
    /// Channels of the classifier's 1x1 projection.
    pub classifier_channels: usize,
    /// Width of the classifier's hidden layer.
    pub classifier_hidden: usize,
    pub pool: Pool,
    pub num_answers: usize,
}

impl VisionConfig {
    /// The paper's model on 1024x14x14 image features.
    pub fn paper_features(num_answers: usize) -> Self {
        VisionConfig {
            stem: Stem::Features { in_channels: 1024 },
            channels: 128,
            stem_width: None,
            stem_first_stride: None,
            num_blocks: 4,
            conditioned: vec![true; 4],
            block: BlockOptions::default(),
            classifier_channels: 512,
            classifier_hidden: 1024,
            pool: Pool::Max,
            num_answers,
        }
    }

    /// Checks the options against each other, naming the first inconsistency.
    pub fn validate(&self) -> Result<(), String> {
        if self.conditioned.len() != self.num_blocks {
            return Err(format!(
                "conditioned lists {} blocks but num_blocks is {}",
                self.conditioned.len(),
                self.num_blocks
            ));
        }
        if self.num_blocks == 0 || self.channels == 0 || self.num_answers == 0 {
            return Err("num_blocks, channels and num_answers must be positive".into());
        }
        if let Stem::Pixels { downsamplings: 0 } = self.stem {
            return Err("a pixel stem needs at least one downsampling convolution".into());
        }
        match (self.stem, self.stem_width) {
            (_, None) => {}
            (_, Some(0)) => return Err("stem_width must be positive".into()),
            (Stem::Features { .. }, Some(_)) => {
                return Err("stem_width is the width of a pixel stem; this one reads features".into())
            }
            (Stem::Pixels { .. }, Some(_)) => {}
        }
        match (self.stem, self.stem_first_stride) {
            (_, None) => {}
            (Stem::Features { .. }, Some(_)) => {
                return Err("stem_first_stride is a stride of a pixel stem; this one reads features".into())
            }
            (Stem::Pixels { .. }, Some(s)) if s < 2 || !s.is_multiple_of(2) => {
                return Err(format!(
                    "stem_first_stride {s}: it must be even and at least 2, so that the convolution's \
                     kernel (twice the stride) and padding (half of it) tile the input exactly"
                ))
            }
            (Stem::Pixels { .. }, Some(_)) => {}
        }
        Ok(())
    }
}
