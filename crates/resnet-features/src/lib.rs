//! A torchvision ResNet cut after one of its stages, for inference.
//!
//! The FiLM paper's main model reads ResNet-101 features taken after its third stage
//! (torchvision's `layer3`, "conv4"): 1024 maps of 14 × 14 for a 224 × 224 image. This
//! crate builds that network from a safetensors copy of a torchvision `resnet101` state
//! dict, under the state dict's own names (`conv1.weight`, `layer3.22.bn3.running_var`, …),
//! and runs it on candle tensors.
//!
//! - [`ResNetConfig`]: the stages kept and their widths; [`ResNetConfig::resnet101_conv4`]
//!   is the paper's extractor.
//! - [`check_weights`]: whether a weights file holds every tensor the network needs, in
//!   the right shape, listing what is missing or mismatched when it does not.
//! - [`ResNet`]: the network. BatchNorm runs in evaluation mode, so it is folded into the
//!   convolution before it when the weights are loaded; the convolutions are film-conv's
//!   (im2col + GEMM on the CPU, cuDNN with the `cuda` feature).

mod config;
mod model;
mod weights;

pub use config::{ExpectedTensor, ResNetConfig};
pub use model::{Bottleneck, ConvBn, ResNet};
pub use weights::{check_weights, WeightsError};
