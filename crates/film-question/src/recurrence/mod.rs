//! The GRU's recurrence over a whole sequence as one differentiable candle op (f32, on the
//! CPU, and on NVIDIA GPUs with the `cuda` feature: `cuda/mod.rs`).
//!
//! Composed from candle ops, every time step adds a dozen small tensors to the autograd
//! graph, and the backward pass accumulates each weight gradient step by step into freshly
//! allocated buffers, which makes it cost several times the forward (docs/benchmarks.md,
//! "The training step", change 2). Here the forward is one GEMM plus a gate loop per step,
//! and the backward is back-propagation through time in place, with the weight gradient as
//! a single GEMM over all steps at the end.
//!
//! Gate order and equations are PyTorch's:
//!   r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r ⊙ h_n), h' = (1 - z) ⊙ n + z ⊙ h
//! where x = W_ih·input + b_ih and h_* = W_hh·h + b_hh. The product W_ih·input is computed
//! outside, for all steps at once; both biases are added inside, in the gate loop, so that
//! neither the forward nor the backward makes a separate pass over the (T, N, 3H)
//! projections for them.
//!
//! Here: the op ([`gru_layer`], its `CustomOp3`, [`supports`]); `cpu.rs` the CPU passes
//! through time; `gates.rs` one question's gates at one step; `matmul.rs` the dense
//! products, transposes and sums they use; `cuda.rs` the backward's hand-over to the GPU
//! passes of `crate::cuda`.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub(crate) mod gates;
mod matmul;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use std::sync::Mutex;

/// A GRU layer over a whole sequence: `inputs` (T, N, E) time-major, `weight_hh` (3H, H),
/// and `packed` = W_ih (3H, E) flattened, then b_ih and b_hh (3H each) → every step's
/// hidden state (T, N, H), starting from h = 0. Time-major keeps each step's rows
/// contiguous for the per-step matrix products.
///
/// The input projection W_ih·x is computed inside the op: as a candle product of its own,
/// its (T·N, 3H) output was a graph node whose gradient candle accumulates into a
/// zero-filled buffer, two single-threaded passes over the largest tensor of the encoder.
/// W_ih travels packed with the biases because a custom op takes at most three tensors.
///
/// Row i is a sequence of `lengths[i]` steps; only its states up to there are defined by
/// the GRU. On the CPU the steps past a row's length are skipped: its state stays the last
/// one (so a batch's padding costs no recurrent work). On CUDA every row runs all T steps
/// through its padding. The states within each row's length are the same either way.
pub fn gru_layer(inputs: &Tensor, weight_hh: &Tensor, packed: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    let (steps, batch, _) = inputs.dims3()?;
    if lengths.len() != batch || lengths.iter().any(|&l| l > steps) {
        candle_core::bail!("GRU layer: lengths {lengths:?} for {batch} sequences of at most {steps} steps");
    }
    let inputs = inputs.contiguous()?;
    let weight_hh = weight_hh.contiguous()?;
    let packed = packed.contiguous()?;
    inputs.apply_op3(
        &weight_hh,
        &packed,
        GruLayer {
            kept: Mutex::new(None),
            lengths: lengths.to_vec(),
        },
    )
}

/// One call of the op. The forward keeps its gates here for the backward of the same
/// graph node, instead of recomputing them.
struct GruLayer {
    kept: Mutex<Option<Kept>>,
    /// Each sequence's steps.
    lengths: Vec<usize>,
}

/// The kept gates (T, N, 4H), where the forward ran.
enum Kept {
    Cpu(Vec<f32>),
    #[cfg(feature = "cuda")]
    Cuda(candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>),
}

/// Sizes of one call: batch, steps, hidden, input width.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    pub batch: usize,
    pub steps: usize,
    pub hidden: usize,
    pub input: usize,
}

fn dims(inputs: &Shape, weight_hh: &Shape, packed: &Shape) -> Result<Dims> {
    let (steps, batch, input) = inputs.dims3()?;
    let (rows, hidden) = weight_hh.dims2()?;
    if rows != 3 * hidden || packed.elem_count() != 3 * hidden * (input + 2) {
        candle_core::bail!(
            "GRU layer: inputs {inputs:?}, weight_hh {weight_hh:?} and packed W_ih and biases \
             {packed:?} do not agree (3H x H, and 3H x E + 6H packed values)"
        );
    }
    Ok(Dims {
        batch,
        steps,
        hidden,
        input,
    })
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    kernel_launch::cpu::contiguous(storage, layout, "GRU recurrence")
}

/// Runs `f` on a contiguous CPU tensor's f32 data in place, without copying it out.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("GRU recurrence: backward tensors must be on the CPU")
    };
    f(f32_slice(cpu, layout)?)
}

impl CustomOp3 for GruLayer {
    fn name(&self) -> &'static str {
        "gru-layer"
    }

    fn cpu_fwd(
        &self,
        inputs: &CpuStorage,
        inputs_layout: &Layout,
        weight_hh: &CpuStorage,
        weight_layout: &Layout,
        packed: &CpuStorage,
        packed_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims(
            inputs_layout.shape(),
            weight_layout.shape(),
            packed_layout.shape(),
        )?;
        let (states, kept) = cpu::forward(
            d,
            &self.lengths,
            f32_slice(inputs, inputs_layout)?,
            f32_slice(weight_hh, weight_layout)?,
            f32_slice(packed, packed_layout)?,
        )?;
        *self.kept.lock().expect("kept gates lock poisoned") = Some(Kept::Cpu(kept));
        Ok((CpuStorage::F32(states), Shape::from((d.steps, d.batch, d.hidden))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        inputs: &candle_core::CudaStorage,
        inputs_layout: &Layout,
        weight_hh: &candle_core::CudaStorage,
        weight_layout: &Layout,
        packed: &candle_core::CudaStorage,
        packed_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let d = dims(
            inputs_layout.shape(),
            weight_layout.shape(),
            packed_layout.shape(),
        )?;
        let (states, kept) = crate::cuda::forward(
            d,
            (inputs, inputs_layout),
            (weight_hh, weight_layout),
            (packed, packed_layout),
        )?;
        *self.kept.lock().expect("kept gates lock poisoned") = Some(Kept::Cuda(kept));
        Ok((states, Shape::from((d.steps, d.batch, d.hidden))))
    }

    fn bwd(
        &self,
        inputs: &Tensor,
        weight_hh: &Tensor,
        packed: &Tensor,
        states: &Tensor,
        grad_states: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = dims(inputs.shape(), weight_hh.shape(), packed.shape())?;
        let kept = self.kept.lock().expect("kept gates lock poisoned");
        // The weights and states are contiguous already; the incoming gradient may not be.
        let grad_states = grad_states.contiguous()?;
        let kept = match kept.as_ref() {
            Some(Kept::Cpu(kept)) => kept,
            #[cfg(feature = "cuda")]
            Some(Kept::Cuda(kept)) => {
                return cuda::backward(d, [inputs, weight_hh, packed, states, &grad_states], kept)
            }
            None => candle_core::bail!("GRU layer: backward before forward"),
        };
        let (grad_projected, grad_weight_hh, grad_biases) = with_values(weight_hh, |weight_hh| {
            with_values(states, |states| {
                with_values(&grad_states, |grad_states| {
                    cpu::backward(d, &self.lengths, weight_hh, states, kept, grad_states)
                })
            })
        })?;
        // Token embeddings are trained, so the inputs usually want a gradient; a frozen
        // embedding spares the product.
        let want_inputs = inputs.track_op();
        let (grad_inputs, grad_weight_ih) = with_values(inputs, |inputs| {
            with_values(packed, |packed| {
                let weight_ih = &packed[..3 * d.hidden * d.input];
                cpu::projection_grads(d, &grad_projected, inputs, weight_ih, want_inputs)
            })
        })?;
        let mut grad_packed = grad_weight_ih;
        grad_packed.extend_from_slice(&grad_biases);
        let device = inputs.device();
        Ok((
            grad_inputs
                .map(|g| Tensor::from_vec(g, inputs.shape(), device))
                .transpose()?,
            Some(Tensor::from_vec(grad_weight_hh, weight_hh.shape(), device)?),
            Some(Tensor::from_vec(grad_packed, packed.shape(), device)?),
        ))
    }
}

/// Whether the fused recurrence can run `t`: f32 on the CPU, and on CUDA devices with the
/// `cuda` feature. Other devices and dtypes use the composed candle path.
pub fn supports(t: &Tensor) -> bool {
    let device = t.device();
    t.dtype() == candle_core::DType::F32 && (device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda()))
}
