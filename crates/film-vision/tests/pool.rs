//! The fused global max pool against candle's `flatten_from(2)` + `max` and autograd.

use candle_core::{DType, Device, Result, Tensor, Var, D};
use film_vision::global_max_pool;

fn check(shape: &[usize], seed: u64) -> Result<()> {
    let dev = Device::Cpu;
    // Distinct values (a random permutation, scaled), so there are no ties and both paths
    // send each row's gradient to the same position.
    let n: usize = shape.iter().product();
    let mut state = seed | 1;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let values: Vec<f32> = order.iter().map(|&k| k as f32 / n as f32 - 0.5).collect();
    let x = Var::from_tensor(&Tensor::from_vec(values, shape, &dev)?)?;
    let fused = global_max_pool(x.as_tensor())?;
    let reference = x.as_tensor().flatten_from(2)?.max(D::Minus1)?;
    assert_eq!(fused.dims(), reference.dims());
    let diff = (&fused - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(diff, 0.0, "{shape:?}: forward differs");

    let weights = Tensor::randn(0f32, 1.0, reference.shape(), &dev)?;
    let g_fused = (fused * &weights)?.sum_all()?.backward()?;
    let g_reference = (reference * &weights)?.sum_all()?.backward()?;
    let fused = g_fused.get(&x).expect("fused gradient");
    let reference = g_reference.get(&x).expect("reference gradient");
    let diff = (fused - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(diff, 0.0, "{shape:?}: gradient differs");
    Ok(())
}

#[test]
fn matches_candle_without_ties() -> Result<()> {
    check(&[64, 256, 8, 8], 1)?;
    check(&[3, 5, 7], 2)?;
    check(&[1, 1, 1, 1], 3)?;
    check(&[2, 3, 4, 5, 6], 4)
}

#[test]
fn a_tie_sends_the_gradient_to_the_first_maximum() -> Result<()> {
    let x = Tensor::new(&[[1f32, 3.0], [3.0, 2.0]], &Device::Cpu)?.reshape((1, 1, 2, 2))?;
    let x = Var::from_tensor(&x)?;
    let pooled = global_max_pool(x.as_tensor())?;
    assert_eq!(pooled.to_vec2::<f32>()?, [[3.0]]);
    let grads = (pooled * 2.0)?.sum_all()?.backward()?;
    let dx = grads.get(&x).expect("gradient").flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(dx, [0.0, 2.0, 0.0, 0.0]);
    Ok(())
}

#[test]
fn other_dtypes_use_candle() -> Result<()> {
    let x = Tensor::new(&[[[1f64, 4.0, 2.0]]], &Device::Cpu)?;
    assert_eq!(global_max_pool(&x)?.to_vec2::<f64>()?, [[4.0]]);
    let x = x.to_dtype(DType::F32)?;
    assert_eq!(global_max_pool(&x)?.to_vec2::<f32>()?, [[4.0]]);
    Ok(())
}

#[test]
fn a_tensor_without_positions_is_refused() -> Result<()> {
    let x = Tensor::zeros((4, 3), DType::F32, &Device::Cpu)?;
    let err = global_max_pool(&x).unwrap_err().to_string();
    assert!(err.contains("(N, C, *spatial)"), "{err}");
    Ok(())
}
