//! Fused FiLM forward and backward on NVIDIA GPUs: launchers for the kernels of `film.cu`.
//!
//! The kernels make the same single pass over memory as the CPU ones. Each launch picks
//! 16-byte packed accesses when every operand is 16-byte aligned and the rows split
//! evenly into packs, and 32-bit indexing when the tensor is small enough.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaView, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, CudaStorage, WrapErr};
use candle_core::{DType, Layout, Result};

use crate::layout::{ChannelLayout, Geometry};
use crate::nvrtc::{self, CudaSource, Kernels};

static SOURCE: CudaSource = CudaSource {
    name: "film.cu",
    code: include_str!("film.cu"),
};

fn kernels(device: &candle_core::cuda_backend::CudaDevice) -> Result<std::sync::Arc<Kernels>> {
    nvrtc::kernels(device, &SOURCE)
}

/// Failures of the CUDA path that candle has no error for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KernelError {
    #[error("{op}: {what} of {value} exceeds what a CUDA grid can address")]
    TooLarge {
        op: &'static str,
        what: &'static str,
        value: usize,
    },
}

/// Bytes moved per packed access.
const PACK_BYTES: usize = 16;
/// Threads per block of the element-wise and channels-last kernels.
const THREADS: u32 = 256;
/// Resident blocks per multiprocessor that the grid-stride forward aims for
/// (8 × 256 threads fill an SM); more blocks would only loop less.
const BLOCKS_PER_SM: u32 = 8;
/// Packs each forward thread handles per turn of its loop: `FWD_UNROLL` in film.cu.
const FORWARD_UNROLL: usize = 4;
/// Blocks per multiprocessor the channels-last backward splits positions into.
const CL_BACKWARD_BLOCKS_PER_SM: u32 = 4;

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
    const SUFFIX: &'static str;
    fn of(v: usize) -> Self;
}

impl Index for u32 {
    const SUFFIX: &'static str = "i32";
    fn of(v: usize) -> Self {
        v as u32
    }
}

impl Index for u64 {
    const SUFFIX: &'static str = "i64";
    fn of(v: usize) -> Self {
        v as u64
    }
}

/// Whether 32-bit indices suffice: every index the kernels form, plus one grid stride of
/// overshoot in the loops, stays below `u32::MAX`.
fn fits_u32(geo: &Geometry) -> bool {
    let headroom = 1usize << 28;
    geo.numel().max(geo.param_len()) < u32::MAX as usize - headroom
}

fn aligned<T>(storage: &CudaStorage, views: &[&CudaView<'_, T>]) -> bool {
    let stream = storage.device.cuda_stream();
    views
        .iter()
        .all(|v| (v.device_ptr(&stream).0 as usize).is_multiple_of(PACK_BYTES))
}

/// Values per packed access for `T`, or 1 when the packed kernels cannot be used.
fn pack_len<T>(geo: &Geometry, aligned: bool) -> usize {
    let pack = PACK_BYTES / std::mem::size_of::<T>();
    let row_splits = match geo.layout {
        ChannelLayout::ChannelsFirst => geo.spatial.is_multiple_of(pack),
        ChannelLayout::ChannelsLast => geo.channels.is_multiple_of(pack),
    };
    if aligned && row_splits {
        pack
    } else {
        1
    }
}

fn layout_suffix(geo: &Geometry) -> &'static str {
    match geo.layout {
        ChannelLayout::ChannelsFirst => "cf",
        ChannelLayout::ChannelsLast => "cl",
    }
}

fn grid_dim(op: &'static str, what: &'static str, blocks: usize) -> Result<u32> {
    u32::try_from(blocks)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            candle_core::Error::wrap(KernelError::TooLarge {
                op,
                what,
                value: blocks,
            })
        })
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
    if fits_u32(&geo) {
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
        let pack = pack_len::<T>(&geo, aligned(x.0, &operands));
        let name = format!(
            "film_fwd_{}_{}_{}_{}",
            T::SUFFIX,
            layout_suffix(&geo),
            if pack > 1 { "v" } else { "s" },
            I::SUFFIX
        );
        let func = kernels.function(&name)?;
        let packs = numel / pack;
        let blocks = packs
            .div_ceil(THREADS as usize * FORWARD_UNROLL)
            .min((kernels.sm_count * BLOCKS_PER_SM) as usize);
        let config = LaunchConfig {
            grid_dim: (grid_dim(OP, "blocks", blocks)?, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
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
        unsafe { launch.launch(config) }.w()?;
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
    if fits_u32(&geo) {
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
        let pack = pack_len::<T>(&geo, aligned(x.0, &[&xs, &dys, &ps]));
        let suffix = format!("{}_{}_{}", T::SUFFIX, if pack > 1 { "v" } else { "s" }, I::SUFFIX);
        let (mut dx, mut dparams) = out.split_at_mut(numel);
        let stream = device.cuda_stream();
        let (channels_i, spatial_i, relu_i) = (I::of(geo.channels), I::of(geo.spatial), relu as i32);
        match geo.layout {
            ChannelLayout::ChannelsFirst => {
                let func = kernels.function(&format!("film_bwd_cf_{suffix}"))?;
                // One block per (n, c) row: as many threads as the row has packs, in
                // whole warps, up to THREADS.
                let row_packs = (geo.spatial / pack).max(1);
                let threads = (row_packs.div_ceil(32) * 32).min(THREADS as usize) as u32;
                let config = LaunchConfig {
                    grid_dim: (grid_dim(OP, "rows", geo.rows())?, 1, 1),
                    block_dim: (threads, 1, 1),
                    shared_mem_bytes: 0,
                };
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
                unsafe { launch.launch(config) }.w()?;
            }
            ChannelLayout::ChannelsLast => {
                let func = kernels.function(&format!("film_bwd_cl_{suffix}"))?;
                let cvecs = geo.channels / pack;
                let bx = cvecs.clamp(1, 32);
                let by = THREADS as usize / bx;
                let tiles = cvecs.div_ceil(bx);
                let blocks_xy = geo.batch * tiles;
                // Split the positions into chunks so that the grid fills the device,
                // but give each thread at least a few positions to sum.
                let target = (kernels.sm_count * CL_BACKWARD_BLOCKS_PER_SM) as usize;
                let max_chunks = geo.spatial.div_ceil(4 * by).max(1);
                let chunks = target.div_ceil(blocks_xy).clamp(1, max_chunks.min(65_535));
                let chunk = geo.spatial.div_ceil(chunks).max(1);
                let chunks = geo.spatial.div_ceil(chunk).max(1);
                // SAFETY: every (chunk, example, channel) sum is written by the block
                // that owns it before the finish kernel reads it.
                let mut partial = unsafe { device.alloc::<T::Acc>(chunks * geo.param_len()) }?;
                let shared = 2 * by * bx * pack * std::mem::size_of::<T::Acc>();
                let config = LaunchConfig {
                    grid_dim: (grid_dim(OP, "example tiles", blocks_xy)?, 1, chunks as u32),
                    block_dim: (bx as u32, by as u32, 1),
                    shared_mem_bytes: shared as u32,
                };
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
                unsafe { launch.launch(config) }.w()?;

                let finish = kernels.function(&format!("film_bwd_cl_finish_{}", T::SUFFIX))?;
                let total = geo.param_len();
                let blocks = total
                    .div_ceil(THREADS as usize)
                    .min((kernels.sm_count * BLOCKS_PER_SM) as usize);
                let config = LaunchConfig {
                    grid_dim: (grid_dim(OP, "blocks", blocks)?, 1, 1),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                let (total_u, chunks_u) = (total as u64, chunks as u32);
                let mut launch = stream.launch_builder(&finish);
                launch
                    .arg(&partial)
                    .arg(&mut dparams)
                    .arg(&total_u)
                    .arg(&chunks_u);
                // SAFETY: arguments match `film_bwd_cl_finish_*`.
                unsafe { launch.launch(config) }.w()?;
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
