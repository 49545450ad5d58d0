//! The GRU recurrence of [`crate::recurrence`] on NVIDIA GPUs (feature `cuda`).
//!
//! The same algorithm as on the CPU, in the order `schedule.rs` writes down (and its tests
//! check on a CPU emulator), with cuBLAS for the products and the gate kernels of `gru.cu`
//! (compiled at run time by NVRTC, through kernel-launch's loader) for the rest:
//! - forward: the input projection of every step as one product, then per step one product
//!   h_{t-1}·W_hhᵀ and one gate kernel;
//! - backward: per step one gate kernel and one product that carries the gradient through
//!   W_hh to the step before; then every weight gradient as one product over all steps, and
//!   the bias gradients as products with a vector of ones.
//!
//! Composed from candle ops, every step was a dozen kernels, and the backward accumulated
//! each weight gradient step by step into a fresh 3H × H buffer: at the paper's 4096 units
//! the encoder, its backward above all, was most of a `paper-features` GPU training step
//! (docs/gpu.md has the figures).
//!
//! The products follow candle's `set_gemm_reduced_precision_f32` switch, as every other f32
//! product of the model does: TF32 tensor cores when it is on, full f32 otherwise.

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{Layout, Result};
use kernel_launch::kernel_call::KernelCall;
use kernel_launch::nvrtc::{self, CudaSource, Kernels};

use crate::recurrence::{gates::KEPT, Dims};
use crate::schedule::{self, At, BackwardStep, Buffer, ColumnMajorGemm, ForwardStep, Machine};

static SOURCE: CudaSource = CudaSource {
    name: "gru.cu",
    code: include_str!("gru.cu"),
};

/// A contiguous f32 operand and its layout.
pub(crate) type Operand<'a> = (&'a CudaStorage, &'a Layout);

fn int(what: &'static str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        candle_core::Error::Msg(format!(
            "GRU on CUDA: {what} {value} exceeds what cuBLAS takes (i32)"
        ))
    })
}

/// The f32 values of a contiguous operand.
fn values<'a>((storage, layout): Operand<'a>) -> Result<CudaView<'a, f32>> {
    nvrtc::contiguous::<f32>(storage, layout, "gru-layer")
}

/// The schedule's [`Machine`] on one CUDA device: the buffers' device addresses, gru.cu's
/// kernels and the cuBLAS handle.
struct Gpu {
    d: Dims,
    addresses: Vec<(Buffer, u64)>,
    blas: Arc<CudaBlas>,
    stream: Arc<CudaStream>,
    kernels: Arc<Kernels>,
}

impl Gpu {
    fn new(device: &CudaDevice, d: Dims) -> Result<Gpu> {
        // CUDA allocations cannot be empty.
        if d.batch == 0 || d.hidden == 0 || d.input == 0 || d.steps == 0 {
            candle_core::bail!(
                "GRU on CUDA: empty operand (batch {}, steps {}, hidden {}, input {})",
                d.batch,
                d.steps,
                d.hidden,
                d.input
            );
        }
        // The kernels index one step's rows in 32 bits, the fill T·N values.
        let largest = (d.batch * d.hidden).max(d.batch * d.steps);
        if largest > u32::MAX as usize / 2 {
            candle_core::bail!("GRU on CUDA: {largest} values per step exceed 32-bit indexing");
        }
        Ok(Gpu {
            d,
            addresses: Vec::new(),
            blas: device.cublas_handle(),
            stream: device.cuda_stream(),
            kernels: nvrtc::kernels(device, &SOURCE)?,
        })
    }

    /// The device address of `at`.
    fn address(&self, at: At) -> Result<u64> {
        match self.addresses.iter().find(|(buffer, _)| *buffer == at.buffer) {
            Some((_, base)) => Ok(base + (at.offset * std::mem::size_of::<f32>()) as u64),
            None => candle_core::bail!(
                "GRU on CUDA: the schedule used {:?}, which this pass did not provide",
                at.buffer
            ),
        }
    }

    /// Launches `call`, one of gru.cu's kernels as schedule.rs plans it.
    ///
    /// # Safety
    /// The addresses the call uses must hold the rows the kernel reads and writes.
    unsafe fn launch(&self, call: KernelCall<At>) -> Result<()> {
        // SAFETY: as the caller guarantees; the call's arguments are gru.cu's own (checked
        // against the kernels on the CPU by schedule.rs's tests).
        unsafe { self.kernels.launch(&self.stream, &call, |at| self.address(*at)) }
    }
}

// SAFETY (every method): the addresses come from buffers the caller of `schedule::forward` or
// `schedule::backward` keeps alive and sized as those functions document, which is how the
// schedule addresses them (checked on the CPU emulator by schedule.rs's tests); every
// launch is on the device's one stream, so each reads what the previous ones wrote.
impl Machine for Gpu {
    fn gemm(&mut self, g: ColumnMajorGemm) -> Result<()> {
        use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        let op = |t: bool| if t { CUBLAS_OP_T } else { CUBLAS_OP_N };
        let compute = if candle_core::cuda_backend::gemm_reduced_precision_f32() {
            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        let (alpha, beta) = (1.0f32, g.beta);
        let f32_type = blas_sys::cudaDataType_t::CUDA_R_32F;
        let (a, b, c) = (self.address(g.a)?, self.address(g.b)?, self.address(g.c)?);
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                op(g.trans_a),
                op(g.trans_b),
                int("rows", g.m)?,
                int("columns", g.n)?,
                int("inner size", g.k)?,
                (&alpha as *const f32).cast(),
                a as *const _,
                f32_type,
                int("leading dimension", g.lda)?,
                b as *const _,
                f32_type,
                int("leading dimension", g.ldb)?,
                (&beta as *const f32).cast(),
                c as *mut _,
                f32_type,
                int("leading dimension", g.ldc)?,
                compute,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
            )
        }
        .w()
    }

    fn forward_step(&mut self, s: ForwardStep, first: bool) -> Result<()> {
        unsafe { self.launch(s.kernel_call(self.d, first, self.kernels.sm_count)) }
    }

    fn backward_step(&mut self, s: BackwardStep, first: bool) -> Result<()> {
        unsafe { self.launch(s.kernel_call(self.d, first, self.kernels.sm_count)) }
    }

    fn fill_ones(&mut self, at: At, len: usize) -> Result<()> {
        unsafe { self.launch(schedule::fill_ones_call(at, len, self.kernels.sm_count)) }
    }
}

/// The forward: every step's state (T, N, H) and the kept gates (T, N, 4H), from `inputs`
/// (T, N, E), `weight_hh` (3H, H) and `packed` (W_ih, b_ih, b_hh).
pub(crate) fn forward(
    d: Dims,
    inputs: Operand<'_>,
    weight_hh: Operand<'_>,
    packed: Operand<'_>,
) -> Result<(CudaStorage, CudaSlice<f32>)> {
    let device = &inputs.0.device;
    let mut gpu = Gpu::new(device, d)?;
    let (x, w_hh, packed) = (values(inputs)?, values(weight_hh)?, values(packed)?);
    let (rows, h) = (d.steps * d.batch, d.hidden);
    // SAFETY: the schedule writes every element of these before it reads it: `projected`
    // whole, then per step one (N, 3H) `hh`, (N, H) states and (N, 4H) kept rows.
    let (mut projected, mut states, mut kept, mut hh) = unsafe {
        (
            device.alloc::<f32>(rows * 3 * h)?,
            device.alloc::<f32>(rows * h)?,
            device.alloc::<f32>(rows * KEPT * h)?,
            device.alloc::<f32>(d.batch * 3 * h)?,
        )
    };
    {
        let stream = gpu.stream.clone();
        let (x_ptr, _x) = x.device_ptr(&stream);
        let (w_hh_ptr, _w) = w_hh.device_ptr(&stream);
        let (packed_ptr, _p) = packed.device_ptr(&stream);
        let (projected_ptr, _pr) = projected.device_ptr_mut(&stream);
        let (states_ptr, _s) = states.device_ptr_mut(&stream);
        let (kept_ptr, _k) = kept.device_ptr_mut(&stream);
        let (hh_ptr, _h) = hh.device_ptr_mut(&stream);
        gpu.addresses = vec![
            (Buffer::Inputs, x_ptr),
            (Buffer::WeightHh, w_hh_ptr),
            (Buffer::Packed, packed_ptr),
            (Buffer::Projected, projected_ptr),
            (Buffer::States, states_ptr),
            (Buffer::Kept, kept_ptr),
            (Buffer::Hh, hh_ptr),
        ];
        schedule::forward(d, &mut gpu)?;
    }
    Ok((CudaStorage::wrap_cuda_slice(states, device.clone()), kept))
}

/// The gradients of one call: d inputs (T, N, E) when asked for, d weight_hh (3H, H) and
/// d packed (W_ih, b_ih, b_hh).
pub(crate) struct Gradients {
    pub inputs: Option<CudaStorage>,
    pub weight_hh: CudaStorage,
    pub packed: CudaStorage,
}

/// The backward, from the forward's operands, its states and kept gates, and the gradient
/// reaching the states.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    d: Dims,
    inputs: Operand<'_>,
    weight_hh: Operand<'_>,
    packed: Operand<'_>,
    states: Operand<'_>,
    kept: &CudaSlice<f32>,
    grad_states: Operand<'_>,
    want_inputs: bool,
) -> Result<Gradients> {
    let device = &inputs.0.device;
    let mut gpu = Gpu::new(device, d)?;
    let (x, w_hh, packed) = (values(inputs)?, values(weight_hh)?, values(packed)?);
    let (states, grad_states) = (values(states)?, values(grad_states)?);
    let (rows, h, input) = (d.steps * d.batch, d.hidden, d.input);
    // As the schedule requires: d W_hh and the carried gradient start at zero.
    let mut grad_w_hh = device.alloc_zeros::<f32>(3 * h * h)?;
    let mut next = device.alloc_zeros::<f32>(d.batch * h)?;
    // SAFETY: the schedule writes every element of these before it reads it: each step's
    // (N, 3H) rows of both projection gradients, the ones, and each output product whole
    // (beta = 0).
    let (mut grad_x, mut grad_hh, mut ones, mut grad_packed) = unsafe {
        (
            device.alloc::<f32>(rows * 3 * h)?,
            device.alloc::<f32>(rows * 3 * h)?,
            device.alloc::<f32>(rows)?,
            device.alloc::<f32>(3 * h * input + 6 * h)?,
        )
    };
    // Token embeddings are trained, so the inputs usually want a gradient; a frozen
    // embedding spares the product.
    // SAFETY: as above (one product writes it whole).
    let mut grad_inputs = match want_inputs {
        true => Some(unsafe { device.alloc::<f32>(rows * input)? }),
        false => None,
    };
    {
        let stream = gpu.stream.clone();
        let (x_ptr, _x) = x.device_ptr(&stream);
        let (w_hh_ptr, _w) = w_hh.device_ptr(&stream);
        let (packed_ptr, _p) = packed.device_ptr(&stream);
        let (states_ptr, _s) = states.device_ptr(&stream);
        let (grad_states_ptr, _gs) = grad_states.device_ptr(&stream);
        let (kept_ptr, _k) = kept.device_ptr(&stream);
        let (grad_x_ptr, _gx) = grad_x.device_ptr_mut(&stream);
        let (grad_hh_ptr, _gh) = grad_hh.device_ptr_mut(&stream);
        let (next_ptr, _n) = next.device_ptr_mut(&stream);
        let (grad_w_hh_ptr, _gw) = grad_w_hh.device_ptr_mut(&stream);
        let (ones_ptr, _o) = ones.device_ptr_mut(&stream);
        let (grad_packed_ptr, _gp) = grad_packed.device_ptr_mut(&stream);
        let grad_inputs_ptr = grad_inputs.as_mut().map(|g| g.device_ptr_mut(&stream));
        gpu.addresses = vec![
            (Buffer::Inputs, x_ptr),
            (Buffer::WeightHh, w_hh_ptr),
            (Buffer::Packed, packed_ptr),
            (Buffer::States, states_ptr),
            (Buffer::GradStates, grad_states_ptr),
            (Buffer::Kept, kept_ptr),
            (Buffer::GradX, grad_x_ptr),
            (Buffer::GradHh, grad_hh_ptr),
            (Buffer::Next, next_ptr),
            (Buffer::GradWeightHh, grad_w_hh_ptr),
            (Buffer::Ones, ones_ptr),
            (Buffer::GradPacked, grad_packed_ptr),
        ];
        if let Some((ptr, _)) = &grad_inputs_ptr {
            gpu.addresses.push((Buffer::GradInputs, *ptr));
        }
        schedule::backward(d, want_inputs, &mut gpu)?;
    }
    let wrap = |slice| CudaStorage::wrap_cuda_slice(slice, device.clone());
    Ok(Gradients {
        inputs: grad_inputs.map(wrap),
        weight_hh: wrap(grad_w_hh),
        packed: wrap(grad_packed),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn gate_kernels_compile_for_sm_90() {
        kernel_launch::nvrtc::assert_compiles_for_hopper(&super::SOURCE);
    }
}
