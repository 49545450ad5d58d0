//! Fused FiLM forward and backward on NVIDIA GPUs: launchers for the kernels of `film.cu`.
//!
//! The kernels make the same single pass over memory as the CPU ones. Which kernels run,
//! with which grid and which arguments, is `launch_plan.rs`'s choice (run on the CPU
//! through cuda-emulator in its tests); here the operands' device addresses are put in
//! those calls and the kernels launched.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaView, DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{DType, Layout, Result};

use crate::launch_plan::{self, FilmBuffer, Variant, PACK_BYTES};
use crate::layout::{ChannelLayout, Geometry};
use kernel_launch::nvrtc::{self, CudaSource, Kernels};

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

fn aligned<T>(storage: &CudaStorage, views: &[&CudaView<'_, T>]) -> bool {
    let stream = storage.device.cuda_stream();
    views
        .iter()
        .all(|v| (v.device_ptr(&stream).0 as usize).is_multiple_of(PACK_BYTES))
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
        let call = launch_plan::forward(&geo, T::SUFFIX, variant, kernels.sm_count, relu, rs.is_some())?;
        let stream = device.cuda_stream();
        let (x_ptr, _x) = xs.device_ptr(&stream);
        let (params_ptr, _p) = ps.device_ptr(&stream);
        let residual_ptr = rs.as_ref().map(|r| r.device_ptr(&stream));
        let (y_ptr, _y) = y.device_ptr_mut(&stream);
        let mut given = vec![
            (FilmBuffer::X, x_ptr),
            (FilmBuffer::Params, params_ptr),
            (FilmBuffer::Y, y_ptr),
        ];
        given.extend(residual_ptr.as_ref().map(|(ptr, _)| (FilmBuffer::Residual, *ptr)));
        // SAFETY: the call is film.cu's own (launch_plan.rs, checked against the kernels on
        // the CPU); x, y and the residual hold `numel` values, params `param_len`.
        unsafe { kernels.launch(&stream, &call, |b| nvrtc::address_in(&given, b)) }?;
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
        let (calls, partial_len) = match geo.layout {
            ChannelLayout::ChannelsFirst => (
                vec![launch_plan::backward_channels_first(
                    &geo,
                    T::SUFFIX,
                    variant,
                    relu,
                )?],
                0,
            ),
            ChannelLayout::ChannelsLast => {
                let plan = launch_plan::backward_channels_last(
                    &geo,
                    T::SUFFIX,
                    variant,
                    std::mem::size_of::<T::Acc>(),
                    kernels.sm_count,
                    relu,
                )?;
                (vec![plan.partial, plan.finish], plan.chunks * geo.param_len())
            }
        };
        // SAFETY: every (chunk, example, channel) sum is written by the block that owns it
        // before the finish kernel reads it. Only the channels-last backward has one.
        let mut partial = match partial_len {
            0 => None,
            len => Some(unsafe { device.alloc::<T::Acc>(len) }?),
        };
        let stream = device.cuda_stream();
        let (mut dx, mut dparams) = out.split_at_mut(numel);
        let (x_ptr, _x) = xs.device_ptr(&stream);
        let (dy_ptr, _dy) = dys.device_ptr(&stream);
        let (params_ptr, _p) = ps.device_ptr(&stream);
        let (dx_ptr, _dx) = dx.device_ptr_mut(&stream);
        let (dparams_ptr, _dp) = dparams.device_ptr_mut(&stream);
        let partial_ptr = partial.as_mut().map(|p| p.device_ptr_mut(&stream));
        let mut given = vec![
            (FilmBuffer::X, x_ptr),
            (FilmBuffer::Dy, dy_ptr),
            (FilmBuffer::Params, params_ptr),
            (FilmBuffer::Dx, dx_ptr),
            (FilmBuffer::DParams, dparams_ptr),
        ];
        given.extend(partial_ptr.as_ref().map(|(ptr, _)| (FilmBuffer::Partial, *ptr)));
        for call in &calls {
            // SAFETY: the calls are film.cu's own (launch_plan.rs, checked against the
            // kernels on the CPU), in order on one stream; x, dy and dx hold `numel`
            // values, params and d(params) `param_len`, the partial sums one (N, 2C) block
            // per chunk.
            unsafe { kernels.launch(&stream, call, |b| nvrtc::address_in(&given, b)) }?;
        }
    }
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn film_kernels_compile_for_sm_90() {
        kernel_launch::nvrtc::assert_compiles_for_hopper(&super::SOURCE);
    }
}
