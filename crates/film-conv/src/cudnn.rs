//! Convolutions on NVIDIA GPUs through cuDNN (feature `cuda`), planned once per shape.
//!
//! candle 0.11's CUDA `conv2d` is im2col + cuBLAS, and its backward runs the input gradient
//! as a transposed convolution and the weight gradient as another convolution, allocating
//! at every step, so the raw-pixel stem (four convolutions with their BatchNorms) was the
//! largest part of a `paper-raw` training step on a GPU (docs/gpu.md). candle's own `cudnn` feature does not help: it
//! asks cuDNN for an algorithm and allocates a workspace at every call, and leaves the
//! backward as it was. Here the forward, the input gradient and the weight gradient are
//! cuDNN's three convolution calls, and everything that depends only on the shape (the
//! descriptors, the three algorithms from cuDNN's heuristics, their workspace sizes) is
//! chosen at the first call and cached, as PyTorch does.
//!
//! Arithmetic: full f32 (`CUDNN_FMA_MATH`) unless candle's switch for reduced-precision f32
//! products is on (`film-train --tf32`), which allows TF32 tensor cores, as PyTorch's
//! `torch.backends.cudnn.allow_tf32` does (on by default there).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, DeviceId};
use candle_core::op::BackpropOp;
use candle_core::{CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use cudarc::cudnn::{self, sys, ConvBackwardData, ConvBackwardFilter, ConvForward, Cudnn};

use crate::error::ConvError;
use crate::geometry::{ConvGeometry, ConvParams};

/// Everything about one convolution shape that cuDNN needs besides the data.
struct Plan {
    x: cudnn::TensorDescriptor<f32>,
    w: cudnn::FilterDescriptor<f32>,
    y: cudnn::TensorDescriptor<f32>,
    conv: cudnn::ConvDescriptor<f32>,
    forward: (sys::cudnnConvolutionFwdAlgo_t, usize),
    input_grad: (sys::cudnnConvolutionBwdDataAlgo_t, usize),
    weight_grad: (sys::cudnnConvolutionBwdFilterAlgo_t, usize),
}

/// A shape's key: the device, the geometry, and whether TF32 is allowed.
type PlanKey = (DeviceId, ConvGeometry, bool);

thread_local! {
    // cuDNN handles and descriptors are not `Send`; the training loop calls from one thread,
    // and another thread simply builds its own.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    static PLANS: RefCell<HashMap<PlanKey, Rc<Plan>>> = RefCell::new(HashMap::new());
}

fn cudnn_error(call: &'static str, geometry: &ConvGeometry, e: impl std::fmt::Debug) -> candle_core::Error {
    candle_core::Error::wrap(ConvError::Cudnn {
        call,
        geometry: format!("{geometry:?}"),
        detail: format!("{e:?}"),
    })
}

fn int(geometry: &ConvGeometry, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| cudnn_error("describe", geometry, format!("size {value} exceeds i32")))
}

fn handle(device: &CudaDevice, geometry: &ConvGeometry) -> Result<Arc<Cudnn>> {
    HANDLES.with(|handles| {
        if let Some(handle) = handles.borrow().get(&device.id()) {
            return Ok(handle.clone());
        }
        let handle = Cudnn::new(device.cuda_stream()).map_err(|e| cudnn_error("cudnnCreate", geometry, e))?;
        handles.borrow_mut().insert(device.id(), handle.clone());
        Ok(handle)
    })
}

/// The plan for `geometry` on `device`, made at the first call.
fn plan(device: &CudaDevice, geometry: ConvGeometry) -> Result<Rc<Plan>> {
    let tf32 = candle_core::cuda_backend::gemm_reduced_precision_f32();
    let key = (device.id(), geometry, tf32);
    if let Some(plan) = PLANS.with(|plans| plans.borrow().get(&key).cloned()) {
        return Ok(plan);
    }
    let g = &geometry;
    let handle = handle(device, g)?;
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let err = |call| move |e| cudnn_error(call, g, e);
    let x = handle
        .create_4d_tensor::<f32>(
            nchw,
            [
                int(g, g.batch)?,
                int(g, g.in_channels)?,
                int(g, g.in_h)?,
                int(g, g.in_w)?,
            ],
        )
        .map_err(err("cudnnSetTensor4dDescriptor (input)"))?;
    let y = handle
        .create_4d_tensor::<f32>(
            nchw,
            [
                int(g, g.batch)?,
                int(g, g.out_channels)?,
                int(g, g.out_h)?,
                int(g, g.out_w)?,
            ],
        )
        .map_err(err("cudnnSetTensor4dDescriptor (output)"))?;
    let w = handle
        .create_4d_filter::<f32>(
            nchw,
            [
                int(g, g.out_channels)?,
                int(g, g.in_channels)?,
                int(g, g.kernel_h)?,
                int(g, g.kernel_w)?,
            ],
        )
        .map_err(err("cudnnSetFilter4dDescriptor"))?;
    let (stride, padding) = (int(g, g.stride)?, int(g, g.padding)?);
    let mut conv = handle
        .create_conv2d::<f32>(
            [padding, padding],
            [stride, stride],
            [1, 1],
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )
        .map_err(err("cudnnSetConvolution2dDescriptor"))?;
    let math = if tf32 {
        sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
    } else {
        sys::cudnnMathType_t::CUDNN_FMA_MATH
    };
    conv.set_math_type(math)
        .map_err(err("cudnnSetConvolutionMathType"))?;
    let forward = {
        let op = ConvForward {
            conv: &conv,
            x: &x,
            w: &w,
            y: &y,
        };
        let algo = op
            .pick_algorithm()
            .map_err(err("cudnnGetConvolutionForwardAlgorithm_v7"))?;
        (
            algo,
            op.get_workspace_size(algo)
                .map_err(err("cudnnGetConvolutionForwardWorkspaceSize"))?,
        )
    };
    let input_grad = {
        let op = ConvBackwardData {
            conv: &conv,
            dx: &x,
            w: &w,
            dy: &y,
        };
        let algo = op
            .pick_algorithm()
            .map_err(err("cudnnGetConvolutionBackwardDataAlgorithm_v7"))?;
        (
            algo,
            op.get_workspace_size(algo)
                .map_err(err("cudnnGetConvolutionBackwardDataWorkspaceSize"))?,
        )
    };
    let weight_grad = {
        let op = ConvBackwardFilter {
            conv: &conv,
            x: &x,
            dw: &w,
            dy: &y,
        };
        let algo = op
            .pick_algorithm()
            .map_err(err("cudnnGetConvolutionBackwardFilterAlgorithm_v7"))?;
        (
            algo,
            op.get_workspace_size(algo)
                .map_err(err("cudnnGetConvolutionBackwardFilterWorkspaceSize"))?,
        )
    };
    let plan = Rc::new(Plan {
        x,
        w,
        y,
        conv,
        forward,
        input_grad,
        weight_grad,
    });
    PLANS.with(|plans| plans.borrow_mut().insert(key, plan.clone()));
    Ok(plan)
}

/// A workspace of `bytes`, or none.
fn workspace(device: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    // SAFETY: cuDNN uses the workspace as scratch and never reads what it did not write.
    (bytes > 0)
        .then(|| unsafe { device.alloc::<u8>(bytes) })
        .transpose()
}

fn values<'a>(storage: &'a CudaStorage, layout: &Layout, what: &'static str) -> Result<CudaView<'a, f32>> {
    if storage.dtype() != DType::F32 {
        return Err(candle_core::Error::UnsupportedDTypeForOp(storage.dtype(), what));
    }
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(storage.as_cuda_slice::<f32>()?.slice(start..end)),
        None => Err(candle_core::Error::RequiresContiguous { op: what }),
    }
}

/// The forward convolution as a candle op: `x` and `w` in, y out; its backward runs
/// cuDNN's two gradient calls.
struct CudnnConv {
    params: ConvParams,
}

impl CustomOp2 for CudnnConv {
    fn name(&self) -> &'static str {
        "film-conv-cudnn"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("film-conv: the cuDNN convolution runs on CUDA tensors only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        w: &CudaStorage,
        w_layout: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let geometry = ConvGeometry::new(x_layout.shape(), w_layout.shape(), self.params)
            .map_err(candle_core::Error::wrap)?;
        let device = &x.device;
        let plan = plan(device, geometry)?;
        let (xs, ws) = (
            values(x, x_layout, "film-conv-cudnn")?,
            values(w, w_layout, "film-conv-cudnn")?,
        );
        let shape = Shape::from((
            geometry.batch,
            geometry.out_channels,
            geometry.out_h,
            geometry.out_w,
        ));
        // SAFETY: the convolution writes every output value (beta = 0).
        let mut y = unsafe { device.alloc::<f32>(shape.elem_count()) }?;
        let (algo, bytes) = plan.forward;
        let mut scratch = workspace(device, bytes)?;
        let op = ConvForward {
            conv: &plan.conv,
            x: &plan.x,
            w: &plan.w,
            y: &plan.y,
        };
        // SAFETY: the views and the output hold exactly the values the descriptors describe
        // (f32, NCHW, contiguous), and the workspace has the size cuDNN asked for.
        unsafe { op.launch(algo, scratch.as_mut(), (1.0, 0.0), &xs, &ws, &mut y) }
            .map_err(|e| cudnn_error("cudnnConvolutionForward", &geometry, e))?;
        Ok((CudaStorage::wrap_cuda_slice(y, device.clone()), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let geometry =
            ConvGeometry::new(x.shape(), w.shape(), self.params).map_err(candle_core::Error::wrap)?;
        let (x_storage, x_layout) = x.storage_and_layout();
        let (w_storage, w_layout) = w.storage_and_layout();
        let (grad_storage, grad_layout) = grad.storage_and_layout();
        let (Storage::Cuda(xc), Storage::Cuda(wc), Storage::Cuda(gc)) =
            (&*x_storage, &*w_storage, &*grad_storage)
        else {
            candle_core::bail!("film-conv: the cuDNN convolution's backward needs CUDA tensors")
        };
        let device = &xc.device;
        let plan = plan(device, geometry)?;
        let xs = values(xc, x_layout, "film-conv-cudnn-backward")?;
        let ws = values(wc, w_layout, "film-conv-cudnn-backward")?;
        let gs = values(gc, grad_layout, "film-conv-cudnn-backward")?;

        // SAFETY: both gradient calls write every value of their output (beta = 0).
        let mut dx = unsafe { device.alloc::<f32>(x.elem_count()) }?;
        let mut dw = unsafe { device.alloc::<f32>(w.elem_count()) }?;
        let (algo, bytes) = plan.input_grad;
        let mut scratch = workspace(device, bytes)?;
        let op = ConvBackwardData {
            conv: &plan.conv,
            dx: &plan.x,
            w: &plan.w,
            dy: &plan.y,
        };
        // SAFETY: as in the forward; dx has the input's size.
        unsafe { op.launch(algo, scratch.as_mut(), (1.0, 0.0), &mut dx, &ws, &gs) }
            .map_err(|e| cudnn_error("cudnnConvolutionBackwardData", &geometry, e))?;
        let (algo, bytes) = plan.weight_grad;
        let mut scratch = workspace(device, bytes)?;
        let op = ConvBackwardFilter {
            conv: &plan.conv,
            x: &plan.x,
            dw: &plan.w,
            dy: &plan.y,
        };
        // SAFETY: as in the forward; dw has the weight's size.
        unsafe { op.launch(algo, scratch.as_mut(), (1.0, 0.0), &xs, &mut dw, &gs) }
            .map_err(|e| cudnn_error("cudnnConvolutionBackwardFilter", &geometry, e))?;
        let tensor = |slice: CudaSlice<f32>, like: &Tensor| {
            let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, device.clone()));
            Tensor::from_storage(storage, like.shape(), BackpropOp::none(), false)
        };
        Ok((Some(tensor(dx, x)), Some(tensor(dw, w))))
    }
}

/// CUDA tensors, all f32.
pub fn supports(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    let f32_cuda = |t: &Tensor| t.device().is_cuda() && t.dtype() == DType::F32;
    f32_cuda(x) && f32_cuda(w) && b.is_none_or(f32_cuda)
}

/// Makes (or finds) cuDNN's plan for a convolution of `geometry` on `device`: descriptors,
/// algorithms and workspace sizes. An error here means cuDNN cannot run the shape at all,
/// which [`crate::conv2d`] answers by falling back to candle's convolution for it.
pub fn prepare(device: &candle_core::Device, geometry: ConvGeometry) -> Result<()> {
    plan(device.as_cuda_device()?, geometry).map(drop)
}

thread_local! {
    static WARNED: RefCell<std::collections::HashSet<ConvGeometry>> = RefCell::new(Default::default());
}

/// Says on standard error, once per shape and thread, that cuDNN could not plan it.
pub(crate) fn warn_fallback(geometry: ConvGeometry, error: &candle_core::Error) {
    if WARNED.with(|warned| warned.borrow_mut().insert(geometry)) {
        eprintln!(
            "warning: film-conv: cuDNN cannot plan the convolution {geometry:?} ({error}); \
             it runs as candle's conv2d instead, which is slower"
        );
    }
}

/// `conv2d(x, w) + b` through cuDNN; the bias is candle's broadcast add.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, params: ConvParams) -> Result<Tensor> {
    let y = x
        .contiguous()?
        .apply_op2(&w.contiguous()?, CudnnConv { params })?;
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}
