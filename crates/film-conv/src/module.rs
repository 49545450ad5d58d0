//! A convolution layer with learnt weight and bias, checkpoint-compatible
//! with `candle_nn::Conv2d`.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::geometry::ConvParams;

/// Sizes and options of one [`Conv2d`] layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Square kernels, as every layer of the FiLM trunk.
    pub kernel_size: usize,
    pub stride: usize,
    pub padding: usize,
    /// A learnt per-channel bias; layers followed by BatchNorm can do without.
    pub bias: bool,
}

impl Conv2dConfig {
    /// Stride 1, no padding, with bias (the defaults of `nn.Conv2d`).
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: 0,
            bias: true,
        }
    }

    pub fn with_stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    pub fn with_padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }

    pub fn with_bias(self, bias: bool) -> Self {
        Self { bias, ..self }
    }

    pub fn params(&self) -> ConvParams {
        ConvParams {
            stride: self.stride,
            padding: self.padding,
        }
    }
}

/// `y = conv2d(x, weight) + bias`; the fast kernels on CPU f32, candle's
/// convolution elsewhere (see [`crate::conv2d`]).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: ConvParams,
}

impl Conv2d {
    /// Reads (or, with a `VarMap`, creates) `weight` (out, in, k, k) and
    /// `bias` (out) under `vb`, with `candle_nn::conv2d`'s initialisation:
    /// Kaiming-normal weights, bias uniform in ±1/sqrt(in_channels).
    pub fn new(config: Conv2dConfig, vb: VarBuilder) -> Result<Self> {
        let Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size: k,
            ..
        } = config;
        let weight = vb.get_with_hints(
            (out_channels, in_channels, k, k),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bias = if config.bias {
            let bound = 1.0 / (in_channels as f64).sqrt();
            let init = Init::Uniform {
                lo: -bound,
                up: bound,
            };
            Some(vb.get_with_hints(out_channels, "bias", init)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            params: config.params(),
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn params(&self) -> ConvParams {
        self.params
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::conv2d(x, &self.weight, self.bias.as_ref(), self.params)
    }
}
