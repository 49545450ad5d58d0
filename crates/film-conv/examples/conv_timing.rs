//! Times the benchmark convolution (3x3, 128 -> 128, batch (64, 128, 14, 14),
//! f32) the way ../shared/reference/torch_film.py times PyTorch's: a few
//! warm-up calls, then one wall-clock time per call, reported as median and
//! minimum in the same JSON-line format, so the two can be run alternately
//! and compared row by row. (The criterion bench `benches/conv.rs` is the
//! regression benchmark; this is for side-by-side runs on a noisy machine,
//! where the minimum shows what an uncontended call costs.)
//!
//!     cargo run --release -p film-conv --example conv_timing -- [iterations]

use std::time::Instant;

use candle_core::{Device, Result, Tensor, Var};
use film_conv::{fast, reference, ConvParams, InputGradOp, ParamGradOp};

const SHAPE: (usize, usize, usize, usize) = (64, 128, 14, 14);
const PARAMS: ConvParams = ConvParams {
    stride: 1,
    padding: 1,
};
const WARMUP: usize = 3;

type Conv = fn(&Tensor, &Tensor, Option<&Tensor>, ConvParams) -> Result<Tensor>;

fn time_calls(iterations: usize, mut call: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..WARMUP {
        call()?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        call()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn report(imp: &str, what: &str, times: &[f64]) {
    let median = times[times.len() / 2];
    println!(
        "{{\"impl\": \"{imp}\", \"threads\": {}, \"what\": \"{what}\", \"shape\": \"64x128x14x14_k3x3_128to128_pad1\", \"median_ms\": {median:.4}, \"min_ms\": {:.4}, \"n\": {}}}",
        rayon::current_num_threads(),
        times[0],
        times.len()
    );
}

fn main() -> Result<()> {
    let iterations: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|_| {
            candle_core::Error::Msg(format!("iterations: expected a count, got {arg:?}"))
        })?,
        None => 20,
    };
    let dev = Device::Cpu;
    let (n, c, h, w) = SHAPE;
    let x = Var::randn(0f32, 1.0, SHAPE, &dev)?;
    let wt = Var::from_tensor(
        &(Tensor::randn(0f32, 1.0, (c, c, 3, 3), &dev)? / ((c * 9) as f64).sqrt())?,
    )?;
    let dy = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;

    let paths: [(&str, Conv); 2] = [("ours", fast::conv2d), ("candle", reference::conv2d)];
    for (imp, conv) in paths {
        let times = time_calls(iterations, || conv(&x, &wt, None, PARAMS).map(drop))?;
        report(imp, "conv2d_fwd", &times);
        let times = time_calls(iterations, || {
            conv(&x, &wt, None, PARAMS)?.sum_all()?.backward().map(drop)
        })?;
        report(imp, "conv2d_fwd_bwd", &times);
    }
    let input_grad = InputGradOp {
        params: PARAMS,
        in_h: h,
        in_w: w,
    };
    let times = time_calls(iterations, || {
        dy.apply_op2_no_bwd(&wt, &input_grad).map(drop)
    })?;
    report("ours", "conv2d_bwd_input", &times);
    let param_grad = ParamGradOp {
        params: PARAMS,
        kernel_h: 3,
        kernel_w: 3,
        with_bias: false,
    };
    let times = time_calls(iterations, || {
        x.apply_op2_no_bwd(&dy, &param_grad).map(drop)
    })?;
    report("ours", "conv2d_bwd_weight", &times);
    Ok(())
}
