//! The network: stem, bottleneck blocks, and the model that composes them, in the order
//! torchvision runs them.

use crate::config::{BlockPlan, ResNetConfig, BATCH_NORM_EPS};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use film_conv::ConvParams;

/// A convolution without bias followed by BatchNorm in evaluation mode, which is one
/// convolution with a bias: each output channel's weights scaled by γ / √(σ² + ε), and the
/// bias β − μ γ / √(σ² + ε). Folded in f64 when the weights are read.
#[derive(Debug, Clone)]
pub struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    params: ConvParams,
}

impl ConvBn {
    /// Reads `weight` (out, in, k, k) under `conv`, and BatchNorm's `weight`, `bias`,
    /// `running_mean` and `running_var` (out) under `norm`.
    pub fn new(
        (in_channels, out_channels, kernel): (usize, usize, usize),
        params: ConvParams,
        conv: VarBuilder,
        norm: VarBuilder,
    ) -> Result<Self> {
        let f64_tensor = |vb: &VarBuilder, shape: &[usize], name: &str| -> Result<Tensor> {
            vb.get(shape, name)?.to_dtype(DType::F64)
        };
        let weight = f64_tensor(&conv, &[out_channels, in_channels, kernel, kernel], "weight")?;
        let gamma = f64_tensor(&norm, &[out_channels], "weight")?;
        let beta = f64_tensor(&norm, &[out_channels], "bias")?;
        let mean = f64_tensor(&norm, &[out_channels], "running_mean")?;
        let variance = f64_tensor(&norm, &[out_channels], "running_var")?;
        let scale = (gamma / (variance + BATCH_NORM_EPS)?.sqrt()?)?;
        let weight = weight.broadcast_mul(&scale.reshape((out_channels, 1, 1, 1))?)?;
        let bias = (beta - (mean * &scale)?)?;
        Ok(ConvBn {
            weight: weight.to_dtype(DType::F32)?,
            bias: bias.to_dtype(DType::F32)?,
            params,
        })
    }
}

impl Module for ConvBn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        film_conv::conv2d(x, &self.weight, Some(&self.bias), self.params)
    }
}

/// A bottleneck block: 1 × 1 down to the block's width, 3 × 3 (with the stride), 1 × 1 back
/// up, plus the input or its projection, then ReLU.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    narrow: ConvBn,
    spatial: ConvBn,
    widen: ConvBn,
    projection: Option<ConvBn>,
}

impl Bottleneck {
    fn new(plan: &BlockPlan, vb: &VarBuilder) -> Result<Self> {
        let vb = vb.pp(&plan.prefix);
        let one = ConvParams::default();
        let conv_bn = |channels, params, conv: &str, norm: &str| {
            ConvBn::new(channels, params, vb.pp(conv), vb.pp(norm))
        };
        let projection = if plan.has_projection() {
            let downsample = vb.pp("downsample");
            Some(ConvBn::new(
                (plan.input, plan.output, 1),
                ConvParams {
                    stride: plan.stride,
                    padding: 0,
                },
                downsample.pp("0"),
                downsample.pp("1"),
            )?)
        } else {
            None
        };
        Ok(Bottleneck {
            narrow: conv_bn((plan.input, plan.width, 1), one, "conv1", "bn1")?,
            spatial: conv_bn(
                (plan.width, plan.width, 3),
                ConvParams {
                    stride: plan.stride,
                    padding: 1,
                },
                "conv2",
                "bn2",
            )?,
            widen: conv_bn((plan.width, plan.output, 1), one, "conv3", "bn3")?,
            projection,
        })
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.narrow.forward(x)?.relu()?;
        let y = self.spatial.forward(&y)?.relu()?;
        let y = self.widen.forward(&y)?;
        let shortcut = match &self.projection {
            Some(projection) => projection.forward(x)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }
}

/// The network of a [`ResNetConfig`]: (N, 3, H, W) normalised images in, (N,
/// `output_channels`, h, w) feature maps out.
#[derive(Debug, Clone)]
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<Bottleneck>,
}

impl ResNet {
    /// Reads the weights under their torchvision state-dict names from `vb` (any float
    /// dtype; the network computes in f32). Check the file with [`crate::check_weights`]
    /// first for an error that lists every problem at once.
    pub fn new(config: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        let stem = ConvBn::new(
            (3, config.stem_channels, 7),
            ConvParams {
                stride: 2,
                padding: 3,
            },
            vb.pp("conv1"),
            vb.pp("bn1"),
        )?;
        let blocks = config
            .blocks()
            .iter()
            .map(|plan| Bottleneck::new(plan, &vb))
            .collect::<Result<_>>()?;
        Ok(ResNet { stem, blocks })
    }
}

impl Module for ResNet {
    fn forward(&self, images: &Tensor) -> Result<Tensor> {
        // torchvision pads the 3 × 3 max pool with -∞; repeating the edge row and column
        // instead gives the same maximum, since every window that reaches over the edge
        // also holds the edge itself.
        let mut x = self
            .stem
            .forward(images)?
            .relu()?
            .pad_with_same(D::Minus1, 1, 1)?
            .pad_with_same(D::Minus2, 1, 1)?
            .max_pool2d_with_stride(3, 2)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        Ok(x)
    }
}
