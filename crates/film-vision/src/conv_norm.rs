//! Convolution, BatchNorm and ReLU as one differentiable candle op on the CPU: the stem's
//! layers and the classifier's projection.
//!
//! As three ops, the convolution's output is a graph node of its own, and candle
//! accumulates its gradient into a zero-filled buffer before the convolution's backward
//! reads it: on the stem's first layer (64 × 64 × 32 × 32 at `mini`) that is two
//! single-threaded passes over 16.8 MB per step. Here the convolution's output stays
//! inside the op, kept for the backward. Both directions also work one image at a time
//! where they can: the forward takes each image's part of the batch statistics while its
//! output is in cache, and the backward makes each image's gradient at the convolution's
//! output just before the convolution's backward reads it. The arithmetic is film-conv's
//! kernels and the fused BatchNorm's passes.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use film_conv::{kernels, ConvGeometry, ConvParams};

use crate::batch_norm::cpu::{
    coefficients, combine_moments, f32_data, normalize, output_buffer, row_moments, NormBackward,
};

/// The op's name in errors.
const OP: &str = "convolution + BatchNorm";

/// What the forward leaves for the backward and for the running statistics' update.
pub(crate) struct Saved {
    /// The convolution's output (N, C_out, OH, OW), before normalising.
    conv_out: Vec<f32>,
    /// (C_out, 2) rows of [mean, 1 / std] used to normalise.
    stats: Vec<f32>,
    /// The batch's mean and biased variance (training only).
    batch_statistics: Option<(Vec<f32>, Vec<f32>)>,
}

/// `relu(BatchNorm(conv(x, w) + conv_bias))`: `x.apply_op3(w, params, op)` with `params`
/// (C_out, 3) rows of [conv bias, BatchNorm scale, BatchNorm shift].
pub(crate) struct ConvNormReluOp {
    pub conv: ConvParams,
    /// Normalise with the batch's statistics (training) instead of `running`.
    pub batch_statistics: bool,
    pub eps: f64,
    /// The running mean and variance (evaluation).
    pub running: Option<(Vec<f32>, Vec<f32>)>,
    /// Shared with the caller, who reads the batch statistics after the forward.
    pub saved: Arc<Mutex<Option<Saved>>>,
}

/// The three parameters of each output channel, split out of `params`.
fn split_params(params: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let bias = params.chunks_exact(3).map(|p| p[0]).collect();
    let affine = params.chunks_exact(3).flat_map(|p| [p[1], p[2]]).collect();
    (bias, affine)
}

fn with_f32<R>(what: &str, t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("convolution + BatchNorm: the {what} is not on the CPU")
    };
    f(f32_data(OP, cpu, layout)?)
}

impl ConvNormReluOp {
    /// The batch statistics the last forward computed, to update the running ones.
    pub fn take_batch_statistics(saved: &Mutex<Option<Saved>>) -> Option<(Vec<f32>, Vec<f32>)> {
        saved
            .lock()
            .expect("saved state lock poisoned")
            .as_mut()
            .and_then(|s| s.batch_statistics.take())
    }
}

impl CustomOp3 for ConvNormReluOp {
    fn name(&self) -> &'static str {
        "conv-batch-norm-relu"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
        params: &CpuStorage,
        params_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeometry::new(x_layout.shape(), w_layout.shape(), self.conv)?;
        if params_layout.shape().dims() != [g.out_channels, 3] {
            candle_core::bail!(
                "convolution + BatchNorm: parameters {:?} for {} output channels (expected ({}, 3))",
                params_layout.shape(),
                g.out_channels,
                g.out_channels
            );
        }
        let (x, w) = (f32_data(OP, x, x_layout)?, f32_data(OP, w, w_layout)?);
        let (bias, affine) = split_params(f32_data(OP, params, params_layout)?);
        let mut conv_out = output_buffer(g.batch * g.out_image_len())?;
        let (channels, spatial) = (g.out_channels, g.out_plane());
        // The batch statistics' per-image parts are taken while each image's output is in
        // cache: on the stem's first layer that saves two passes over 16.8 MB per step.
        let moments = kernels::forward_with(&g, x, w, Some(&bias), &mut conv_out, |out| {
            match self.batch_statistics {
                true => out.chunks_exact(spatial).map(row_moments).collect(),
                false => Vec::new(),
            }
        });
        let (mean, variance, batch_statistics) = if self.batch_statistics {
            let (mean, variance) = combine_moments(&moments, channels, spatial);
            (mean.clone(), variance.clone(), Some((mean, variance)))
        } else {
            let Some((mean, variance)) = self.running.clone() else {
                candle_core::bail!("convolution + BatchNorm: evaluation without running statistics")
            };
            (mean, variance, None)
        };
        let stats: Vec<f32> = mean
            .iter()
            .zip(&variance)
            .flat_map(|(&m, &v)| [m, 1.0 / (v + self.eps as f32).sqrt()])
            .collect();
        let y = normalize(&conv_out, &coefficients(&affine, &stats), true, channels, spatial)?;
        *self.saved.lock().expect("saved state lock poisoned") = Some(Saved {
            conv_out,
            stats,
            batch_statistics,
        });
        Ok((CpuStorage::F32(y), g.output_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = ConvGeometry::new(x.shape(), w.shape(), self.conv)?;
        let grad_y = grad_y.contiguous()?;
        let saved = self.saved.lock().expect("saved state lock poisoned");
        let Some(saved) = saved.as_ref() else {
            candle_core::bail!("convolution + BatchNorm: backward before forward")
        };
        let (_, affine) = split_params(&params.flatten_all()?.to_vec1::<f32>()?);
        let (channels, spatial) = (g.out_channels, g.out_plane());
        let weight_len = w.elem_count();
        let mut grad_conv = vec![0f32; weight_len + channels];
        let mut grad_x = match x.track_op() {
            true => Some(output_buffer(g.batch * g.in_image_len())?),
            false => None,
        };
        let grad_affine = with_f32("output gradient", &grad_y, |dy| {
            with_f32("input", x, |xs| {
                with_f32("weight", w, |w| {
                    // BatchNorm's sums over the batch first; then each image's gradient at
                    // the convolution's output is made just before the convolution's
                    // backward reads it, and never written out for the whole batch.
                    let norm = NormBackward::new(
                        &saved.conv_out,
                        dy,
                        &affine,
                        &saved.stats,
                        true,
                        self.batch_statistics,
                        (g.batch, channels, spatial),
                    );
                    let image_len = g.out_image_len();
                    kernels::backward_with(
                        &g,
                        xs,
                        w,
                        grad_x.as_deref_mut(),
                        true,
                        &mut grad_conv,
                        |n, dz| {
                            let start = n * image_len;
                            let rows = saved.conv_out[start..][..image_len]
                                .chunks_exact(spatial)
                                .zip(dy[start..][..image_len].chunks_exact(spatial));
                            for (c, ((conv_out, dy), dz)) in
                                rows.zip(dz.chunks_exact_mut(spatial)).enumerate()
                            {
                                norm.input_grad_row(n * channels + c, conv_out, dy, dz);
                            }
                        },
                    );
                    Ok(norm.grad_affine())
                })
            })
        })?;
        let grad_x = grad_x
            .map(|dx| Tensor::from_vec(dx, x.shape(), x.device()))
            .transpose()?;
        let grad_w = Tensor::from_slice(&grad_conv[..weight_len], w.shape(), w.device())?;
        let grad_params: Vec<f32> = grad_conv[weight_len..]
            .iter()
            .zip(grad_affine.chunks_exact(2))
            .flat_map(|(&db, da)| [db, da[0], da[1]])
            .collect();
        let grad_params = Tensor::from_vec(grad_params, (channels, 3), params.device())?;
        Ok((grad_x, Some(grad_w), Some(grad_params)))
    }
}
