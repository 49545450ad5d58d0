//! The fused BatchNorm against candle-nn's composition: outputs, every gradient and the
//! running statistics, in training and evaluation, with and without affine and ReLU.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use film_vision::BatchNorm;

fn max_relative_error(a: &Tensor, b: &Tensor) -> Result<f32> {
    let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
}

/// Two BatchNorms with identical, non-trivial variables: one for each path.
fn pair(channels: usize, affine: bool) -> Result<[(BatchNorm, VarMap); 2]> {
    let make = || -> Result<(BatchNorm, VarMap)> {
        let varmap = VarMap::new();
        let norm = BatchNorm::new(
            channels,
            affine,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )?;
        for (name, var) in varmap.data().lock().unwrap().iter() {
            // Deterministic values per variable so both modules agree.
            let values: Vec<f32> = (0..channels)
                .map(|c| match name.as_str() {
                    "running_var" => 0.5 + 0.1 * c as f32,
                    _ => 0.3 - 0.07 * c as f32 + name.len() as f32 * 0.01,
                })
                .collect();
            var.set(&Tensor::from_vec(values, channels, &Device::Cpu)?)?;
        }
        Ok((norm, varmap))
    };
    Ok([make()?, make()?])
}

fn check(shape: &[usize], affine: bool, relu: bool, train: bool) -> Result<()> {
    let [(fused, fused_vars), (reference, reference_vars)] = pair(shape[1], affine)?;
    let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, shape, &Device::Cpu)? + 0.5)?)?;
    let weights = Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?;
    let what = format!("shape {shape:?}, affine {affine}, relu {relu}, train {train}");

    let y = if relu {
        fused.forward_relu_t(x.as_tensor(), train)?
    } else {
        fused.forward_t(x.as_tensor(), train)?
    };
    let y_ref = reference.forward_reference_t(x.as_tensor(), train, relu)?;
    let err = max_relative_error(&y, &y_ref)?;
    assert!(err < 1e-5, "outputs differ by {err} ({what})");

    let grads = (y * &weights)?.sum_all()?.backward()?;
    let grads_ref = (y_ref * &weights)?.sum_all()?.backward()?;
    let err = max_relative_error(grads.get(&x).unwrap(), grads_ref.get(&x).unwrap())?;
    assert!(err < 1e-4, "dx differs by {err} ({what})");

    let fused_data = fused_vars.data().lock().unwrap();
    let reference_data = reference_vars.data().lock().unwrap();
    for (name, var) in fused_data.iter() {
        let var_ref = &reference_data[name];
        if !name.starts_with("running") {
            let (g, g_ref) = (grads.get(var.as_tensor()), grads_ref.get(var_ref.as_tensor()));
            let err = max_relative_error(g.expect("fused gradient"), g_ref.expect("reference gradient"))?;
            assert!(err < 1e-4, "d{name} differs by {err} ({what})");
        }
        let err = max_relative_error(var.as_tensor(), var_ref.as_tensor())?;
        assert!(err < 1e-5, "{name} after the step differs by {err} ({what})");
    }
    Ok(())
}

#[test]
fn fused_batch_norm_matches_candle_nn() -> Result<()> {
    for shape in [&[4, 3, 5, 5][..], &[1, 2, 3, 7], &[16, 8], &[7, 5, 1, 1]] {
        for affine in [true, false] {
            for relu in [false, true] {
                for train in [true, false] {
                    check(shape, affine, relu, train)?;
                }
            }
        }
    }
    Ok(())
}

#[test]
fn training_moves_the_running_statistics() -> Result<()> {
    let [(norm, vars), _] = pair(3, true)?;
    let before = vars.data().lock().unwrap()["running_mean"]
        .as_tensor()
        .to_vec1::<f32>()?;
    let x = (Tensor::randn(0f32, 1.0, (8, 3, 4, 4), &Device::Cpu)? + 5.0)?;
    norm.forward_t(&x, true)?;
    let after = vars.data().lock().unwrap()["running_mean"]
        .as_tensor()
        .to_vec1::<f32>()?;
    for (b, a) in before.iter().zip(&after) {
        // momentum 0.1 towards a batch mean near 5
        assert!((a - (0.9 * b + 0.5)).abs() < 0.05, "running mean {b} -> {a}");
    }
    norm.forward_t(&x, false)?;
    let unchanged = vars.data().lock().unwrap()["running_mean"]
        .as_tensor()
        .to_vec1::<f32>()?;
    assert_eq!(
        after, unchanged,
        "evaluation must not move the running statistics"
    );
    Ok(())
}

#[test]
fn statistics_stay_accurate_far_from_zero() -> Result<()> {
    // A mean 500 times the spread: the running statistics after one training step must
    // match the exact (f64) batch statistics.
    let dev = Device::Cpu;
    let (n, c, s) = (8, 3, 64);
    let x = (Tensor::randn(0f32, 1.0, (n, c, s), &dev)? + 500.0)?;
    let varmap = VarMap::new();
    let norm = BatchNorm::new(c, true, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let y = norm.forward_t(&x, true)?;
    let values = x
        .to_dtype(DType::F64)?
        .transpose(0, 1)?
        .flatten_from(1)?
        .to_vec2::<f64>()?;
    let data = varmap.data().lock().unwrap();
    let running_mean = data["running_mean"].as_tensor().to_vec1::<f32>()?;
    let running_var = data["running_var"].as_tensor().to_vec1::<f32>()?;
    for (channel, v) in values.iter().enumerate() {
        let count = v.len() as f64;
        let mean = v.iter().sum::<f64>() / count;
        let unbiased = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (count - 1.0);
        // Running statistics start at (0, 1) with momentum 0.1.
        let expected_mean = 0.1 * mean;
        let expected_var = 0.9 + 0.1 * unbiased;
        assert!(
            (running_mean[channel] as f64 - expected_mean).abs() < 1e-4 * expected_mean.abs(),
            "channel {channel}: running mean {} vs {expected_mean}",
            running_mean[channel]
        );
        assert!(
            (running_var[channel] as f64 - expected_var).abs() < 1e-3,
            "channel {channel}: running var {} vs {expected_var}",
            running_var[channel]
        );
    }
    // The normalised output has unit spread despite the offset.
    let spread = y.sqr()?.mean_all()?.to_scalar::<f32>()?;
    assert!((spread - 1.0).abs() < 1e-2, "E[y²] = {spread}");
    Ok(())
}
