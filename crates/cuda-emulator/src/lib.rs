//! The workspace's CUDA C kernels, run on the CPU so that tests can check their arithmetic
//! and indexing in every build, CI included, where no GPU is at hand.
//!
//! [`Module::compile`] compiles a kernel source (the same text NVRTC compiles on a GPU
//! machine) with the host's C++ compiler, after a prelude (`prelude.hpp`) that defines
//! the CUDA built-ins the workspace's kernels use. [`Module::launch`] runs a kernel the way
//! the GPU would: every thread of a block is an OS thread, running concurrently with the
//! others, `__syncthreads()` is a barrier over them, `__shared__` arrays are shared by the
//! block; blocks run one after another. The arguments are checked against the kernel's
//! parameter types, read from the source, and buffers ([`DeviceBuffer`]) carry guard zones
//! that report a kernel writing past either end.
//!
//! What it emulates: one-dimensional grids and blocks, `threadIdx`, `blockIdx`,
//! `blockDim`, `gridDim`, `__syncthreads()`, static `__shared__` arrays, and the C math
//! library's `expf`, `tanhf`, `sqrtf`, `fmaxf`… Not: warp shuffles and votes, atomics,
//! dynamic shared memory, textures, inline PTX, or the GPU's memory model beyond what a
//! barrier orders. The arithmetic is the CPU's: no fused multiply-adds unless the host
//! compiler makes them, and libm's `expf` rather than the GPU's, so results agree with the
//! GPU's to rounding, not bit for bit.
//!
//! Needs a C++20 compiler: `$CXX`, else `c++`.
//!
//! ```
//! use cuda_emulator::{Arg, DeviceBuffer, Module};
//!
//! let source = r#"
//! extern "C" __global__ void scale(float* y, const float* x, float a, unsigned int n)
//! {
//!     for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
//!         y[i] = a * x[i];
//!     }
//! }
//! "#;
//! let module = Module::compile("scale.cu", source)?;
//! let x = DeviceBuffer::from_slice("x", &[1.0, 2.0, 3.0]);
//! let y = DeviceBuffer::uninit("y", 3);
//! module.launch("scale", 2, 2, &[Arg::buffer(&y), Arg::buffer(&x), 2.0f32.into(), 3u32.into()])?;
//! assert_eq!(y.values(), [2.0, 4.0, 6.0]);
//! # Ok::<(), cuda_emulator::EmulatorError>(())
//! ```

mod buffer;
mod module;
mod signature;

pub use buffer::{DeviceBuffer, UNWRITTEN};
pub use module::{Arg, Module};
pub use signature::{Kernel, Param, ParamType};

/// What went wrong compiling or launching emulated kernels.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("{source_name}:{line}: {detail}")]
    Signature {
        source_name: String,
        line: usize,
        detail: String,
    },
    #[error(
        "cannot run the C++ compiler `{compiler}` to emulate {source_name} on the CPU: {detail} \
         (set CXX to a C++20 compiler)"
    )]
    NoCompiler {
        compiler: String,
        source_name: String,
        detail: String,
    },
    #[error("`{compiler}` could not compile {source_name} for the CPU emulator:\n{log}")]
    Compile {
        compiler: String,
        source_name: String,
        log: String,
    },
    #[error("cannot load the emulated {source_name}: {detail}")]
    Load { source_name: String, detail: String },
    #[error("{source_name} has no kernel `{kernel}` (it has: {known})")]
    UnknownKernel {
        source_name: String,
        kernel: String,
        known: String,
    },
    #[error("{kernel}: {detail}")]
    Arguments { kernel: String, detail: String },
}
