//! Adam's in-place passes ([`crate::adam`]) on NVIDIA GPUs: the kernels of `adam.cu`,
//! compiled at run time through film-layer's NVRTC loader (feature `cuda`).
//!
//! Composed from candle ops, one variable's update was a dozen element-wise kernels, each
//! allocating its output; here it is three passes, each reading every operand once.

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorage, WrapErr};
use candle_core::{Layout, Result};
use film_layer::nvrtc::{self, CudaSource};

static SOURCE: CudaSource = CudaSource {
    name: "adam.cu",
    code: include_str!("adam.cu"),
};

/// Threads per block.
const THREADS: u32 = 256;
/// Resident blocks per multiprocessor the grid-stride loops aim for.
const BLOCKS_PER_SM: u32 = 8;

/// The operation's name in errors.
const OP: &str = "adam";

/// The kernels and a grid-stride launch over `len` values, or `None` when there is nothing
/// to do.
fn config(
    storage: &CudaStorage,
    len: usize,
) -> Result<Option<(std::sync::Arc<nvrtc::Kernels>, LaunchConfig)>> {
    if len == 0 {
        return Ok(None);
    }
    let kernels = nvrtc::kernels(&storage.device, &SOURCE)?;
    let config = kernels.grid_stride(len, THREADS, BLOCKS_PER_SM);
    Ok(Some((kernels, config)))
}

/// The moment update of [`crate::adam`]'s `MomentUpdate`, on CUDA.
#[allow(clippy::too_many_arguments)]
pub(crate) fn moment(
    moment: (&mut CudaStorage, &Layout),
    grad: (&CudaStorage, &Layout),
    param: (&CudaStorage, &Layout),
    decay: f32,
    rest: f32,
    weight_decay: f32,
    squared: bool,
) -> Result<()> {
    let (grad, param) = (
        nvrtc::contiguous::<f32>(grad.0, grad.1, OP)?,
        nvrtc::contiguous::<f32>(param.0, param.1, OP)?,
    );
    let Some((kernels, config)) = config(moment.0, grad.len())? else {
        return Ok(());
    };
    let stream = moment.0.device.cuda_stream();
    let mut moment = nvrtc::contiguous_mut::<f32>(moment.0, moment.1, OP)?;
    if grad.len() != moment.len() || param.len() != moment.len() {
        candle_core::bail!("Adam: moment, gradient and parameter sizes differ");
    }
    let func = kernels.function("adam_moment_f32")?;
    let (len, squared) = (moment.len() as u64, squared as i32);
    let mut launch = stream.launch_builder(&func);
    launch
        .arg(&mut moment)
        .arg(&grad)
        .arg(&param)
        .arg(&len)
        .arg(&decay)
        .arg(&rest)
        .arg(&weight_decay)
        .arg(&squared);
    // SAFETY: the arguments match `adam_moment_f32`, and all three vectors hold `len` values.
    unsafe { launch.launch(config) }.w()?;
    Ok(())
}

/// The parameter update of [`crate::adam`]'s `ParameterUpdate`, on CUDA.
pub(crate) fn parameter(
    param: (&mut CudaStorage, &Layout),
    m: (&CudaStorage, &Layout),
    v: (&CudaStorage, &Layout),
    (learning_rate, bias1, bias2, eps): (f32, f32, f32, f32),
) -> Result<()> {
    let (m, v) = (
        nvrtc::contiguous::<f32>(m.0, m.1, OP)?,
        nvrtc::contiguous::<f32>(v.0, v.1, OP)?,
    );
    let Some((kernels, config)) = config(param.0, m.len())? else {
        return Ok(());
    };
    let stream = param.0.device.cuda_stream();
    let mut param = nvrtc::contiguous_mut::<f32>(param.0, param.1, OP)?;
    if m.len() != param.len() || v.len() != param.len() {
        candle_core::bail!("Adam: parameter and moment sizes differ");
    }
    let func = kernels.function("adam_parameter_f32")?;
    let len = param.len() as u64;
    let mut launch = stream.launch_builder(&func);
    launch
        .arg(&mut param)
        .arg(&m)
        .arg(&v)
        .arg(&len)
        .arg(&learning_rate)
        .arg(&bias1)
        .arg(&bias2)
        .arg(&eps);
    // SAFETY: the arguments match `adam_parameter_f32`, and all three vectors hold `len`
    // values.
    unsafe { launch.launch(config) }.w()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SOURCE;

    /// The kernels compile for Hopper: needs libnvrtc, not a GPU (`cargo test --features
    /// cuda` with the CUDA libraries on the path).
    #[test]
    fn adam_kernels_compile_for_sm_90() {
        let cubin = film_layer::nvrtc::compile(&SOURCE, (9, 0)).unwrap_or_else(|e| panic!("{e}"));
        assert!(cubin.starts_with(b"\x7fELF"), "a cubin is an ELF file");
    }
}
