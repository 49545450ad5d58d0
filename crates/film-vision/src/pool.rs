//! Global max pooling (over every spatial position) as one differentiable candle op on
//! the CPU.
//!
//! candle's `max` backward compares every input with the broadcast maximum, casts the
//! comparison, multiplies it with the broadcast gradient and accumulates the product into a
//! zero-filled buffer: five single-threaded passes over the classifier's whole feature map
//! for a gradient that is non-zero at one position per row. The fused op keeps each row's
//! position of the maximum from the forward and writes the gradient there.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::batch_norm::cpu::output_buffer;

/// The maximum of each (example, channel) over all positions: x (N, C, *spatial) →
/// (N, C), i.e. `x.flatten_from(2)?.max(D::Minus1)`. The fused op on CPU f32 (no reshape
/// node either, whose backward would be one more pass); candle's ops elsewhere. The
/// gradient goes to the first position of each maximum, as PyTorch's max pooling sends
/// it (candle's `max` sends it to every tied position).
pub fn global_max_pool(x: &Tensor) -> Result<Tensor> {
    if x.rank() < 3 {
        candle_core::bail!("global max pool: expected (N, C, *spatial), got {:?}", x.shape());
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return x.flatten_from(2)?.max(candle_core::D::Minus1);
    }
    x.contiguous()?.apply_op1(GlobalMaxPool {
        argmax: Mutex::new(Vec::new()),
    })
}

/// One call of the op; the forward keeps each row's argmax here for the backward of the
/// same graph node.
struct GlobalMaxPool {
    argmax: Mutex<Vec<u32>>,
}

/// Rows handed to one thread at a time.
const ROWS_PER_TASK: usize = 64;

impl CustomOp1 for GlobalMaxPool {
    fn name(&self) -> &'static str {
        "global-max-pool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims();
        let width: usize = dims[2..].iter().product();
        if width == 0 {
            candle_core::bail!("global max pool over no positions: {:?}", layout.shape());
        }
        if width > u32::MAX as usize {
            candle_core::bail!("global max pool over {width} positions: too many to index");
        }
        let data = match layout.contiguous_offsets() {
            Some((start, end)) => &storage.as_slice::<f32>()?[start..end],
            None => candle_core::bail!("global max pool: the input must be contiguous"),
        };
        let (max, argmax): (Vec<f32>, Vec<u32>) = data
            .par_chunks(width)
            .with_min_len(ROWS_PER_TASK)
            .map(|row| {
                // The first maximum; NaN propagates as candle's max does (NaN > x is false,
                // so a NaN is kept once it is the running maximum).
                let mut best = (row[0], 0u32);
                for (i, &v) in row.iter().enumerate().skip(1) {
                    if v > best.0 || (v.is_nan() && !best.0.is_nan()) {
                        best = (v, i as u32);
                    }
                }
                best
            })
            .unzip();
        *self.argmax.lock().expect("argmax lock poisoned") = argmax;
        Ok((CpuStorage::F32(max), Shape::from(&dims[..2])))
    }

    fn bwd(&self, x: &Tensor, _max: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let width: usize = x.dims()[2..].iter().product();
        let argmax = self.argmax.lock().expect("argmax lock poisoned");
        let grad = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        if grad.len() != argmax.len() {
            candle_core::bail!(
                "global max pool backward: {} gradients for {} rows",
                grad.len(),
                argmax.len()
            );
        }
        // Zeroed row by row on the threads rather than up front on one.
        let mut dx = output_buffer(x.elem_count())?;
        dx.par_chunks_mut(width)
            .with_min_len(ROWS_PER_TASK)
            .zip(argmax.par_iter().zip(grad.par_iter()))
            .for_each(|(row, (&at, &g))| {
                row.fill(0.0);
                row[at as usize] = g;
            });
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}
