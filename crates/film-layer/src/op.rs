//! The fused FiLM op as candle custom ops, so that autograd calls our backward kernel.

use candle_core::backend::BackendStorage;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};

use crate::cpu::{self, Compute};
use crate::layout::Geometry;
use kernel_launch::cpu::contiguous;

/// y = γ ⊙ x + β, then ReLU if `relu`; as `CustomOp3` it also adds a residual.
///
/// Operands: x, the packed (N, 2C) parameters (γ | β) and, for the three-operand form,
/// the residual. γ and β travel as one tensor because candle's custom ops take at most
/// three operands and the block epilogue needs four.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FusedFilm {
    pub geo: Geometry,
    pub relu: bool,
}

/// The backward of [`FusedFilm`]: operands x, dy and the packed parameters; result dx
/// followed by d(params), flattened into one vector.
#[derive(Clone, Copy, Debug)]
struct FusedFilmBackward {
    geo: Geometry,
    relu: bool,
}

impl FusedFilm {
    fn run_forward<T: WithDType, A: Compute + Into<f64>>(
        &self,
        x: (&CpuStorage, &Layout),
        params: (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<CpuStorage> {
        let name = "film-fused";
        let x = contiguous::<T>(x.0, x.1, name)?;
        let params = contiguous::<T>(params.0, params.1, name)?;
        let residual = residual.map(|(s, l)| contiguous::<T>(s, l, name)).transpose()?;
        Ok(T::to_cpu_storage_owned(cpu::forward::<T, A>(
            self.geo, x, params, residual, self.relu,
        )))
    }

    fn forward_any(
        &self,
        x: (&CpuStorage, &Layout),
        params: (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let storage = match x.0 {
            CpuStorage::F32(_) => self.run_forward::<f32, f32>(x, params, residual)?,
            CpuStorage::F64(_) => self.run_forward::<f64, f64>(x, params, residual)?,
            CpuStorage::F16(v) => self.run_forward_like::<_>(v, x, params, residual)?,
            CpuStorage::BF16(v) => self.run_forward_like::<_>(v, x, params, residual)?,
            other => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    other.dtype(),
                    "film-fused",
                ))
            }
        };
        Ok((storage, x.1.shape().clone()))
    }

    /// Half-precision storage computes in f32; `_witness` names the element type, which
    /// this crate cannot spell without depending on `half`.
    fn run_forward_like<T: WithDType>(
        &self,
        _witness: &[T],
        x: (&CpuStorage, &Layout),
        params: (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<CpuStorage> {
        self.run_forward::<T, f32>(x, params, residual)
    }

    /// dx, d(params) and, for the residual form, d(residual) = dy.
    fn backward(&self, x: &Tensor, params: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let op = FusedFilmBackward {
            geo: self.geo,
            relu: self.relu,
        };
        let packed = x.apply_op3_no_bwd(&grad, params, &op)?;
        let numel = self.geo.numel();
        // Both views share the packed storage: no copy.
        let dx = packed.narrow(0, 0, numel)?.reshape(x.shape())?;
        let dparams = packed
            .narrow(0, numel, self.geo.param_len())?
            .reshape(params.shape())?;
        Ok((dx, dparams))
    }
}

impl CustomOp2 for FusedFilm {
    fn name(&self) -> &'static str {
        "film-fused"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward_any((s1, l1), (s2, l2), None)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let y = crate::cuda::forward(self.geo, self.relu, (s1, l1), (s2, l2), None)?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dparams) = self.backward(x, params, grad)?;
        Ok((Some(dx), Some(dparams)))
    }
}

impl CustomOp3 for FusedFilm {
    fn name(&self) -> &'static str {
        "film-fused-residual"
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
        self.forward_any((s1, l1), (s2, l2), Some((s3, l3)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let y = crate::cuda::forward(self.geo, self.relu, (s1, l1), (s2, l2), Some((s3, l3)))?;
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _residual: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dparams) = self.backward(x, params, grad)?;
        Ok((Some(dx), Some(dparams), Some(grad.clone())))
    }
}

impl FusedFilmBackward {
    fn run<T: WithDType, A: Compute + Into<f64>>(
        &self,
        x: (&CpuStorage, &Layout),
        dy: (&CpuStorage, &Layout),
        params: (&CpuStorage, &Layout),
    ) -> Result<CpuStorage> {
        let name = "film-fused-backward";
        let x = contiguous::<T>(x.0, x.1, name)?;
        let dy = contiguous::<T>(dy.0, dy.1, name)?;
        let params = contiguous::<T>(params.0, params.1, name)?;
        Ok(T::to_cpu_storage_owned(cpu::backward::<T, A>(
            self.geo, x, dy, params, self.relu,
        )))
    }

    fn run_like<T: WithDType>(
        &self,
        _witness: &[T],
        x: (&CpuStorage, &Layout),
        dy: (&CpuStorage, &Layout),
        params: (&CpuStorage, &Layout),
    ) -> Result<CpuStorage> {
        self.run::<T, f32>(x, dy, params)
    }
}

impl CustomOp3 for FusedFilmBackward {
    fn name(&self) -> &'static str {
        "film-fused-backward"
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
        let (x, dy, params) = ((s1, l1), (s2, l2), (s3, l3));
        let storage = match s1 {
            CpuStorage::F32(_) => self.run::<f32, f32>(x, dy, params)?,
            CpuStorage::F64(_) => self.run::<f64, f64>(x, dy, params)?,
            CpuStorage::F16(v) => self.run_like(v, x, dy, params)?,
            CpuStorage::BF16(v) => self.run_like(v, x, dy, params)?,
            other => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    other.dtype(),
                    "film-fused-backward",
                ))
            }
        };
        let len = self.geo.numel() + self.geo.param_len();
        Ok((storage, Shape::from(len)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let out = crate::cuda::backward(self.geo, self.relu, (s1, l1), (s2, l2), (s3, l3))?;
        let len = self.geo.numel() + self.geo.param_len();
        Ok((out, Shape::from(len)))
    }
}
