//! The GRU's recurrence over a whole sequence as one differentiable candle op (f32, on the
//! CPU, and on NVIDIA GPUs with the `cuda` feature: `cuda/mod.rs`).
//!
//! Composed from candle ops, every time step adds a dozen small tensors to the autograd
//! graph, and the backward pass accumulates each weight gradient step by step into freshly
//! allocated buffers: for the `mini` preset (46 steps, batch 64, H = 256) that costs four
//! times the forward. Here the forward is one GEMM plus a gate loop per step, and the
//! backward is back-propagation through time in place, with the weight gradient as a single
//! GEMM over all steps at the end.
//!
//! Gate order and equations are PyTorch's:
//!   r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r ⊙ h_n), h' = (1 - z) ⊙ n + z ⊙ h
//! where x = W_ih·input + b_ih and h_* = W_hh·h + b_hh. The product W_ih·input is computed
//! outside, for all steps at once; both biases are added inside, in the gate loop, so that
//! neither the forward nor the backward makes a separate pass over the (T, N, 3H)
//! projections for them.

use crate::activations::{sigmoid, tanh, Lanes, LANES};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;
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
pub fn gru_layer(inputs: &Tensor, weight_hh: &Tensor, packed: &Tensor) -> Result<Tensor> {
    let inputs = inputs.contiguous()?;
    let weight_hh = weight_hh.contiguous()?;
    let packed = packed.contiguous()?;
    inputs.apply_op3(
        &weight_hh,
        &packed,
        GruLayer {
            kept: Mutex::new(None),
        },
    )
}

/// One call of the op. The forward keeps its gates here for the backward of the same
/// graph node, instead of recomputing them.
struct GruLayer {
    kept: Mutex<Option<Kept>>,
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

fn parallelism() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// A row-major matrix view: element (i, j) at `data[i * row_stride + j * col_stride]`.
struct View {
    ptr: *const f32,
    row_stride: isize,
    col_stride: isize,
}

/// dst (m × n, row-major with `dst_row_stride`) (+)= lhs (m × k) · rhs (k × n).
///
/// # Safety
/// Every element the views address must be inside a live allocation, and `dst` must not
/// overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_row_stride: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    parallelism: Parallelism,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_row_stride as isize,
        accumulate,
        lhs.ptr,
        lhs.col_stride,
        lhs.row_stride,
        rhs.ptr,
        rhs.col_stride,
        rhs.row_stride,
        1.0,
        1.0,
        false,
        false,
        false,
        parallelism,
    );
}

/// One question's gates at one step: from its input projection `x` (3H) and hidden
/// projection `hh` (3H), both without bias, the biases `bias_ih` and `bias_hh` (3H each) and
/// the previous state (H), writes the new state (H) and the kept gates (4H). In groups of
/// [`LANES`] units so that the non-linearities vectorise.
pub(crate) fn forward_gates(
    h: usize,
    x: &[f32],
    hh: &[f32],
    biases: (&[f32], &[f32]),
    previous: &[f32],
    state: &mut [f32],
    kept: &mut [f32],
) {
    let whole = h / LANES * LANES;
    for j0 in (0..whole).step_by(LANES) {
        // A literal group size, so that every copy below is one vector move.
        gate_group(h, j0, LANES, x, hh, biases, previous, state, kept);
    }
    if whole < h {
        gate_group(h, whole, h - whole, x, hh, biases, previous, state, kept);
    }
}

/// Units `j0..j0 + lanes` of [`forward_gates`]; a short last group is padded with zeros and
/// only its real lanes are stored.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gate_group(
    h: usize,
    j0: usize,
    lanes: usize,
    x: &[f32],
    hh: &[f32],
    (bias_ih, bias_hh): (&[f32], &[f32]),
    previous: &[f32],
    state: &mut [f32],
    kept: &mut [f32],
) {
    // Whole vectors in and out: writing lanes one at a time and reading them back as a
    // vector stalls on store forwarding.
    let load = |v: &[f32], at: usize| -> Lanes {
        let mut out = [0.0; LANES];
        out[..lanes].copy_from_slice(&v[at..at + lanes]);
        out
    };
    let sum = |a: Lanes, b: Lanes| -> Lanes {
        let mut out = a;
        for i in 0..LANES {
            out[i] += b[i];
        }
        out
    };
    let hn = sum(load(hh, 2 * h + j0), load(bias_hh, 2 * h + j0));
    let reset = sigmoid(sum(
        sum(load(x, j0), load(bias_ih, j0)),
        sum(load(hh, j0), load(bias_hh, j0)),
    ));
    let update = sigmoid(sum(
        sum(load(x, h + j0), load(bias_ih, h + j0)),
        sum(load(hh, h + j0), load(bias_hh, h + j0)),
    ));
    let x_n = sum(load(x, 2 * h + j0), load(bias_ih, 2 * h + j0));
    let mut pre_n = [0.0; LANES];
    for i in 0..LANES {
        pre_n[i] = x_n[i] + reset[i] * hn[i];
    }
    let candidate = tanh(pre_n);
    let previous = load(previous, j0);
    let mut next = [0.0; LANES];
    for i in 0..LANES {
        next[i] = candidate[i] + update[i] * (previous[i] - candidate[i]);
    }
    state[j0..j0 + lanes].copy_from_slice(&next[..lanes]);
    for (g, values) in [reset, update, candidate, hn].iter().enumerate() {
        kept[g * h + j0..g * h + j0 + lanes].copy_from_slice(&values[..lanes]);
    }
}

/// An f32 buffer of `len` elements left unzeroed, for the per-step buffers that the loops
/// write completely before anything reads them, so zero-filling them would be wasted
/// work (docs/benchmarks.md). Allocated by candle's own `alloc_uninit`, as candle allocates
/// its op outputs.
fn written_buffer(len: usize) -> Result<Vec<f32>> {
    use candle_core::backend::{BackendDevice, BackendStorage};
    // SAFETY: every caller writes each element (one row per question and step) before
    // reading it, and every bit pattern is a valid f32.
    match unsafe {
        candle_core::cpu_backend::CpuDevice.alloc_uninit(&Shape::from(len), candle_core::DType::F32)?
    } {
        CpuStorage::F32(buffer) => Ok(buffer),
        other => candle_core::bail!("alloc_uninit gave {:?} storage for F32", other.dtype()),
    }
}

/// Values per hidden unit and step that the forward keeps for the backward: the reset,
/// update and candidate gates, and the candidate's hidden projection W_hn·h + b_hn.
pub(crate) const KEPT: usize = 4;

/// Rows handed to one thread at a time in the per-step gate loops.
const ROWS_PER_TASK: usize = 8;

/// Forward, time-major: `projected` (T, N, 3H) → states (T, N, H), plus the kept gates
/// (T, N, 4H).
pub(crate) fn forward(
    d: Dims,
    inputs: &[f32],
    weight_hh: &[f32],
    packed: &[f32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    let Dims {
        batch,
        steps,
        hidden: h,
        input,
    } = d;
    let (weight_ih, biases) = packed.split_at(3 * h * input);
    // projected (T·N × 3H) = inputs (T·N × E) · W_ihᵀ, without b_ih (the gate loop adds
    // both biases).
    let mut projected = written_buffer(steps * batch * 3 * h)?;
    // SAFETY: `inputs` is T·N × E, W_ih (3H × E) is read transposed as E × 3H, and
    // `projected` is a separate T·N × 3H buffer.
    unsafe {
        matmul(
            (steps * batch, 3 * h, input),
            projected.as_mut_ptr(),
            3 * h,
            false,
            View {
                ptr: inputs.as_ptr(),
                row_stride: input as isize,
                col_stride: 1,
            },
            View {
                ptr: weight_ih.as_ptr(),
                row_stride: 1,
                col_stride: input as isize,
            },
            parallelism(),
        );
    }
    let projected = &projected[..];
    let mut states = written_buffer(steps * batch * h)?;
    let mut kept = written_buffer(steps * batch * KEPT * h)?;
    let mut hh = vec![0f32; batch * 3 * h];
    // W_hhᵀ (h × 3h) laid out row by row once: every step's product reads it, and a
    // row-major right-hand side streams through memory in order, where reading W_hh
    // transposed in place strides across it.
    let mut weight_t = written_buffer(3 * h * h)?;
    transpose_into(weight_hh, 3 * h, h, &mut weight_t);
    let zeros = vec![0f32; batch * h];
    for t in 0..steps {
        let (done, rest) = states.split_at_mut(t * batch * h);
        let previous = if t == 0 {
            &zeros[..]
        } else {
            &done[(t - 1) * batch * h..]
        };
        // hh = h_prev · W_hhᵀ
        // SAFETY: `previous` is batch × h, `weight_t` is h × 3h, and `hh` is a separate
        // batch × 3h buffer.
        unsafe {
            matmul(
                (batch, 3 * h, h),
                hh.as_mut_ptr(),
                3 * h,
                false,
                View {
                    ptr: previous.as_ptr(),
                    row_stride: h as isize,
                    col_stride: 1,
                },
                View {
                    ptr: weight_t.as_ptr(),
                    row_stride: (3 * h) as isize,
                    col_stride: 1,
                },
                parallelism(),
            );
        }
        let x_t = &projected[t * batch * 3 * h..][..batch * 3 * h];
        rest[..batch * h]
            .par_chunks_mut(h)
            .zip(kept[t * batch * KEPT * h..][..batch * KEPT * h].par_chunks_mut(KEPT * h))
            .zip(x_t.par_chunks(3 * h).zip(hh.par_chunks(3 * h)))
            .zip(previous.par_chunks(h))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(((state, kept), (x, hh)), previous)| {
                forward_gates(h, x, hh, biases.split_at(3 * h), previous, state, kept);
            });
    }
    Ok((states, kept))
}

/// One question's gradients at one step, from its kept gates (4H), the gradient reaching
/// its state (H: from the output, and in `next` from step t+1) and its previous state (H):
/// the input projection's gradient `gp` (3H), the hidden projection's `ghh` (3H), and in
/// `next` the gradient reaching the previous state along the direct path.
pub(crate) fn backward_gates(
    h: usize,
    kept: &[f32],
    grad_state: &[f32],
    previous: &[f32],
    gp: &mut [f32],
    ghh: &mut [f32],
    next: &mut [f32],
) {
    // Every slice cut to exactly h values, so that the loop below has no bounds checks
    // left and vectorises.
    let (reset, rest) = kept.split_at(h);
    let (update, rest) = rest.split_at(h);
    let (candidate, hn) = rest.split_at(h);
    let hn = &hn[..h];
    let (gp_reset, rest) = gp.split_at_mut(h);
    let (gp_update, gp_candidate) = rest.split_at_mut(h);
    let gp_candidate = &mut gp_candidate[..h];
    let (ghh_reset, rest) = ghh.split_at_mut(h);
    let (ghh_update, ghh_candidate) = rest.split_at_mut(h);
    let ghh_candidate = &mut ghh_candidate[..h];
    let (grad_state, previous, next) = (&grad_state[..h], &previous[..h], &mut next[..h]);
    for j in 0..h {
        let (r, z, n) = (reset[j], update[j], candidate[j]);
        let dh = grad_state[j] + next[j];
        let d_candidate = dh * (1.0 - z) * (1.0 - n * n);
        let d_update = dh * (previous[j] - n) * z * (1.0 - z);
        let d_reset = d_candidate * hn[j] * r * (1.0 - r);
        gp_reset[j] = d_reset;
        gp_update[j] = d_update;
        gp_candidate[j] = d_candidate;
        ghh_reset[j] = d_reset;
        ghh_update[j] = d_update;
        ghh_candidate[j] = d_candidate * r;
        // The direct path h' = … + z ⊙ h; the path through W_hh is added by the caller.
        next[j] = dh * z;
    }
}

/// `dst` (cols × rows) = `src` (rows × cols)ᵀ, both row-major, in square tiles spread over
/// the threads. Element by element, every store of a row went to a different cache line:
/// for the paper's 4096 units (a 200 MB matrix) that took longer than the 46 products
/// that read the result.
fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 64;
    assert!(src.len() == rows * cols && dst.len() == rows * cols);
    // One task per band of TILE rows of `dst` (TILE columns of `src`).
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, dst)| {
            let c0 = band * TILE;
            let width = dst.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                let height = TILE.min(rows - r0);
                for c in 0..width {
                    let out = &mut dst[c * rows + r0..][..height];
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = src[(r0 + r) * cols + c0 + c];
                    }
                }
            }
        });
}

/// `sums[j] += Σ_i rows[i][j]` over the rows of a dense row-major matrix as wide as `sums`,
/// in column blocks spread over the threads.
fn column_sums(rows: &[f32], sums: &mut [f32]) {
    let width = sums.len();
    const BLOCK: usize = 64;
    sums.par_chunks_mut(BLOCK).enumerate().for_each(|(b, sums)| {
        for row in rows.chunks_exact(width) {
            for (s, v) in sums.iter_mut().zip(&row[b * BLOCK..]) {
                *s += v;
            }
        }
    });
}

/// dst (m × n) += lhs (m × k) · rhs (k × n), all dense row-major, the columns split over
/// rayon's threads with one single-threaded GEMM per block.
fn column_split_matmul((m, n, k): (usize, usize, usize), dst: &mut [f32], lhs: &[f32], rhs: &[f32]) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    let threads = rayon::current_num_threads().max(1);
    // Blocks of whole 16-lane vectors.
    let block = n.div_ceil(threads).next_multiple_of(16).min(n).max(1);
    let dst_addr = dst.as_mut_ptr() as usize;
    (0..n.div_ceil(block)).into_par_iter().for_each(|b| {
        let first = b * block;
        let width = block.min(n - first);
        // SAFETY: the asserts above bound every view; block b writes only columns
        // first..first + width of dst, disjoint from every other block's, and dst does not
        // overlap lhs or rhs (a unique and two shared borrows).
        unsafe {
            matmul(
                (m, width, k),
                (dst_addr as *mut f32).add(first),
                n,
                true,
                View {
                    ptr: lhs.as_ptr(),
                    row_stride: k as isize,
                    col_stride: 1,
                },
                View {
                    ptr: rhs.as_ptr().add(first),
                    row_stride: n as isize,
                    col_stride: 1,
                },
                Parallelism::None,
            );
        }
    });
}

/// Gradients of the recurrence, time-major: (d projected (T, N, 3H), d weight_hh (3H, H),
/// d biases (6H): d b_ih then d b_hh).
pub(crate) fn backward(
    d: Dims,
    weight_hh: &[f32],
    states: &[f32],
    kept: &[f32],
    grad_states: &[f32],
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let Dims {
        batch,
        steps,
        hidden: h,
        ..
    } = d;
    let zeros = vec![0f32; batch * h];
    let mut grad_projected = written_buffer(steps * batch * 3 * h)?;
    let mut grad_hh = written_buffer(steps * batch * 3 * h)?;
    let mut grad_next = vec![0f32; batch * h];
    for t in (0..steps).rev() {
        let previous = if t == 0 {
            &zeros[..]
        } else {
            &states[(t - 1) * batch * h..][..batch * h]
        };
        let rows = 3 * h * batch;
        grad_projected[t * rows..][..rows]
            .par_chunks_mut(3 * h)
            .zip(grad_hh[t * rows..][..rows].par_chunks_mut(3 * h))
            .zip(grad_next.par_chunks_mut(h))
            .zip(kept[t * batch * KEPT * h..][..batch * KEPT * h].par_chunks(KEPT * h))
            .zip(
                grad_states[t * batch * h..][..batch * h]
                    .par_chunks(h)
                    .zip(previous.par_chunks(h)),
            )
            .with_min_len(ROWS_PER_TASK)
            .for_each(|((((gp, ghh), next), kept), (gs, previous))| {
                backward_gates(h, kept, gs, previous, gp, ghh, next);
            });
        if t > 0 {
            // grad_next += d hh_t · W_hh, its columns split over the threads: gemm keeps a
            // product this small (batch × h out) on one thread.
            let step_grad_hh = &grad_hh[t * rows..][..rows];
            column_split_matmul((batch, h, 3 * h), &mut grad_next, step_grad_hh, weight_hh);
        }
    }
    // d W_hh = Σ_t d hh_tᵀ · h_{t-1}: one (3h × (T-1)·N) · ((T-1)·N × h) product (h_{-1} = 0
    // adds nothing).
    let mut grad_weight = vec![0f32; 3 * h * h];
    if steps > 1 {
        let k = (steps - 1) * batch;
        // SAFETY: `grad_hh` from step 1 read transposed as 3h × k, `states` up to step T-2 as
        // k × h, output 3h × h.
        unsafe {
            matmul(
                (3 * h, h, k),
                grad_weight.as_mut_ptr(),
                h,
                false,
                View {
                    ptr: grad_hh[batch * 3 * h..].as_ptr(),
                    row_stride: 1,
                    col_stride: (3 * h) as isize,
                },
                View {
                    ptr: states.as_ptr(),
                    row_stride: h as isize,
                    col_stride: 1,
                },
                parallelism(),
            );
        }
    }
    // x = W_ih·input + b_ih and h_* = W_hh·h + b_hh: each bias gets the sum over all rows of
    // its projection's gradient.
    let mut grad_biases = vec![0f32; 6 * h];
    let (grad_bias_ih, grad_bias_hh) = grad_biases.split_at_mut(3 * h);
    rayon::join(
        || column_sums(&grad_projected, grad_bias_ih),
        || column_sums(&grad_hh, grad_bias_hh),
    );
    Ok((grad_projected, grad_weight, grad_biases))
}

/// Runs `f` on a contiguous CPU tensor's f32 data in place, without copying it out.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("GRU recurrence: backward tensors must be on the CPU")
    };
    f(f32_slice(cpu, layout)?)
}

/// The input projection's gradients from the projections' gradient `grad_projected`
/// (T·N × 3H): d inputs (T·N × E) = grad_projected · W_ih when `want_inputs`, and
/// d W_ih (3H × E) = grad_projectedᵀ · inputs.
pub(crate) fn projection_grads(
    d: Dims,
    grad_projected: &[f32],
    inputs: &[f32],
    weight_ih: &[f32],
    want_inputs: bool,
) -> Result<(Option<Vec<f32>>, Vec<f32>)> {
    let (rows, gates, input) = (d.steps * d.batch, 3 * d.hidden, d.input);
    let grad_inputs = match want_inputs {
        true => {
            let mut grad_inputs = written_buffer(rows * input)?;
            // SAFETY: grad_projected is rows × 3H, W_ih is 3H × E, and `grad_inputs` is a
            // separate rows × E buffer.
            unsafe {
                matmul(
                    (rows, input, gates),
                    grad_inputs.as_mut_ptr(),
                    input,
                    false,
                    View {
                        ptr: grad_projected.as_ptr(),
                        row_stride: gates as isize,
                        col_stride: 1,
                    },
                    View {
                        ptr: weight_ih.as_ptr(),
                        row_stride: input as isize,
                        col_stride: 1,
                    },
                    parallelism(),
                );
            }
            Some(grad_inputs)
        }
        false => None,
    };
    let mut grad_weight_ih = written_buffer(gates * input)?;
    // SAFETY: grad_projected read transposed is 3H × rows, inputs is rows × E, and the
    // output is a separate 3H × E buffer.
    unsafe {
        matmul(
            (gates, input, rows),
            grad_weight_ih.as_mut_ptr(),
            input,
            false,
            View {
                ptr: grad_projected.as_ptr(),
                row_stride: 1,
                col_stride: gates as isize,
            },
            View {
                ptr: inputs.as_ptr(),
                row_stride: input as isize,
                col_stride: 1,
            },
            parallelism(),
        );
    }
    Ok((grad_inputs, grad_weight_ih))
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
        let (states, kept) = forward(
            d,
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
                return cuda_backward(d, [inputs, weight_hh, packed, states, &grad_states], kept)
            }
            None => candle_core::bail!("GRU layer: backward before forward"),
        };
        let (grad_projected, grad_weight_hh, grad_biases) = with_values(weight_hh, |weight_hh| {
            with_values(states, |states| {
                with_values(&grad_states, |grad_states| {
                    backward(d, weight_hh, states, kept, grad_states)
                })
            })
        })?;
        // Token embeddings are trained, so the inputs usually want a gradient; a frozen
        // embedding spares the product.
        let want_inputs = inputs.track_op();
        let (grad_inputs, grad_weight_ih) = with_values(inputs, |inputs| {
            with_values(packed, |packed| {
                let weight_ih = &packed[..3 * d.hidden * d.input];
                projection_grads(d, &grad_projected, inputs, weight_ih, want_inputs)
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

/// [`GruLayer`]'s backward on a CUDA device, from its operands (inputs, weight_hh, packed,
/// states, state gradients) and the forward's kept gates.
#[cfg(feature = "cuda")]
fn cuda_backward(
    d: Dims,
    tensors: [&Tensor; 5],
    kept: &candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    use candle_core::{op::BackpropOp, CudaStorage};
    let [inputs, weight_hh, packed, ..] = tensors;
    let guards = tensors.map(|t| t.storage_and_layout());
    let mut operands: Vec<(&CudaStorage, &Layout)> = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cuda(cuda) => operands.push((cuda, layout)),
            _ => candle_core::bail!("GRU layer: the forward ran on CUDA, so must the backward"),
        }
    }
    // Token embeddings are trained, so the inputs usually want a gradient; a frozen
    // embedding spares the product.
    let grads = crate::cuda::backward(
        d,
        operands[0],
        operands[1],
        operands[2],
        operands[3],
        kept,
        operands[4],
        inputs.track_op(),
    )?;
    let tensor = |storage: CudaStorage, like: &Tensor| {
        Tensor::from_storage(Storage::Cuda(storage), like.shape(), BackpropOp::none(), false)
    };
    Ok((
        grads.inputs.map(|g| tensor(g, inputs)),
        Some(tensor(grads.weight_hh, weight_hh)),
        Some(tensor(grads.packed, packed)),
    ))
}

/// Whether the fused recurrence can run `t`: f32 on the CPU, and on CUDA devices with the
/// `cuda` feature. Other devices and dtypes use the composed candle path.
pub fn supports(t: &Tensor) -> bool {
    let device = t.device();
    t.dtype() == candle_core::DType::F32 && (device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda()))
}
