//! batch_norm.cu's kernels, compiled for the CPU by cuda-emulator and launched as
//! `cuda/mod.rs` launches them on a GPU, against candle-nn's BatchNorm: the statistics,
//! the output and every gradient, in training and evaluation, with and without affine
//! parameters and ReLU. The CUDA path's arithmetic is checked in every build this way; its
//! launch plumbing and timing need the GPU (`step_check`, docs/gpu.md).

use std::sync::OnceLock;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use cuda_emulator::{Arg, DeviceBuffer, Module};
use film_vision::BatchNorm;

/// `BN_THREADS` in batch_norm.cu, `CHANNEL_THREADS` in cuda/mod.rs: the per-channel
/// kernels' shared arrays have one slot per thread.
const CHANNEL_THREADS: u32 = 512;
/// Few small blocks for the grid-stride kernels, so that each thread loops.
const GRID: u32 = 3;
const BLOCK: u32 = 64;
const EPS: f32 = 1e-5;

fn kernels() -> &'static Module {
    static MODULE: OnceLock<Module> = OnceLock::new();
    MODULE.get_or_init(|| {
        Module::compile("batch_norm.cu", include_str!("../src/cuda/batch_norm.cu"))
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn max_relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| if g.is_nan() { f32::INFINITY } else { (g - w).abs() })
        .fold(0f32, f32::max);
    worst / scale
}

/// A BatchNorm with non-trivial variables (running statistics included), and its VarMap.
fn batch_norm(channels: usize, affine: bool) -> Result<(BatchNorm, VarMap)> {
    let varmap = VarMap::new();
    let norm = BatchNorm::new(
        channels,
        affine,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let values: Vec<f32> = (0..channels)
            .map(|c| match name.as_str() {
                "running_var" => 0.5 + 0.1 * c as f32,
                "running_mean" => 0.2 - 0.05 * c as f32,
                "weight" => 1.3 - 0.2 * c as f32,
                _ => 0.1 + 0.07 * c as f32,
            })
            .collect();
        var.set(&Tensor::from_vec(values, channels, &Device::Cpu)?)?;
    }
    Ok((norm, varmap))
}

fn variable(varmap: &VarMap, name: &str) -> Vec<f32> {
    varmap.data().lock().unwrap()[name]
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap()
}

fn check(shape: [usize; 4], affine: bool, relu: bool, train: bool) -> Result<()> {
    let what = format!("shape {shape:?}, affine {affine}, relu {relu}, train {train}");
    let [batch, channels] = [shape[0], shape[1]];
    let spatial = shape[2] * shape[3];
    let total = batch * channels * spatial;
    let (norm, varmap) = batch_norm(channels, affine)?;
    let (running_mean, running_var) = (
        variable(&varmap, "running_mean"),
        variable(&varmap, "running_var"),
    );
    let affine_rows: Vec<f32> = match affine {
        true => variable(&varmap, "weight")
            .into_iter()
            .zip(variable(&varmap, "bias"))
            .flat_map(|(w, b)| [w, b])
            .collect(),
        false => [1f32, 0.0].repeat(channels),
    };

    // The reference: candle-nn's composition, differentiated by candle.
    let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, &shape, &Device::Cpu)? + 0.5)?)?;
    let dy = Tensor::randn(0f32, 1.0, &shape, &Device::Cpu)?;
    let y_ref = norm.forward_reference_t(x.as_tensor(), train, relu)?;
    let grads = (&y_ref * &dy)?.sum_all()?.backward()?;
    let x_values = x.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let dy_values = dy.flatten_all()?.to_vec1::<f32>()?;

    let module = kernels();
    let xs = DeviceBuffer::from_slice("x", &x_values);
    let dys = DeviceBuffer::from_slice("dy", &dy_values);
    let affine_buffer = DeviceBuffer::from_slice("affine", &affine_rows);
    let dims = [batch as u32, channels as u32, spatial as u32];
    let stats: Vec<f32> = if train {
        let out = DeviceBuffer::uninit("statistics", 3 * channels);
        let args = [
            Arg::buffer(&xs),
            Arg::buffer(&out),
            dims[0].into(),
            dims[1].into(),
            dims[2].into(),
            EPS.into(),
        ];
        module
            .launch("bn_statistics_f32", channels as u32, CHANNEL_THREADS, &args)
            .unwrap();
        let out = out.values();
        for c in 0..channels {
            let values: Vec<f64> = (0..batch)
                .flat_map(|n| {
                    x_values[(n * channels + c) * spatial..][..spatial]
                        .iter()
                        .map(|&v| v as f64)
                })
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len() as f64;
            let [m, inv_std, var] = [out[3 * c], out[3 * c + 1], out[3 * c + 2]];
            assert!(
                (m as f64 - mean).abs() < 1e-5,
                "channel {c} mean {m}, want {mean} ({what})"
            );
            assert!(
                (var as f64 - variance).abs() < 1e-5 * variance,
                "channel {c} variance {var}, want {variance} ({what})"
            );
            let want_inv_std = 1.0 / (variance + EPS as f64).sqrt();
            assert!(
                (inv_std as f64 - want_inv_std).abs() < 1e-5 * want_inv_std,
                "channel {c} 1/std {inv_std}, want {want_inv_std} ({what})"
            );
        }
        // The host keeps [mean, inv_std] of each row (`device_statistics`).
        out.chunks(3).flat_map(|row| [row[0], row[1]]).collect()
    } else {
        running_mean
            .iter()
            .zip(&running_var)
            .flat_map(|(&m, &v)| [m, 1.0 / (v + EPS).sqrt()])
            .collect()
    };
    let stats = DeviceBuffer::from_slice("stats", &stats);

    let y = DeviceBuffer::uninit("y", total);
    let args = [
        Arg::buffer(&xs),
        Arg::buffer(&affine_buffer),
        Arg::buffer(&stats),
        Arg::buffer(&y),
        (total as u64).into(),
        dims[1].into(),
        dims[2].into(),
        (relu as i32).into(),
    ];
    module.launch("bn_forward_f32", GRID, BLOCK, &args).unwrap();
    let err = max_relative_error(&y.values(), &y_ref.flatten_all()?.to_vec1::<f32>()?);
    assert!(err < 1e-5, "outputs differ by {err} ({what})");

    let grad_affine = DeviceBuffer::uninit("grad_affine", 2 * channels);
    let args = [
        Arg::buffer(&xs),
        Arg::buffer(&dys),
        Arg::buffer(&affine_buffer),
        Arg::buffer(&stats),
        Arg::buffer(&grad_affine),
        dims[0].into(),
        dims[1].into(),
        dims[2].into(),
        (relu as i32).into(),
    ];
    module
        .launch("bn_backward_sums_f32", channels as u32, CHANNEL_THREADS, &args)
        .unwrap();
    let dx = DeviceBuffer::uninit("dx", total);
    let args = [
        Arg::buffer(&xs),
        Arg::buffer(&dys),
        Arg::buffer(&affine_buffer),
        Arg::buffer(&stats),
        Arg::buffer(&grad_affine),
        Arg::buffer(&dx),
        (total as u64).into(),
        dims[1].into(),
        dims[2].into(),
        ((batch * spatial) as f32).into(),
        (relu as i32).into(),
        (train as i32).into(),
    ];
    module
        .launch("bn_backward_input_f32", GRID, BLOCK, &args)
        .unwrap();
    let dx_ref = grads.get(&x).expect("dx").flatten_all()?.to_vec1::<f32>()?;
    let err = max_relative_error(&dx.values(), &dx_ref);
    assert!(err < 1e-4, "dx differs by {err} ({what})");

    if affine {
        let data = varmap.data().lock().unwrap();
        let grad_affine = grad_affine.values();
        for (column, name) in ["weight", "bias"].into_iter().enumerate() {
            let want = grads.get(data[name].as_tensor()).expect(name).to_vec1::<f32>()?;
            let got: Vec<f32> = grad_affine.chunks(2).map(|row| row[column]).collect();
            let err = max_relative_error(&got, &want);
            assert!(err < 1e-4, "d {name} differs by {err} ({what})");
        }
    }
    Ok(())
}

#[test]
fn training_with_batch_statistics() -> Result<()> {
    for relu in [false, true] {
        check([3, 5, 6, 7], true, relu, true)?;
    }
    check([2, 3, 1, 1000], false, true, true)
}

#[test]
fn evaluation_with_running_statistics() -> Result<()> {
    for relu in [false, true] {
        check([3, 5, 6, 7], true, relu, false)?;
    }
    check([4, 2, 5, 3], false, false, false)
}
