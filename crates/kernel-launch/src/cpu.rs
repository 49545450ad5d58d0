//! What every fused CPU op of the workspace does with candle's storage: read an operand as
//! one contiguous slice, allocate an output without zero-filling it, and multiply strided
//! matrices with the `gemm` crate.

use std::sync::OnceLock;

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cpu_backend::CpuDevice;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, WithDType};

/// The values of an operand that `op` reads as one contiguous run, from its layout's start
/// offset. A storage of another dtype is candle's dtype error; a strided layout is
/// candle's `RequiresContiguous` naming `op`.
pub fn contiguous<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &'static str,
) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(candle_core::Error::RequiresContiguous { op }),
    }
}

/// An f32 buffer of `len` elements that is not zero-filled, allocated by candle's own
/// `alloc_uninit` as candle allocates its op outputs: the fused ops write their outputs
/// completely, and zero-filling them first is a measurable part of a training step
/// (docs/benchmarks.md).
///
/// # Safety
/// The caller writes every element before anything reads it.
pub unsafe fn output_buffer(len: usize) -> Result<Vec<f32>> {
    // SAFETY: the caller's contract; every bit pattern is a valid f32.
    match unsafe { CpuDevice.alloc_uninit(&Shape::from(len), DType::F32)? } {
        CpuStorage::F32(buffer) => Ok(buffer),
        other => candle_core::bail!("alloc_uninit gave {:?} storage for F32", other.dtype()),
    }
}

/// The number of threads candle's CPU kernels use ([`candle_core::utils::get_num_threads`]),
/// read once per process. Without `RAYON_NUM_THREADS` set, candle's own function counts
/// the physical cores by parsing `/proc/cpuinfo` on every call, and the fused ops ask once
/// per launch (the GRU once per time step): a file read on the training step's serial path.
/// Like rayon's global pool, the count is fixed at first use.
pub fn num_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

/// A strided f32 matrix: element (i, j) at `ptr + i * row_stride + j * col_stride`, so
/// that a transposed operand is the same memory with its strides swapped.
#[derive(Clone, Copy, Debug)]
pub struct Strided {
    pub ptr: *const f32,
    pub row_stride: isize,
    pub col_stride: isize,
}

/// dst (m × n) = lhs (m × k) · rhs (k × n), or dst += that product with `accumulate`, with
/// dst at `dst` with strides (`row_stride`, `col_stride`). `parallelism` is gemm's: the
/// callers choose between one multi-threaded product and several single-threaded ones.
///
/// # Safety
/// Every element the three views address must be inside a live allocation, and `dst` must
/// not overlap `lhs` or `rhs`.
#[inline]
pub unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (row_stride, col_stride): (isize, isize),
    accumulate: bool,
    lhs: Strided,
    rhs: Strided,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract. alpha (1) scales what dst held when `accumulate` is
    // set, beta (1) the product; nothing is conjugated.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            col_stride,
            row_stride,
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
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn gemm_f32_multiplies_strided_views_and_accumulates() {
        // lhs 2 x 3 row-major; rhs 3 x 2 read transposed from a row-major 2 x 3.
        let lhs = [1f32, 2., 3., 4., 5., 6.];
        let rhs_t = [1f32, 0., 2., 0., 1., 1.];
        let view = |data: &[f32], row_stride, col_stride| Strided {
            ptr: data.as_ptr(),
            row_stride,
            col_stride,
        };
        // dst 2 x 2 in a 2 x 3 row-major buffer, its last column untouched.
        let mut dst = [9f32; 6];
        let multiply = |dst: &mut [f32], accumulate| {
            // SAFETY: every view stays inside its 6-element array; dst is separate.
            unsafe {
                gemm_f32(
                    (2, 2, 3),
                    dst.as_mut_ptr(),
                    (3, 1),
                    accumulate,
                    view(&lhs, 3, 1),
                    view(&rhs_t, 1, 3),
                    gemm::Parallelism::None,
                )
            }
        };
        multiply(&mut dst, false);
        assert_eq!(dst, [7., 5., 9., 16., 11., 9.]);
        multiply(&mut dst, true);
        assert_eq!(dst, [14., 10., 9., 32., 22., 9.]);
    }

    #[test]
    fn contiguous_honours_the_start_offset_and_refuses_strides() -> Result<()> {
        let t = Tensor::arange(0f32, 12., &Device::Cpu)?.reshape((3, 4))?;
        let row = t.narrow(0, 1, 2)?;
        let (storage, layout) = row.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            panic!("a CPU tensor")
        };
        assert_eq!(
            contiguous::<f32>(cpu, layout, "test")?,
            &[4., 5., 6., 7., 8., 9., 10., 11.]
        );
        let column = t.narrow(1, 1, 1)?;
        let (storage, layout) = column.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            panic!("a CPU tensor")
        };
        let err = contiguous::<f32>(cpu, layout, "the test op").unwrap_err();
        assert!(err.to_string().contains("the test op"), "{err}");
        assert!(contiguous::<f64>(cpu, &Layout::contiguous(3), "test").is_err());
        Ok(())
    }

    #[test]
    fn output_buffer_has_the_asked_length() -> Result<()> {
        // SAFETY: filled before it is read.
        let mut buffer = unsafe { output_buffer(37)? };
        buffer.fill(1.0);
        assert_eq!(buffer.len(), 37);
        Ok(())
    }
}
