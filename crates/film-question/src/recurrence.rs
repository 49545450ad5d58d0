//! The GRU's recurrence over a whole sequence as one differentiable candle op (CPU, f32).
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
//! where x = W_ih·input + b_ih (computed outside, for all steps at once) and
//! h_* = W_hh·h + b_hh.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use gemm::Parallelism;

/// Runs the recurrence: `projected` (N, T, 3H) input projections, `weight_hh` (3H, H),
/// `bias_hh` (3H,) → every step's hidden state (N, T, H), starting from h = 0.
pub fn gru_recurrence(projected: &Tensor, weight_hh: &Tensor, bias_hh: &Tensor) -> Result<Tensor> {
    let projected = projected.contiguous()?;
    let weight_hh = weight_hh.contiguous()?;
    let bias_hh = bias_hh.contiguous()?;
    projected.apply_op3(&weight_hh, &bias_hh, GruRecurrence)
}

struct GruRecurrence;

/// Sizes of one call: batch, steps, hidden.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    steps: usize,
    hidden: usize,
}

fn dims(projected: &Shape, weight_hh: &Shape, bias_hh: &Shape) -> Result<Dims> {
    let (batch, steps, gates) = projected.dims3()?;
    let (rows, hidden) = weight_hh.dims2()?;
    if gates != 3 * hidden || rows != 3 * hidden || bias_hh.elem_count() != 3 * hidden {
        candle_core::bail!(
            "GRU recurrence: projections {projected:?}, weight_hh {weight_hh:?} and bias_hh {bias_hh:?} \
             do not agree on 3 x hidden"
        );
    }
    Ok(Dims { batch, steps, hidden })
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("GRU recurrence: inputs must be contiguous"),
    }
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

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The three gates of one hidden unit from its input and hidden projections.
#[inline]
fn gates(x: [f32; 3], h: [f32; 3]) -> (f32, f32, f32) {
    let reset = sigmoid(x[0] + h[0]);
    let update = sigmoid(x[1] + h[1]);
    let candidate = (x[2] + reset * h[2]).tanh();
    (reset, update, candidate)
}

/// Forward: hidden states (N, T, H) for contiguous inputs.
fn forward(d: Dims, projected: &[f32], weight_hh: &[f32], bias_hh: &[f32]) -> Vec<f32> {
    let Dims {
        batch,
        steps,
        hidden: h,
    } = d;
    let mut states = vec![0f32; batch * steps * h];
    let mut hh = vec![0f32; batch * 3 * h];
    let zeros = vec![0f32; batch * h];
    for t in 0..steps {
        // hh = h_prev · W_hhᵀ, h_prev being row t-1 of each sequence (zeros at t = 0).
        let (prev_ptr, prev_stride) = if t == 0 {
            (zeros.as_ptr(), h)
        } else {
            (states[(t - 1) * h..].as_ptr(), steps * h)
        };
        // SAFETY: prev rows are batch × h inside `states`/`zeros`; W_hhᵀ is read as h × 3h
        // inside `weight_hh`; `hh` is a separate batch × 3h buffer.
        unsafe {
            matmul(
                (batch, 3 * h, h),
                hh.as_mut_ptr(),
                3 * h,
                false,
                View {
                    ptr: prev_ptr,
                    row_stride: prev_stride as isize,
                    col_stride: 1,
                },
                View {
                    ptr: weight_hh.as_ptr(),
                    row_stride: 1,
                    col_stride: h as isize,
                },
                parallelism(),
            );
        }
        for n in 0..batch {
            let x = &projected[(n * steps + t) * 3 * h..][..3 * h];
            let hrow = &hh[n * 3 * h..][..3 * h];
            for j in 0..h {
                let prev = if t == 0 {
                    0.0
                } else {
                    states[(n * steps + t - 1) * h + j]
                };
                let (_, update, candidate) = gates(
                    [x[j], x[h + j], x[2 * h + j]],
                    [
                        hrow[j] + bias_hh[j],
                        hrow[h + j] + bias_hh[h + j],
                        hrow[2 * h + j] + bias_hh[2 * h + j],
                    ],
                );
                states[(n * steps + t) * h + j] = candidate + update * (prev - candidate);
            }
        }
    }
    states
}

/// Gradients of the recurrence: (d projected (N, T, 3H), d weight_hh (3H, H), d bias_hh (3H)).
fn backward(
    d: Dims,
    projected: &[f32],
    weight_hh: &[f32],
    bias_hh: &[f32],
    states: &[f32],
    grad_states: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims {
        batch,
        steps,
        hidden: h,
    } = d;
    // Every step's previous state, (N, T, H) with zeros at t = 0: the GEMM operand of both
    // the recomputed hidden projections and the weight gradient.
    let mut previous = vec![0f32; batch * steps * h];
    for n in 0..batch {
        for t in 1..steps {
            previous[(n * steps + t) * h..][..h].copy_from_slice(&states[(n * steps + t - 1) * h..][..h]);
        }
    }
    // The hidden projections of all steps at once (the forward kept only the states).
    let mut hh = vec![0f32; batch * steps * 3 * h];
    // SAFETY: `previous` is (N·T) × h, W_hhᵀ is h × 3h inside `weight_hh`, `hh` is (N·T) × 3h.
    unsafe {
        matmul(
            (batch * steps, 3 * h, h),
            hh.as_mut_ptr(),
            3 * h,
            false,
            View {
                ptr: previous.as_ptr(),
                row_stride: h as isize,
                col_stride: 1,
            },
            View {
                ptr: weight_hh.as_ptr(),
                row_stride: 1,
                col_stride: h as isize,
            },
            parallelism(),
        );
    }
    let mut grad_projected = vec![0f32; batch * steps * 3 * h];
    let mut grad_hh = vec![0f32; batch * steps * 3 * h];
    let mut grad_next = vec![0f32; batch * h];
    for t in (0..steps).rev() {
        for n in 0..batch {
            let row = (n * steps + t) * 3 * h;
            let x = &projected[row..][..3 * h];
            let hrow = &hh[row..][..3 * h];
            for j in 0..h {
                let hn = hrow[2 * h + j] + bias_hh[2 * h + j];
                let (reset, update, candidate) = gates(
                    [x[j], x[h + j], x[2 * h + j]],
                    [hrow[j] + bias_hh[j], hrow[h + j] + bias_hh[h + j], hn],
                );
                let prev = previous[(n * steps + t) * h + j];
                let dh = grad_states[(n * steps + t) * h + j] + grad_next[n * h + j];
                let d_candidate = dh * (1.0 - update) * (1.0 - candidate * candidate);
                let d_update = dh * (prev - candidate) * update * (1.0 - update);
                let d_reset = d_candidate * hn * reset * (1.0 - reset);
                grad_projected[row + j] = d_reset;
                grad_projected[row + h + j] = d_update;
                grad_projected[row + 2 * h + j] = d_candidate;
                grad_hh[row + j] = d_reset;
                grad_hh[row + h + j] = d_update;
                grad_hh[row + 2 * h + j] = d_candidate * reset;
                // The direct path h' = … + z ⊙ h; the path through W_hh is added below.
                grad_next[n * h + j] = dh * update;
            }
        }
        if t > 0 {
            // grad_next += d hh_t · W_hh
            // SAFETY: rows of step t in `grad_hh` are batch × 3h with stride T·3h; W_hh is
            // 3h × h; `grad_next` is a separate batch × h buffer.
            unsafe {
                matmul(
                    (batch, h, 3 * h),
                    grad_next.as_mut_ptr(),
                    h,
                    true,
                    View {
                        ptr: grad_hh[t * 3 * h..].as_ptr(),
                        row_stride: (steps * 3 * h) as isize,
                        col_stride: 1,
                    },
                    View {
                        ptr: weight_hh.as_ptr(),
                        row_stride: h as isize,
                        col_stride: 1,
                    },
                    parallelism(),
                );
            }
        }
    }
    // d W_hh = Σ_{n,t} d hh[n,t]ᵀ ⊗ previous[n,t]: one (3h × N·T) · (N·T × h) product.
    let mut grad_weight = vec![0f32; 3 * h * h];
    // SAFETY: `grad_hh` read transposed as 3h × (N·T), `previous` as (N·T) × h, output 3h × h.
    unsafe {
        matmul(
            (3 * h, h, batch * steps),
            grad_weight.as_mut_ptr(),
            h,
            false,
            View {
                ptr: grad_hh.as_ptr(),
                row_stride: 1,
                col_stride: (3 * h) as isize,
            },
            View {
                ptr: previous.as_ptr(),
                row_stride: h as isize,
                col_stride: 1,
            },
            parallelism(),
        );
    }
    let mut grad_bias = vec![0f32; 3 * h];
    for row in grad_hh.chunks_exact(3 * h) {
        for (g, v) in grad_bias.iter_mut().zip(row) {
            *g += v;
        }
    }
    (grad_projected, grad_weight, grad_bias)
}

/// A tensor's f32 data, contiguous, read on the CPU.
fn cpu_values(t: &Tensor) -> Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

impl CustomOp3 for GruRecurrence {
    fn name(&self) -> &'static str {
        "gru-recurrence"
    }

    fn cpu_fwd(
        &self,
        projected: &CpuStorage,
        projected_layout: &Layout,
        weight_hh: &CpuStorage,
        weight_layout: &Layout,
        bias_hh: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims(
            projected_layout.shape(),
            weight_layout.shape(),
            bias_layout.shape(),
        )?;
        let states = forward(
            d,
            f32_slice(projected, projected_layout)?,
            f32_slice(weight_hh, weight_layout)?,
            f32_slice(bias_hh, bias_layout)?,
        );
        Ok((CpuStorage::F32(states), Shape::from((d.batch, d.steps, d.hidden))))
    }

    fn bwd(
        &self,
        projected: &Tensor,
        weight_hh: &Tensor,
        bias_hh: &Tensor,
        states: &Tensor,
        grad_states: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = dims(projected.shape(), weight_hh.shape(), bias_hh.shape())?;
        let (grad_projected, grad_weight, grad_bias) = backward(
            d,
            &cpu_values(projected)?,
            &cpu_values(weight_hh)?,
            &cpu_values(bias_hh)?,
            &cpu_values(states)?,
            &cpu_values(grad_states)?,
        );
        let device = projected.device();
        Ok((
            Some(Tensor::from_vec(grad_projected, projected.shape(), device)?),
            Some(Tensor::from_vec(grad_weight, weight_hh.shape(), device)?),
            Some(Tensor::from_vec(grad_bias, bias_hh.shape(), device)?),
        ))
    }
}

/// Whether the fused recurrence can run `t` (CPU f32); other devices and dtypes use the
/// composed candle path.
pub fn supports(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}
