//! Adam's in-place passes ([`crate::adam`]) on NVIDIA GPUs: the kernels of `adam.cu`,
//! compiled at run time through kernel-launch's NVRTC loader (feature `cuda`), launched as
//! `adam_launches.rs` plans them.
//!
//! Composed from candle ops, one variable's update was a dozen element-wise kernels, each
//! allocating its output; here it is three passes, each reading every operand once.

use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{Layout, Result};
use kernel_launch::kernel_call::KernelCall;
use kernel_launch::nvrtc::{self, CudaSource};

use crate::adam::{MomentUpdate, ParameterUpdate};
use crate::adam_launches::AdamBuffer;

static SOURCE: CudaSource = CudaSource {
    name: "adam.cu",
    code: include_str!("adam.cu"),
};

/// The operation's name in errors.
const OP: &str = "adam";

/// Launches the call `plan` makes for `len` values, with the buffers at the addresses in
/// `given`; nothing when `len` is 0.
///
/// # Safety
/// Every buffer the call names must be in `given`, at an address holding `len` values,
/// until the stream has run it.
unsafe fn launch(
    device: &CudaDevice,
    len: usize,
    plan: impl FnOnce(u32) -> KernelCall<AdamBuffer>,
    given: &[(AdamBuffer, u64)],
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let kernels = nvrtc::kernels(device, &SOURCE)?;
    let call = plan(kernels.sm_count);
    let stream = device.cuda_stream();
    // SAFETY: as the caller guarantees; the call is adam.cu's own (adam_launches.rs, checked
    // against the kernels on the CPU).
    unsafe { kernels.launch(&stream, &call, |b| nvrtc::address_in(given, b)) }
}

/// `pass` ([`MomentUpdate`]) on CUDA.
pub(crate) fn moment(
    pass: &MomentUpdate,
    moment: (&mut CudaStorage, &Layout),
    grad: (&CudaStorage, &Layout),
    param: (&CudaStorage, &Layout),
) -> Result<()> {
    let (grad, param) = (
        nvrtc::contiguous::<f32>(grad.0, grad.1, OP)?,
        nvrtc::contiguous::<f32>(param.0, param.1, OP)?,
    );
    let device = moment.0.device.clone();
    let mut moment = nvrtc::contiguous_mut::<f32>(moment.0, moment.1, OP)?;
    let len = moment.len();
    if grad.len() != len || param.len() != len {
        candle_core::bail!("Adam: moment, gradient and parameter sizes differ");
    }
    let stream = device.cuda_stream();
    let (grad_ptr, _g) = grad.device_ptr(&stream);
    let (param_ptr, _p) = param.device_ptr(&stream);
    let (moment_ptr, _m) = moment.device_ptr_mut(&stream);
    let given = [
        (AdamBuffer::Moment, moment_ptr),
        (AdamBuffer::Grad, grad_ptr),
        (AdamBuffer::Param, param_ptr),
    ];
    // SAFETY: all three vectors hold `len` values.
    unsafe { launch(&device, len, |sm| pass.kernel_call(len, sm), &given) }
}

/// `pass` ([`ParameterUpdate`]) on CUDA.
pub(crate) fn parameter(
    pass: &ParameterUpdate,
    param: (&mut CudaStorage, &Layout),
    m: (&CudaStorage, &Layout),
    v: (&CudaStorage, &Layout),
) -> Result<()> {
    let (m, v) = (
        nvrtc::contiguous::<f32>(m.0, m.1, OP)?,
        nvrtc::contiguous::<f32>(v.0, v.1, OP)?,
    );
    let device = param.0.device.clone();
    let mut param = nvrtc::contiguous_mut::<f32>(param.0, param.1, OP)?;
    let len = param.len();
    if m.len() != len || v.len() != len {
        candle_core::bail!("Adam: parameter and moment sizes differ");
    }
    let stream = device.cuda_stream();
    let (m_ptr, _m) = m.device_ptr(&stream);
    let (v_ptr, _v) = v.device_ptr(&stream);
    let (param_ptr, _p) = param.device_ptr_mut(&stream);
    let given = [
        (AdamBuffer::Param, param_ptr),
        (AdamBuffer::FirstMoment, m_ptr),
        (AdamBuffer::SecondMoment, v_ptr),
    ];
    // SAFETY: all three vectors hold `len` values.
    unsafe { launch(&device, len, |sm| pass.kernel_call(len, sm), &given) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn adam_kernels_compile_for_sm_90() {
        kernel_launch::nvrtc::assert_compiles_for_hopper(&super::SOURCE);
    }
}
