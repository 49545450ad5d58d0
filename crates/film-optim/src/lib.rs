//! The optimizer of film-rs's training: Adam with L2 weight decay exactly as PyTorch's
//! `torch.optim.Adam(weight_decay=…)`, whose update runs as three in-place passes per
//! variable on the CPU and, with the `cuda` feature, as CUDA kernels on NVIDIA GPUs.

mod adam;
// How adam.cu's kernels are launched; compiled for tests too, which run them on an emulator.
#[cfg(any(feature = "cuda", test))]
mod adam_launches;
#[cfg(feature = "cuda")]
mod cuda;

pub use adam::{Adam, AdamConfig};
