//! Times each kernel of the `mini` preset's stem apart: per layer (4x4, stride 2,
//! padding 1: 3 -> 64 at 64x64, 64 -> 64 at 32x32 and 16x16, batch 64) the convolution's
//! forward, input gradient and weight gradient, and BatchNorm + ReLU forward and backward
//! (training mode); median of N calls.
//!
//!     cargo run --release -p film-vision --example stem_timing -- [iterations]
//!
//! `film-train` keeps freed memory in the heap (its `runtime` module); to time what the
//! binary runs, give glibc the same settings and candle one thread, as the binary does:
//!
//!     GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647 \
//!     CANDLE_NUM_THREADS=1 target/release/examples/stem_timing

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use film_conv::{fast, ConvParams, InputGradOp, ParamGradOp};
use film_vision::BatchNorm;

const PARAMS: ConvParams = ConvParams {
    stride: 2,
    padding: 1,
};

fn median_ms(iterations: usize, mut call: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..3 {
        call()?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        call()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<()> {
    let iterations: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let dev = Device::Cpu;
    let c_out = 64;
    for (c_in, side) in [(3, 64), (64, 32), (64, 16)] {
        let out_shape = (64, c_out, side / 2, side / 2);
        let x = Tensor::randn(0f32, 1.0, (64, c_in, side, side), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (c_out, c_in, 4, 4), &dev)?;
        let dy = Tensor::randn(0f32, 1.0, out_shape, &dev)?;
        let forward = median_ms(iterations, || fast::conv2d(&x, &w, None, PARAMS).map(drop))?;
        let input_grad = InputGradOp {
            params: PARAMS,
            in_h: side,
            in_w: side,
        };
        let dx = median_ms(iterations, || dy.apply_op2_no_bwd(&w, &input_grad).map(drop))?;
        let param_grad = ParamGradOp {
            params: PARAMS,
            kernel_h: 4,
            kernel_w: 4,
            with_bias: false,
        };
        let dw = median_ms(iterations, || x.apply_op2_no_bwd(&dy, &param_grad).map(drop))?;

        let varmap = VarMap::new();
        let norm = BatchNorm::new(c_out, true, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        let z = Var::randn(0f32, 1.0, out_shape, &dev)?;
        let norm_forward = median_ms(iterations, || norm.forward_relu_t(&z, true).map(drop))?;
        // The backward through a weighted sum, so that the incoming gradient is dy.
        let norm_both = median_ms(iterations, || {
            (norm.forward_relu_t(&z, true)? * &dy)?
                .sum_all()?
                .backward()
                .map(drop)
        })?;
        // The same product, sum and backward without BatchNorm: subtracted from the above.
        let harness = median_ms(iterations, || {
            let z = Var::from_tensor(&norm.forward_relu_t(&z, true)?)?;
            (z.as_tensor() * &dy)?.sum_all()?.backward().map(drop)
        })?;
        let norm_backward = norm_both - harness;
        println!(
            "{c_in:>3} -> {c_out} at {side}x{side}: conv forward {forward:6.2} ms, input grad {dx:6.2} ms, \
             weight grad {dw:6.2} ms; BatchNorm+ReLU forward {norm_forward:6.2} ms, \
             backward {norm_backward:6.2} ms"
        );
    }
    Ok(())
}
