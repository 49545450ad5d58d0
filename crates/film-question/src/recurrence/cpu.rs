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
