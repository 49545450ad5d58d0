//! The recurrence's passes on the CPU, f32, time-major: the forward over all steps, the
//! backward through time, and the input projection's gradients.

use candle_core::{CpuStorage, Result, Shape};
use rayon::prelude::*;

use super::gates::{backward_gates, forward_gates, KEPT};
use super::matmul::{column_split_matmul, column_sums, matmul, parallelism, transpose_into, View};
use super::Dims;

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

/// Rows handed to one thread at a time in the per-step gate loops.
const ROWS_PER_TASK: usize = 8;

/// Marks which rows (questions) still run at step `t`: `slot[i]` is row i's place among
/// the running rows, or [`FINISHED`] once `t` is past its length. Returns how many run.
fn running_rows(lengths: &[usize], t: usize, slot: &mut [usize]) -> usize {
    let mut running = 0;
    for (slot, &length) in slot.iter_mut().zip(lengths) {
        *slot = if t < length {
            running += 1;
            running - 1
        } else {
            FINISHED
        };
    }
    running
}

/// [`running_rows`]' mark of a row past its length.
const FINISHED: usize = usize::MAX;

/// Copies the rows of `src` (`width` values each) that still run into the first rows of
/// `dst`, in order.
fn gather_running(slot: &[usize], width: usize, src: &[f32], dst: &mut [f32]) {
    for (&k, row) in slot.iter().zip(src.chunks_exact(width)) {
        if k != FINISHED {
            dst[k * width..][..width].copy_from_slice(row);
        }
    }
}

/// The inverse of [`gather_running`]: the first rows of `src` back to their running rows of
/// `dst`.
fn scatter_running(slot: &[usize], width: usize, src: &[f32], dst: &mut [f32]) {
    for (&k, row) in slot.iter().zip(dst.chunks_exact_mut(width)) {
        if k != FINISHED {
            row.copy_from_slice(&src[k * width..][..width]);
        }
    }
}

/// Forward, time-major: `projected` (T, N, 3H) → states (T, N, H), plus the kept gates
/// (T, N, 4H). Row i runs for its first `lengths[i]` steps; after them its state stays
/// the last one, and its kept gates are zero. The per-step products and gates skip the
/// finished rows, so a batch's padding costs no recurrent work. (A product over fewer rows
/// may block its sums differently, so its results can differ from a full batch's in the
/// last bit.)
pub(crate) fn forward(
    d: Dims,
    lengths: &[usize],
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
    let mut slot = vec![0; batch];
    let mut running_previous = written_buffer(batch * h)?;
    for t in 0..steps {
        let (done, rest) = states.split_at_mut(t * batch * h);
        let previous = if t == 0 {
            &zeros[..]
        } else {
            &done[(t - 1) * batch * h..]
        };
        let running = running_rows(lengths, t, &mut slot);
        // The running rows' previous states, contiguous (all of them in place when every
        // row runs, as in a batch of equal lengths).
        let running_previous = if running == batch {
            previous
        } else {
            gather_running(&slot, h, previous, &mut running_previous);
            &running_previous[..running * h]
        };
        // hh = h_prev · W_hhᵀ for the running rows.
        if running > 0 {
            // SAFETY: `running_previous` is running × h, `weight_t` is h × 3h, and `hh` is
            // a separate buffer of at least running × 3h.
            unsafe {
                matmul(
                    (running, 3 * h, h),
                    hh.as_mut_ptr(),
                    3 * h,
                    false,
                    View {
                        ptr: running_previous.as_ptr(),
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
        }
        let x_t = &projected[t * batch * 3 * h..][..batch * 3 * h];
        let (hh, slot) = (&hh[..], &slot[..]);
        rest[..batch * h]
            .par_chunks_mut(h)
            .zip(kept[t * batch * KEPT * h..][..batch * KEPT * h].par_chunks_mut(KEPT * h))
            .zip(x_t.par_chunks(3 * h).zip(previous.par_chunks(h)))
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(row, ((state, kept), (x, previous)))| match slot[row] {
                FINISHED => {
                    state.copy_from_slice(previous);
                    kept.fill(0.0);
                }
                k => {
                    let hh = &hh[k * 3 * h..][..3 * h];
                    forward_gates(h, x, hh, biases.split_at(3 * h), previous, state, kept);
                }
            });
    }
    Ok((states, kept))
}

/// Gradients of the recurrence, time-major: (d projected (T, N, 3H), d weight_hh (3H, H),
/// d biases (6H): d b_ih then d b_hh). A row's steps past its length pass their state's
/// gradient on unchanged and have zero projection gradients, as [`forward`] froze them.
pub(crate) fn backward(
    d: Dims,
    lengths: &[usize],
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
    let mut slot = vec![0; batch];
    let mut running_grad_hh = written_buffer(batch * 3 * h)?;
    let mut running_grad_next = written_buffer(batch * h)?;
    for t in (0..steps).rev() {
        let previous = if t == 0 {
            &zeros[..]
        } else {
            &states[(t - 1) * batch * h..][..batch * h]
        };
        let running = running_rows(lengths, t, &mut slot);
        let rows = 3 * h * batch;
        let slots = &slot[..];
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
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(row, ((((gp, ghh), next), kept), (gs, previous)))| {
                if slots[row] == FINISHED {
                    gp.fill(0.0);
                    ghh.fill(0.0);
                    next.iter_mut().zip(gs).for_each(|(n, g)| *n += g);
                } else {
                    backward_gates(h, kept, gs, previous, gp, ghh, next);
                }
            });
        if t > 0 && running > 0 {
            // grad_next += d hh_t · W_hh over the running rows, its columns split over the
            // threads: gemm keeps a product this small (batch × h out) on one thread.
            let step_grad_hh = &grad_hh[t * rows..][..rows];
            if running == batch {
                column_split_matmul((batch, h, 3 * h), &mut grad_next, step_grad_hh, weight_hh);
            } else {
                gather_running(slots, 3 * h, step_grad_hh, &mut running_grad_hh);
                gather_running(slots, h, &grad_next, &mut running_grad_next);
                column_split_matmul(
                    (running, h, 3 * h),
                    &mut running_grad_next,
                    &running_grad_hh,
                    weight_hh,
                );
                scatter_running(slots, h, &running_grad_next, &mut grad_next);
            }
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
