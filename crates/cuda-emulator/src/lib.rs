//! The workspace's CUDA C kernels, run on the CPU so that tests can check their arithmetic
//! and indexing in every build, CI included, where no GPU is at hand.
//!
//! [`Module::compile`] compiles a kernel source (the same text NVRTC compiles on a GPU
//! machine) with the host's C++ compiler, after a prelude (`prelude.hpp`) that defines
//! the CUDA built-ins the workspace's kernels use. [`Module::launch`] runs a kernel as the
//! GPU would, block after block: every thread of a block is a fiber that runs until it
//! returns from the kernel or reaches a barrier; `__syncthreads()` releases when every
//! thread of the block still running has reached it, a warp shuffle when every such thread
//! of the warp has; `__shared__` arrays are shared by the block and start every block full
//! of NaN bytes, as a shuffle reading a lane that has returned does. Runs are deterministic, and
//! a barrier that some threads never reach is reported at once
//! ([`EmulatorError::Deadlock`]) instead of hanging. Because each thread runs as far as it
//! can before the next one starts, a missing `__syncthreads()` shows as wrong results
//! every time, not now and then.
//!
//! The kernels' parameter types are read from the source and resolved by the C++ compiler,
//! and every launch's arguments are checked against them (a `u64` where the kernel takes
//! `unsigned int`, or f64 values where it takes `const float*`, is refused, naming the
//! parameter). Buffers ([`DeviceBuffer`]) are aligned as `cudaMalloc` aligns them and carry
//! guard zones: a kernel writing past either end is reported, one reading past it reads
//! NaN, as does one reading memory nothing wrote.
//!
//! What it emulates: grids and blocks in up to three dimensions, `threadIdx`, `blockIdx`,
//! `blockDim`, `gridDim`, `__syncthreads()`, `__shfl_down_sync` over whole warps (full
//! mask), shared arrays (`__shared__ T name[N];`, `extern __shared__ T name[];`, up to
//! Hopper's 227 KiB per block), `__align__`, `__uint_as_float` and
//! `__float_as_uint`, f16 conversions for kernels that write `#ifdef CUDA_EMULATOR` around
//! their inline PTX, and the C math library. Not: other warp intrinsics, atomics, textures,
//! inline PTX, or the GPU's memory model beyond what a barrier orders. The arithmetic is
//! the CPU's (no fused multiply-adds unless the host compiler makes them, libm's `expf`),
//! so results agree with the GPU's to rounding, not bit for bit.
//!
//! Needs a C++20 compiler with `_Float16` (`$CXX`, else `c++`: GCC 12 or later, Clang 15
//! or later) and the C library's `ucontext` functions (glibc has them; musl does not).
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
//! let x = DeviceBuffer::from_slice("x", &[1.0f32, 2.0, 3.0]);
//! let y = DeviceBuffer::<f32>::uninit("y", 3);
//! module.launch("scale", 2, 2, &[Arg::buffer(&y), Arg::buffer(&x), 2.0f32.into(), 3u32.into()])?;
//! assert_eq!(y.values(), [2.0, 4.0, 6.0]);
//! # Ok::<(), cuda_emulator::EmulatorError>(())
//! ```

mod buffer;
mod module;
mod signature;

pub use buffer::{DeviceBuffer, Element};
pub use module::{Arg, Dim3, Module};
pub use signature::{Kernel, Param};

/// What went wrong compiling or launching emulated kernels.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("{source_name}: {detail}")]
    Signature { source_name: String, detail: String },
    #[error(
        "cannot run the C++ compiler `{compiler}` to emulate {source_name} on the CPU: {detail} \
         (set CXX to a C++20 compiler)"
    )]
    NoCompiler {
        compiler: String,
        source_name: String,
        detail: String,
    },
    #[error("`{compiler}` could not {step} {source_name} for the CPU emulator:\n{log}")]
    Compile {
        compiler: String,
        step: &'static str,
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
    #[error("{kernel} deadlocked: {detail}")]
    Deadlock { kernel: String, detail: String },
}
