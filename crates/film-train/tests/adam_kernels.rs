//! adam.cu's kernels, compiled for the CPU by cuda-emulator and launched as adam_cuda.rs
//! launches them on a GPU, against `Adam::step_composed` (candle's composed update) over
//! several steps, with weight decay. The CUDA path's arithmetic is checked in every build
//! this way; its launch plumbing and timing need the GPU (`step_check`, docs/gpu.md).

use candle_core::{Device, Result, Tensor, Var};
use cuda_emulator::{Arg, DeviceBuffer, Module};
use film_train::adam::{Adam, AdamConfig};

/// Few small blocks, so that each thread of the grid-stride loops handles several values.
const GRID: u32 = 3;
const BLOCK: u32 = 64;

#[test]
fn adam_kernels_follow_the_composed_update() -> Result<()> {
    let module = Module::compile("adam.cu", include_str!("../src/adam.cu")).unwrap_or_else(|e| panic!("{e}"));
    let len = 1000;
    let config = AdamConfig::new(3e-3, 1e-2);
    let start: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
    // A linear loss Σ c·p: the gradient is c at every step, so both sides see the same one;
    // the weight decay makes the update depend on the parameters all the same.
    let slope: Vec<f32> = (0..len).map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0).collect();
    let c = Tensor::from_vec(slope.clone(), len, &Device::Cpu)?;

    let var = Var::from_tensor(&Tensor::from_vec(start.clone(), len, &Device::Cpu)?)?;
    let mut adam = Adam::new(vec![("p".into(), var.clone())], config);
    let (param, m, v) = (
        DeviceBuffer::from_slice("param", &start),
        DeviceBuffer::from_slice("m", &vec![0.0; len]),
        DeviceBuffer::from_slice("v", &vec![0.0; len]),
    );
    let grad = DeviceBuffer::from_slice("grad", &slope);
    for step in 1..=4 {
        let grads = (var.as_tensor() * &c)?.sum_all()?.backward()?;
        adam.step_composed(&grads)?;

        // The scalars as adam.rs computes them for the in-place passes.
        let (beta1, beta2) = (config.beta1, config.beta2);
        for (moment, decay, squared) in [(&m, beta1, false), (&v, beta2, true)] {
            let args = [
                Arg::buffer(moment),
                Arg::buffer(&grad),
                Arg::buffer(&param),
                (len as u64).into(),
                (decay as f32).into(),
                ((1.0 - decay) as f32).into(),
                (config.weight_decay as f32).into(),
                (squared as i32).into(),
            ];
            module.launch("adam_moment_f32", GRID, BLOCK, &args).unwrap();
        }
        let bias = |beta: f64| (1.0 - beta.powi(step)) as f32;
        let args = [
            Arg::buffer(&param),
            Arg::buffer(&m),
            Arg::buffer(&v),
            (len as u64).into(),
            (config.learning_rate as f32).into(),
            bias(beta1).into(),
            bias(beta2).into(),
            (config.eps as f32).into(),
        ];
        module.launch("adam_parameter_f32", GRID, BLOCK, &args).unwrap();

        let want = var.as_tensor().to_vec1::<f32>()?;
        let got = param.values();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let moved = (w - start[i]).abs();
            assert!(
                (g - w).abs() <= 1e-6 + 1e-4 * moved,
                "step {step}, parameter {i}: kernels {g}, composed {w} (moved {moved})"
            );
        }
        let state = adam.state()?;
        for (name, buffer) in [("m.p", &m), ("v.p", &v)] {
            let want = state[name].to_vec1::<f32>()?;
            let scale = want.iter().fold(0f32, |a, b| a.max(b.abs()));
            let worst = buffer
                .values()
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-5 * scale,
                "step {step}: {name} differs by {worst} (largest {scale})"
            );
        }
    }
    Ok(())
}
