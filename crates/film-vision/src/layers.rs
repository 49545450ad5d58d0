//! Convolutions, batch norms and linear layers initialised as the FiLM reference code does.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use film_conv::ConvParams;

/// PyTorch's default bias initialisation, U(-1/√fan_in, 1/√fan_in).
fn bias_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A convolution with bias, run by film-conv's kernels on the CPU (candle's elsewhere).
#[derive(Clone, Debug)]
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
    params: ConvParams,
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        film_conv::conv2d(x, &self.weight, Some(&self.bias), self.params)
    }
}

impl Conv {
    /// `relu(self.forward(x))`, the ReLU fused into the convolution where it runs on the
    /// project's kernels.
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        film_conv::conv2d_relu(x, &self.weight, Some(&self.bias), self.params)
    }

    pub(crate) fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub(crate) fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub(crate) fn params(&self) -> ConvParams {
        self.params
    }
}

/// A square convolution with bias; weights Kaiming-uniform as in the reference's
/// `init_modules`, bias as PyTorch's default.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv> {
    let weight = vb.get_with_hints(
        (out_channels, in_channels, kernel, kernel),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_UNIFORM,
    )?;
    let bias = vb.get_with_hints(out_channels, "bias", bias_init(in_channels * kernel * kernel))?;
    Ok(Conv {
        weight,
        bias,
        params: ConvParams { stride, padding },
    })
}

/// A linear layer; weights Kaiming-uniform as in the reference.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints(
        (out_dim, in_dim),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_UNIFORM,
    )?;
    let bias = vb.get_with_hints(out_dim, "bias", bias_init(in_dim))?;
    Ok(Linear::new(weight, Some(bias)))
}

/// Two coordinate maps (x along the width, y along the height, each from -1 to 1) for a
/// batch of `batch` feature maps of `height` x `width`: shape (N, 2, H, W).
pub fn coordinate_maps(batch: usize, height: usize, width: usize, like: &Tensor) -> Result<Tensor> {
    let ramp = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| {
                if n == 1 {
                    0.0
                } else {
                    -1.0 + 2.0 * i as f32 / (n - 1) as f32
                }
            })
            .collect()
    };
    let dev = like.device();
    let xs = Tensor::from_vec(ramp(width), (1, 1, 1, width), dev)?.broadcast_as((1, 1, height, width))?;
    let ys = Tensor::from_vec(ramp(height), (1, 1, height, 1), dev)?.broadcast_as((1, 1, height, width))?;
    Tensor::cat(&[xs, ys], 1)?
        .to_dtype(like.dtype())?
        .broadcast_as((batch, 2, height, width))?
        .contiguous()
}
