//! Times each kernel of the `mini` preset's stem convolutions (4x4, stride 2,
//! padding 1: 3 -> 64 at 64x64, 64 -> 64 at 32x32 and 16x16, batch 64):
//! forward, input gradient and weight gradient apart, median of N calls.
//!
//!     cargo run --release -p film-conv --example stem_timing -- [iterations]

use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use film_conv::{fast, ConvParams, InputGradOp, ParamGradOp};

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
    for (c_in, side) in [(3, 64), (64, 32), (64, 16)] {
        let c_out = 64;
        let x = Tensor::randn(0f32, 1.0, (64, c_in, side, side), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (c_out, c_in, 4, 4), &dev)?;
        let dy = Tensor::randn(0f32, 1.0, (64, c_out, side / 2, side / 2), &dev)?;
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
        println!(
            "{c_in:>3} -> {c_out} at {side}x{side}: forward {forward:6.2} ms, input grad {dx:6.2} ms, weight grad {dw:6.2} ms"
        );
    }
    Ok(())
}
