//! The plumbing the workspace's CUDA kernels share, kept out of the crates' public APIs
//! (film-layer's is FiLM alone).
//!
//! - [`cpu`]: an operand's values as one contiguous slice, and outputs allocated without
//!   zero-filling, for the fused CPU ops.
//! - [`kernel_call`]: one kernel launch as plain data (name, grid, typed arguments). The
//!   CUDA launchers build these, and their tests run the very same descriptions through
//!   `cuda-emulator` on the CPU, so argument lists are checked in every build.
//! - `emulator` (feature `emulator`, for tests): the same kernel calls run on the CPU by
//!   `cuda-emulator`, and each source compiled for it once per process.
//! - [`test_values`]: deterministic inputs for the kernels' checks.
//! - `nvrtc` (feature `cuda`): CUDA C sources compiled at run time for the device they run
//!   on, loaded once per device, and the launch of a [`kernel_call::KernelCall`] with each
//!   buffer at its device address.

pub mod cpu;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod kernel_call;
#[cfg(feature = "cuda")]
pub mod nvrtc;
pub mod test_values;
