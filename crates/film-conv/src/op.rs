//! The fast kernels as candle custom ops: a differentiable forward op and
//! the two backward ops it calls.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use crate::error::ConvError;
use crate::geometry::{ConvGeometry, ConvParams};
use crate::kernels;

fn f32_data<'a>(what: &'static str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        return Err(ConvError::DType {
            what,
            dtype: storage.dtype(),
        }
        .into());
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or(ConvError::NotContiguous { what })?;
    Ok(&data[start..end])
}

/// An f32 buffer of `len` elements that is not zero-filled, for an output the kernel
/// writes completely.
fn output_buffer(len: usize) -> Result<Vec<f32>> {
    // SAFETY: every caller passes the buffer to a kernel that writes each element before
    // anything reads it.
    unsafe { kernel_launch::cpu::output_buffer(len) }
}

/// `conv2d(x, w) [+ b]`, then ReLU when `relu`, on CPU f32: `x.apply_op2(w, op)` or
/// `x.apply_op3(w, b, op)`. Backward gives the gradients of every argument
/// that takes part in autograd (an input that is plain data gets none, which
/// spares the stem its input-gradient pass).
///
/// The ReLU rides on the convolution because as a candle op of its own it is a graph node
/// whose backward is five single-threaded passes over the activations (a comparison, a
/// cast, a product, a zero-filled buffer and a sum); here it is one multi-threaded pass.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dOp {
    pub params: ConvParams,
    pub relu: bool,
}

/// `grad` where `output > 0`, else 0: the gradient through `output = max(z, 0)`. At z = 0
/// exactly candle's ReLU passes the gradient and this does not; the subgradient there is
/// either.
fn relu_masked(output: &Tensor, grad: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    let (out_storage, out_layout) = output.storage_and_layout();
    let (grad_storage, grad_layout) = grad.storage_and_layout();
    let (candle_core::Storage::Cpu(out_cpu), candle_core::Storage::Cpu(grad_cpu)) =
        (&*out_storage, &*grad_storage)
    else {
        candle_core::bail!("film-conv ReLU backward: tensors are not on the CPU")
    };
    let (out, dy) = (
        f32_data("output", out_cpu, out_layout)?,
        f32_data("output gradient", grad_cpu, grad_layout)?,
    );
    let mut masked = output_buffer(dy.len())?;
    const GRAIN: usize = 1 << 14;
    masked
        .par_chunks_mut(GRAIN)
        .zip(out.par_chunks(GRAIN).zip(dy.par_chunks(GRAIN)))
        .for_each(|(masked, (out, dy))| {
            for ((m, &o), &d) in masked.iter_mut().zip(out).zip(dy) {
                // A product with 0 or 1, not a select: a select compiles to a branch per
                // value, mispredicted on about half of a ReLU's outputs.
                *m = d * f32::from(u8::from(o > 0.0));
            }
        });
    Tensor::from_vec(masked, output.shape(), output.device())
}

impl Conv2dOp {
    fn run(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = ConvGeometry::new(x.1.shape(), w.1.shape(), self.params)?;
        let bias = match bias {
            Some((s, l)) => {
                if l.shape().dims() != [g.out_channels] {
                    return Err(ConvError::BiasShape {
                        bias: l.shape().clone(),
                        out_channels: g.out_channels,
                    }
                    .into());
                }
                Some(f32_data("bias", s, l)?)
            }
            None => None,
        };
        let (x, w) = (f32_data("input", x.0, x.1)?, f32_data("weight", w.0, w.1)?);
        // Written completely: bias rows first when there is a bias, else the first product
        // of each output band overwrites.
        let mut out = output_buffer(g.batch * g.out_image_len())?;
        kernels::forward(&g, x, w, bias, self.relu, &mut out);
        Ok((CpuStorage::F32(out), g.output_shape()))
    }

    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        output: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The seed gradient is often a broadcast (e.g. from `sum`).
        let grad = grad.contiguous()?;
        let grad = match self.relu {
            true => relu_masked(&output.contiguous()?, &grad)?,
            false => grad,
        };
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        let (_, _, in_h, in_w) = x.dims4()?;
        let dx = if x.track_op() {
            let op = InputGradOp {
                params: self.params,
                in_h,
                in_w,
            };
            Some(grad.apply_op2_no_bwd(&w, &op)?)
        } else {
            None
        };
        let wants_bias = bias.is_some_and(Tensor::track_op);
        if !w.track_op() && !wants_bias {
            return Ok((dx, None, None));
        }
        let (out_channels, _, kernel_h, kernel_w) = w.dims4()?;
        let op = ParamGradOp {
            params: self.params,
            kernel_h,
            kernel_w,
            with_bias: bias.is_some(),
        };
        let flat = x.apply_op2_no_bwd(&grad, &op)?;
        let dw = match w.track_op() {
            true => Some(flat.narrow(0, 0, w.elem_count())?.reshape(w.shape())?),
            false => None,
        };
        let db = match wants_bias {
            true => Some(flat.narrow(0, w.elem_count(), out_channels)?),
            false => None,
        };
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "film-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.backward(x, w, None, res, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for Conv2dOp {
    fn name(&self) -> &'static str {
        "film-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run((s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.backward(x, w, Some(b), res, grad)
    }
}

/// The input gradient of a convolution: `dy.apply_op2_no_bwd(w, op)`, with
/// the input's spatial size (not recoverable from `dy` when stride > 1).
#[derive(Debug, Clone, Copy)]
pub struct InputGradOp {
    pub params: ConvParams,
    pub in_h: usize,
    pub in_w: usize,
}

impl CustomOp2 for InputGradOp {
    fn name(&self) -> &'static str {
        "film-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, _, _, _) = l1.shape().dims4()?;
        let (_, in_channels, _, _) = l2.shape().dims4()?;
        let x_shape = Shape::from((batch, in_channels, self.in_h, self.in_w));
        let g = ConvGeometry::new(&x_shape, l2.shape(), self.params)?;
        g.check_output("output gradient", l1.shape())?;
        let (dy, w) = (f32_data("output gradient", s1, l1)?, f32_data("weight", s2, l2)?);
        // Written completely: `input_grad` zeroes each image before folding onto it, or
        // overwrites it with a product.
        let mut dx = output_buffer(g.batch * g.in_image_len())?;
        kernels::input_grad(&g, dy, w, &mut dx);
        Ok((CpuStorage::F32(dx), x_shape))
    }
}

/// The weight gradient, followed by the bias gradient when `with_bias`, as
/// one flat tensor: `x.apply_op2_no_bwd(dy, op)`. One op for both so that
/// the bias sum rides along the pass over `dy` that the weight needs anyway.
#[derive(Debug, Clone, Copy)]
pub struct ParamGradOp {
    pub params: ConvParams,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub with_bias: bool,
}

impl CustomOp2 for ParamGradOp {
    fn name(&self) -> &'static str {
        "film-conv2d-param-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, in_channels, _, _) = l1.shape().dims4()?;
        let (_, out_channels, _, _) = l2.shape().dims4()?;
        let w_shape = Shape::from((out_channels, in_channels, self.kernel_h, self.kernel_w));
        let g = ConvGeometry::new(l1.shape(), &w_shape, self.params)?;
        g.check_output("output gradient", l2.shape())?;
        let (x, dy) = (f32_data("input", s1, l1)?, f32_data("output gradient", s2, l2)?);
        let len = w_shape.elem_count() + if self.with_bias { out_channels } else { 0 };
        let mut out = vec![0f32; len];
        kernels::param_grad(&g, x, dy, self.with_bias, &mut out);
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
