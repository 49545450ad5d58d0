//! What every fused CPU op of the workspace does with candle's storage: read an operand as
//! one contiguous slice, and allocate an output without zero-filling it.

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

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
