//! The backward of the GRU layer op when its forward ran on a CUDA device: the operands
//! handed to the GPU passes of `crate::cuda` (feature `cuda`).

use candle_core::{Layout, Result, Storage, Tensor};

use super::Dims;

/// [`super::GruLayer`]'s backward on a CUDA device, from its operands (inputs, weight_hh,
/// packed, states, state gradients) and the forward's kept gates.
pub(super) fn backward(
    d: Dims,
    tensors: [&Tensor; 5],
    kept: &candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    use candle_core::{op::BackpropOp, CudaStorage};
    let [inputs, weight_hh, packed, ..] = tensors;
    let guards = tensors.map(|t| t.storage_and_layout());
    let mut operands: Vec<(&CudaStorage, &Layout)> = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cuda(cuda) => operands.push((cuda, layout)),
            _ => candle_core::bail!("GRU layer: the forward ran on CUDA, so must the backward"),
        }
    }
    // Token embeddings are trained, so the inputs usually want a gradient; a frozen
    // embedding spares the product.
    let grads = crate::cuda::backward(
        d,
        operands[0],
        operands[1],
        operands[2],
        operands[3],
        kept,
        operands[4],
        inputs.track_op(),
    )?;
    let tensor = |storage: CudaStorage, like: &Tensor| {
        Tensor::from_storage(Storage::Cuda(storage), like.shape(), BackpropOp::none(), false)
    };
    Ok((
        grads.inputs.map(|g| tensor(g, inputs)),
        Some(tensor(grads.weight_hh, weight_hh)),
        Some(tensor(grads.packed, packed)),
    ))
}
