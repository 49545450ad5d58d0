//! Fused FiLM forward and backward on NVIDIA GPUs: launchers for the kernels of `film.cu`.
//!
//! The kernels make the same single pass over memory as the CPU ones. Which kernel runs
//! with which grid is `launch_plan.rs`'s choice (tested on the CPU through cuda-emulator);
//! here the operands are pushed and the kernels launched.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaView, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, CudaStorage, WrapErr};
use candle_core::{DType, Layout, Result};

use crate::launch_plan::{self, Launch, Variant, PACK_BYTES};
use crate::layout::{ChannelLayout, Geometry};
use crate::nvrtc::{self, CudaSource, Kernels};

static SOURCE: CudaSource = CudaSource {
    name: "film.cu",
    code: include_str!("film.cu"),
};

fn kernels(device: &candle_core::cuda_backend::CudaDevice) -> Result<std::sync::Arc<Kernels>> {
    nvrtc::kernels(device, &SOURCE)
}

/// A storage element the kernels support, with the names and accumulator the
/// kernels use for it.
pub(crate) trait Element: CudaDType + DeviceRepr + candle_core::WithDType {
    /// The type partial gradient sums are kept in.
    type Acc: DeviceRepr;
    const SUFFIX: &'static str;
}

impl Element for f32 {
    type Acc = f32;
    const SUFFIX: &'static str = "f32";
}

impl Element for f64 {
    type Acc = f64;
    const SUFFIX: &'static str = "f64";
}

impl Element for half::f16 {
    type Acc = f32;
    const SUFFIX: &'static str = "f16";
}

impl Element for half::bf16 {
    type Acc = f32;
    const SUFFIX: &'static str = "bf16";
}

/// Integer type of the kernels' indices.
trait Index: DeviceRepr + Copy {
    fn of(v: usize) -> Self;
}

impl Index for u32 {
    fn of(v: usize) -> Self {
        v as u32
    }
}

impl Index for u64 {
    fn of(v: usize) -> Self {
        v as u64
    }
}

fn aligned<T>(storage: &CudaStorage, views: &[&CudaView<'_, T>]) -> bool {
    let stream = storage.device.cuda_stream();
    views
        .iter()
        .all(|v| (v.device_ptr(&stream).0 as usize).is_multiple_of(PACK_BYTES))
}

fn config(launch: &Launch) -> LaunchConfig {
    LaunchConfig {
        grid_dim: launch.grid,
        block_dim: launch.block,
        shared_mem_bytes: launch.shared_bytes,
    }
}

/// Dispatches on the storage dtype to `$f::<T>`.
macro_rules! by_dtype {
    ($storage:expr, $op:expr, $f:ident($($arg:expr),*)) => {
        match $storage.dtype() {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            DType::F16 => $f::<half::f16>($($arg),*),
            DType::BF16 => $f::<half::bf16>($($arg),*),
            other => Err(candle_core::Error::UnsupportedDTypeForOp(other, $op)),
        }
    };
}

type Operand<'a> = (&'a CudaStorage, &'a Layout);

/// y = relu?(γ ⊙ x + β) + residual?, with `params` the packed (N, 2C) matrix (γ | β).
pub(crate) fn forward(
    geo: Geometry,
    relu: bool,
    x: Operand<'_>,
    params: Operand<'_>,
    residual: Option<Operand<'_>>,
) -> Result<CudaStorage> {
    by_dtype!(x.0, "film-fused", forward_typed(geo, relu, x, params, residual))
}

fn forward_typed<T: Element>(
    geo: Geometry,
    relu: bool,
    x: Operand<'_>,
    params: Operand<'_>,
    residual: Option<Operand<'_>>,
) -> Result<CudaStorage> {
    if launch_plan::fits_u32(&geo) {
        forward_indexed::<T, u32>(geo, relu, x, params, residual)
    } else {
        forward_indexed::<T, u64>(geo, relu, x, params, residual)
    }
}

fn forward_indexed<T: Element, I: Index>(
    geo: Geometry,
    relu: bool,
    x: Operand<'_>,
    params: Operand<'_>,
    residual: Option<Operand<'_>>,
) -> Result<CudaStorage> {
    const OP: &str = "film-fused";
    let device = &x.0.device;
    let xs = nvrtc::contiguous::<T>(x.0, x.1, OP)?;
    let ps = nvrtc::contiguous::<T>(params.0, params.1, OP)?;
    let rs = residual
        .map(|(s, l)| nvrtc::contiguous::<T>(s, l, OP))
        .transpose()?;
    let numel = geo.numel();
    // SAFETY: the kernel writes every element before anything reads it.
    let mut y = unsafe { device.alloc::<T>(numel) }?;
    if numel > 0 {
        let kernels = kernels(device)?;
        let mut operands = vec![&xs, &ps];
        operands.extend(rs.as_ref());
        let variant = Variant::choose(&geo, std::mem::size_of::<T>(), aligned(x.0, &operands));
        debug_assert_eq!(variant.wide_index, std::mem::size_of::<I>() == 8);
        let plan = launch_plan::forward(&geo, T::SUFFIX, variant, kernels.sm_count)?;
        let func = kernels.function(&plan.kernel)?;
        // Without a residual the kernel never reads its residual pointer; x stands in.
        let residual_arg = rs.as_ref().unwrap_or(&xs);
        let (numel_i, channels_i, spatial_i) = (I::of(numel), I::of(geo.channels), I::of(geo.spatial));
        let (relu_i, has_residual_i) = (relu as i32, rs.is_some() as i32);
        let stream = device.cuda_stream();
        let mut launch = stream.launch_builder(&func);
        launch
            .arg(&xs)
            .arg(&ps)
            .arg(residual_arg)
            .arg(&mut y)
            .arg(&numel_i)
            .arg(&channels_i)
            .arg(&spatial_i)
            .arg(&relu_i)
            .arg(&has_residual_i);
        // SAFETY: the argument list matches the kernel's signature in film.cu; every
        // operand holds `numel` (x, residual) or `param_len` (params) values.
        unsafe { launch.launch(config(&plan)) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(y, device.clone()))
}

/// dx followed by d(params), as one vector of `numel + param_len` values.
pub(crate) fn backward(
    geo: Geometry,
    relu: bool,
    x: Operand<'_>,
    dy: Operand<'_>,
    params: Operand<'_>,
) -> Result<CudaStorage> {
    by_dtype!(
        x.0,
        "film-fused-backward",
        backward_typed(geo, relu, x, dy, params)
    )
}

fn backward_typed<T: Element>(
    geo: Geometry,
    relu: bool,
    x: Operand<'_>,
    dy: Operand<'_>,
    params: Operand<'_>,
) -> Result<CudaStorage> {
    if launch_plan::fits_u32(&geo) {
        backward_indexed::<T, u32>(geo, relu, x, dy, params)
    } else {
        backward_indexed::<T, u64>(geo, relu, x, dy, params)
    }
}

fn backward_indexed<T: Element, I: Index>(
    geo: Geometry,
    relu: bool,
    x: Operand<'_>,
    dy: Operand<'_>,
    params: Operand<'_>,
) -> Result<CudaStorage> {
    const OP: &str = "film-fused-backward";
    let device = &x.0.device;
    let xs = nvrtc::contiguous::<T>(x.0, x.1, OP)?;
    let dys = nvrtc::contiguous::<T>(dy.0, dy.1, OP)?;
    let ps = nvrtc::contiguous::<T>(params.0, params.1, OP)?;
    let numel = geo.numel();
    // SAFETY: the kernels write every element of dx and of d(params) (rows of zero
    // length included, whose sums are written as 0).
    let mut out = unsafe { device.alloc::<T>(numel + geo.param_len()) }?;
    if geo.param_len() > 0 {
        let kernels = kernels(device)?;
        let variant = Variant::choose(&geo, std::mem::size_of::<T>(), aligned(x.0, &[&xs, &dys, &ps]));
        debug_assert_eq!(variant.wide_index, std::mem::size_of::<I>() == 8);
        let (mut dx, mut dparams) = out.split_at_mut(numel);
        let stream = device.cuda_stream();
        let (channels_i, spatial_i, relu_i) = (I::of(geo.channels), I::of(geo.spatial), relu as i32);
        match geo.layout {
            ChannelLayout::ChannelsFirst => {
                let plan = launch_plan::backward_channels_first(&geo, T::SUFFIX, variant)?;
                let func = kernels.function(&plan.kernel)?;
                let mut launch = stream.launch_builder(&func);
                launch
                    .arg(&xs)
                    .arg(&dys)
                    .arg(&ps)
                    .arg(&mut dx)
                    .arg(&mut dparams)
                    .arg(&channels_i)
                    .arg(&spatial_i)
                    .arg(&relu_i);
                // SAFETY: arguments match `film_bwd_cf_*`; the grid covers every row.
                unsafe { launch.launch(config(&plan)) }.w()?;
            }
            ChannelLayout::ChannelsLast => {
                let plan = launch_plan::backward_channels_last(
                    &geo,
                    T::SUFFIX,
                    variant,
                    std::mem::size_of::<T::Acc>(),
                    kernels.sm_count,
                )?;
                let func = kernels.function(&plan.partial.kernel)?;
                let (chunks, chunk) = (plan.chunks, plan.chunk);
                // SAFETY: every (chunk, example, channel) sum is written by the block
                // that owns it before the finish kernel reads it.
                let mut partial = unsafe { device.alloc::<T::Acc>(chunks * geo.param_len()) }?;
                let (batch_i, chunk_i) = (I::of(geo.batch), I::of(chunk));
                let mut launch = stream.launch_builder(&func);
                launch
                    .arg(&xs)
                    .arg(&dys)
                    .arg(&ps)
                    .arg(&mut dx)
                    .arg(&mut partial)
                    .arg(&batch_i)
                    .arg(&channels_i)
                    .arg(&spatial_i)
                    .arg(&chunk_i)
                    .arg(&relu_i);
                // SAFETY: arguments match `film_bwd_cl_*`; `partial` holds one (N, 2C)
                // block per chunk; the shared memory fits both sums of every thread.
                unsafe { launch.launch(config(&plan.partial)) }.w()?;

                let finish = kernels.function(&plan.finish.kernel)?;
                let total = geo.param_len();
                let (total_u, chunks_u) = (total as u64, chunks as u32);
                let mut launch = stream.launch_builder(&finish);
                launch
                    .arg(&partial)
                    .arg(&mut dparams)
                    .arg(&total_u)
                    .arg(&chunks_u);
                // SAFETY: arguments match `film_bwd_cl_finish_*`.
                unsafe { launch.launch(config(&plan.finish)) }.w()?;
            }
        }
    }
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}

#[cfg(test)]
mod tests {
    use super::SOURCE;

    /// The kernels compile for Hopper: needs libnvrtc, not a GPU, so a CUDA build checks it
    /// on any machine (`cargo test --features cuda` with the CUDA libraries on the path).
    #[test]
    fn film_kernels_compile_for_sm_90() {
        let cubin = crate::nvrtc::compile(&SOURCE, (9, 0)).unwrap_or_else(|e| panic!("{e}"));
        assert!(cubin.starts_with(b"\x7fELF"), "a cubin is an ELF file");
    }
}
