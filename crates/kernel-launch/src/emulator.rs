//! The CUDA kernels' tests on the CPU (feature `emulator`): each crate's kernel source,
//! compiled once per test process by `cuda-emulator`, runs the very [`KernelCall`]s its
//! CUDA launcher builds, so argument lists and indexing are checked where no GPU is.

pub use cuda_emulator::{Arg, DeviceBuffer, Element, EmulatorError, Module};

use crate::kernel_call::KernelCall;

/// Runs `call` on `module` and returns when it has finished, each buffer the call names
/// passed as `buffer` makes it.
pub fn launch<'a, B>(
    module: &Module,
    call: &KernelCall<B>,
    buffer: impl FnMut(&B) -> Arg<'a>,
) -> Result<(), EmulatorError> {
    let args = call.args_as(buffer);
    module.launch_with_shared(&call.kernel, call.grid, call.block, call.shared_bytes, &args)
}

/// `&'static Module`: the CUDA C source `$code`, named `$name` in messages, compiled for
/// the CPU on first use and kept for the rest of the process (tests share it). Panics with
/// the compiler's message when the source does not compile.
#[macro_export]
macro_rules! emulated_kernels {
    ($name:expr, $code:expr $(,)?) => {{
        static MODULE: ::std::sync::OnceLock<$crate::emulator::Module> = ::std::sync::OnceLock::new();
        MODULE
            .get_or_init(|| $crate::emulator::Module::compile($name, $code).unwrap_or_else(|e| panic!("{e}")))
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_call::KernelArg;

    const SOURCE: &str = r#"
extern "C" __global__ void scale(float *x, unsigned int n, float by) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        x[i] *= by;
    }
}
"#;

    #[test]
    fn a_kernel_call_runs_on_the_emulator_with_its_buffers_and_scalars() {
        let modules: Vec<*const Module> = (0..2)
            .map(|_| crate::emulated_kernels!("scale.cu", SOURCE) as *const Module)
            .collect();
        assert_eq!(modules[0], modules[1], "compiled once, on first use");
        let kernels = crate::emulated_kernels!("scale.cu", SOURCE);
        let x = DeviceBuffer::from_slice("x", &[1f32, 2.0, 3.0, 4.0, 5.0]);
        let call = KernelCall::grid_stride(
            "scale",
            5,
            (2, 1),
            1,
            vec![KernelArg::Buffer(()), KernelArg::U32(5), KernelArg::F32(3.0)],
        );
        launch(kernels, &call, |()| Arg::buffer(&x)).unwrap();
        assert_eq!(x.values(), [3.0, 6.0, 9.0, 12.0, 15.0]);

        let wrong = KernelCall {
            args: vec![KernelArg::Buffer(()), KernelArg::U64(5), KernelArg::F32(3.0)],
            ..call
        };
        let err = launch(kernels, &wrong, |()| Arg::buffer(&x))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scale"), "{err}");
    }
}
