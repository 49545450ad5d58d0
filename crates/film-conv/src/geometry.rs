//! Sizes of one 2-D convolution, checked once so that the kernels can index
//! without re-validating.

use candle_core::Shape;

use crate::error::ConvError;

/// Stride and zero padding, the same on both spatial axes (as candle's
/// `conv2d`). Dilation and groups are always 1 here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    pub stride: usize,
    pub padding: usize,
}

impl Default for ConvParams {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
        }
    }
}

/// All sizes of a convolution `x (N, C_in, H, W) * w (C_out, C_in, KH, KW)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
    pub out_h: usize,
    pub out_w: usize,
}

fn dims4(what: &'static str, shape: &Shape) -> Result<(usize, usize, usize, usize), ConvError> {
    match *shape.dims() {
        [a, b, c, d] => Ok((a, b, c, d)),
        _ => Err(ConvError::Rank {
            what,
            shape: shape.clone(),
        }),
    }
}

impl ConvGeometry {
    /// Geometry of the forward convolution of an input of shape `x` with a
    /// weight of shape `w`.
    pub fn new(x: &Shape, w: &Shape, params: ConvParams) -> Result<Self, ConvError> {
        let (batch, in_channels, in_h, in_w) = dims4("input", x)?;
        let (out_channels, w_in, kernel_h, kernel_w) = dims4("weight", w)?;
        let ConvParams { stride, padding } = params;
        if w_in != in_channels {
            return Err(ConvError::ChannelMismatch {
                input: in_channels,
                expected: w_in,
                weight: w.clone(),
            });
        }
        if stride == 0 {
            return Err(ConvError::ZeroStride { stride });
        }
        let (padded_h, padded_w) = (in_h + 2 * padding, in_w + 2 * padding);
        if kernel_h > padded_h || kernel_w > padded_w || kernel_h == 0 || kernel_w == 0 {
            return Err(ConvError::KernelTooLarge {
                kernel_h,
                kernel_w,
                in_h,
                in_w,
                padding,
            });
        }
        Ok(Self {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            kernel_h,
            kernel_w,
            stride,
            padding,
            out_h: (padded_h - kernel_h) / stride + 1,
            out_w: (padded_w - kernel_w) / stride + 1,
        })
    }

    /// Checks that `shape` is the output of this convolution (used for the
    /// incoming gradient in the backward ops).
    pub fn check_output(&self, what: &'static str, shape: &Shape) -> Result<(), ConvError> {
        let expected = Shape::from((self.batch, self.out_channels, self.out_h, self.out_w));
        if shape != &expected {
            return Err(ConvError::ShapeMismatch {
                what,
                got: shape.clone(),
                expected,
            });
        }
        Ok(())
    }

    pub fn input_shape(&self) -> Shape {
        Shape::from((self.batch, self.in_channels, self.in_h, self.in_w))
    }

    pub fn weight_shape(&self) -> Shape {
        Shape::from((self.out_channels, self.in_channels, self.kernel_h, self.kernel_w))
    }

    pub fn output_shape(&self) -> Shape {
        Shape::from((self.batch, self.out_channels, self.out_h, self.out_w))
    }

    /// Rows of the unfolded input: one per (input channel, ky, kx), in the
    /// order of the weight's flattened trailing dimensions.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    pub fn in_plane(&self) -> usize {
        self.in_h * self.in_w
    }

    pub fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }

    pub fn in_image_len(&self) -> usize {
        self.in_channels * self.in_plane()
    }

    pub fn out_image_len(&self) -> usize {
        self.out_channels * self.out_plane()
    }

    /// A 1x1, stride-1, unpadded convolution reads its input as the unfolded
    /// matrix itself: no im2col/col2im pass is needed.
    pub fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == 1 && self.padding == 0
    }
}
