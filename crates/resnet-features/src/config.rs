//! Which part of a ResNet is built, and the tensors its weights file must hold.

/// A ResNet of bottleneck blocks as torchvision builds it (ResNet v1.5: the stride sits on
/// each stage's first 3 × 3 convolution), cut after its last listed stage.
///
/// The stem is a 7 × 7 convolution of stride 2 and a 3 × 3 max pool of stride 2. Stage `i`
/// has `stage_blocks[i]` blocks; each block narrows to `stage_widths[i]` channels and
/// widens back to `stage_widths[i] * expansion`. The first stage keeps the resolution,
/// every later one halves it in its first block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResNetConfig {
    pub stem_channels: usize,
    pub stage_blocks: Vec<usize>,
    pub stage_widths: Vec<usize>,
    pub expansion: usize,
}

/// One tensor a weights file must hold: its state-dict name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedTensor {
    pub name: String,
    pub shape: Vec<usize>,
}

/// The BatchNorm epsilon of torchvision's ResNets.
pub(crate) const BATCH_NORM_EPS: f64 = 1e-5;

/// The parameters and statistics of one BatchNorm layer, in state-dict order.
pub(crate) const BATCH_NORM_TENSORS: [&str; 4] = ["weight", "bias", "running_mean", "running_var"];

impl ResNetConfig {
    /// ResNet-101 up to the end of its third stage (`layer3`): the FiLM paper's image
    /// features, 1024 channels at a sixteenth of the input's side.
    pub fn resnet101_conv4() -> Self {
        ResNetConfig {
            stem_channels: 64,
            stage_blocks: vec![3, 4, 23],
            stage_widths: vec![64, 128, 256],
            expansion: 4,
        }
    }

    /// Channels of the output feature maps.
    pub fn output_channels(&self) -> usize {
        self.stage_widths
            .last()
            .map_or(self.stem_channels, |w| w * self.expansion)
    }

    /// The side of the output maps for an input of side `input` (the same arithmetic as
    /// the convolutions' and the pool's output sizes).
    pub fn output_side(&self, input: usize) -> usize {
        let strided =
            |side: usize, kernel: usize, padding: usize| (side + 2 * padding).saturating_sub(kernel) / 2 + 1;
        let mut side = strided(strided(input, 7, 3), 3, 1);
        for _ in self.stage_blocks.iter().skip(1) {
            side = strided(side, 3, 1);
        }
        side
    }

    /// Channels entering each block, in order, with the block's stage index and stride.
    pub(crate) fn blocks(&self) -> Vec<BlockPlan> {
        let mut plans = Vec::new();
        let mut channels = self.stem_channels;
        for (stage, (&blocks, &width)) in self.stage_blocks.iter().zip(&self.stage_widths).enumerate() {
            for index in 0..blocks {
                let stride = if stage > 0 && index == 0 { 2 } else { 1 };
                let output = width * self.expansion;
                plans.push(BlockPlan {
                    prefix: format!("layer{}.{index}", stage + 1),
                    input: channels,
                    width,
                    output,
                    stride,
                });
                channels = output;
            }
        }
        plans
    }

    /// Every tensor the network reads, by its torchvision state-dict name. A full state dict
    /// holds more (later stages, the classifier, `num_batches_tracked`); those are not read.
    pub fn expected_tensors(&self) -> Vec<ExpectedTensor> {
        let mut tensors = Vec::new();
        let mut conv_bn = |conv: String, bn: String, shape: [usize; 4]| {
            tensors.push(ExpectedTensor {
                name: format!("{conv}.weight"),
                shape: shape.to_vec(),
            });
            for field in BATCH_NORM_TENSORS {
                tensors.push(ExpectedTensor {
                    name: format!("{bn}.{field}"),
                    shape: vec![shape[0]],
                });
            }
        };
        conv_bn("conv1".into(), "bn1".into(), [self.stem_channels, 3, 7, 7]);
        for block in self.blocks() {
            let BlockPlan {
                prefix,
                input,
                width,
                output,
                ..
            } = &block;
            conv_bn(
                format!("{prefix}.conv1"),
                format!("{prefix}.bn1"),
                [*width, *input, 1, 1],
            );
            conv_bn(
                format!("{prefix}.conv2"),
                format!("{prefix}.bn2"),
                [*width, *width, 3, 3],
            );
            conv_bn(
                format!("{prefix}.conv3"),
                format!("{prefix}.bn3"),
                [*output, *width, 1, 1],
            );
            if block.has_projection() {
                conv_bn(
                    format!("{prefix}.downsample.0"),
                    format!("{prefix}.downsample.1"),
                    [*output, *input, 1, 1],
                );
            }
        }
        tensors
    }
}

/// One bottleneck block's place in the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockPlan {
    /// `layer{stage}.{index}`, the block's state-dict prefix.
    pub prefix: String,
    pub input: usize,
    pub width: usize,
    pub output: usize,
    pub stride: usize,
}

impl BlockPlan {
    /// A block whose output differs from its input in shape adds a projection of its input
    /// (torchvision's `downsample`: a 1 × 1 convolution and BatchNorm) instead of the input.
    pub fn has_projection(&self) -> bool {
        self.stride != 1 || self.input != self.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet101_conv4_reads_the_torchvision_names_up_to_layer3() {
        let config = ResNetConfig::resnet101_conv4();
        let tensors = config.expected_tensors();
        let shape_of = |name: &str| {
            tensors
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.shape.clone())
                .unwrap_or_else(|| panic!("{name} not expected"))
        };
        assert_eq!(shape_of("conv1.weight"), [64, 3, 7, 7]);
        assert_eq!(shape_of("layer1.0.downsample.0.weight"), [256, 64, 1, 1]);
        assert_eq!(shape_of("layer3.0.conv2.weight"), [256, 256, 3, 3]);
        assert_eq!(shape_of("layer3.22.bn3.running_var"), [1024]);
        assert!(tensors
            .iter()
            .all(|t| !t.name.starts_with("layer4") && !t.name.starts_with("fc")));
        // 1 stem + 30 blocks of 3 convolutions + 3 projections, each with 4 BatchNorm tensors.
        assert_eq!(tensors.len(), (1 + 30 * 3 + 3) * 5);
        assert!(!tensors.iter().any(|t| t.name == "layer1.1.downsample.0.weight"));
        assert_eq!(config.output_channels(), 1024);
        assert_eq!(config.output_side(224), 14);
    }
}
