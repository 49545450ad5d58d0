//! Times the benchmark convolution (3x3, 128 -> 128, batch (64, 128, 14, 14),
//! f32) the way the PyTorch reference harness (`torch_film.py`, kept outside
//! this repository) times PyTorch's: a few
//! warm-up calls, then one wall-clock time per call, reported as median and
//! minimum in the same JSON-line format, so the two can be run alternately
//! and compared row by row. (The criterion bench `benches/conv.rs` is the
//! regression benchmark; this is for side-by-side runs on a noisy machine,
//! where the minimum shows what an uncontended call costs.)
//!
//! Each line also gives the process CPU time per call (`cpu_ms`): run with
//! `RAYON_NUM_THREADS=1` it is the single-core cost of a call, which other
//! processes on a shared machine inflate much less than wall time; compare
//! it with `scripts/torch_conv_cpu_time.py`.
//!
//!     cargo run --release -p film-conv --example conv_timing -- [iterations] [--ours-only]

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

/// Linux reports process CPU time in units of USER_HZ, fixed at 100 per
/// second for user space.
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of this process so far, in milliseconds, from
/// /proc/self/stat (fields 14 and 15, counted after the parenthesised name).
fn process_cpu_ms() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        let field = fields
            .get(i)
            .ok_or_else(|| candle_core::Error::Msg(format!("/proc/self/stat: no field {}", i + 3)))?;
        field
            .parse::<f64>()
            .map_err(|_| candle_core::Error::Msg(format!("/proc/self/stat: field {} is {field:?}", i + 3)))
    };
    // Fields 14 and 15 of the man page; the first after the name is field 3.
    Ok((ticks(11)? + ticks(12)?) / USER_HZ * 1e3)
}

struct Timings {
    /// Wall time of each call, sorted.
    wall_ms: Vec<f64>,
    cpu_ms_per_call: f64,
}

fn time_calls(iterations: usize, mut call: impl FnMut() -> Result<()>) -> Result<Timings> {
    for _ in 0..WARMUP {
        call()?;
    }
    let mut wall_ms = Vec::with_capacity(iterations);
    let cpu_start = process_cpu_ms()?;
    for _ in 0..iterations {
        let start = Instant::now();
        call()?;
        wall_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_ms_per_call = (process_cpu_ms()? - cpu_start) / iterations as f64;
    wall_ms.sort_by(f64::total_cmp);
    Ok(Timings {
        wall_ms,
        cpu_ms_per_call,
    })
}

fn report(imp: &str, what: &str, t: &Timings) {
    let times = &t.wall_ms;
    let median = times[times.len() / 2];
    println!(
        "{{\"impl\": \"{imp}\", \"threads\": {}, \"what\": \"{what}\", \"shape\": \"64x128x14x14_k3x3_128to128_pad1\", \"median_ms\": {median:.4}, \"min_ms\": {:.4}, \"cpu_ms\": {:.1}, \"n\": {}}}",
        rayon::current_num_threads(),
        times[0],
        t.cpu_ms_per_call,
        times.len()
    );
}

fn main() -> Result<()> {
    let iterations: usize = match std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        Some(arg) => arg
            .parse()
            .map_err(|_| candle_core::Error::Msg(format!("iterations: expected a count, got {arg:?}")))?,
        None => 20,
    };
    let dev = Device::Cpu;
    let (n, c, h, w) = SHAPE;
    let x = Var::randn(0f32, 1.0, SHAPE, &dev)?;
    let wt = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (c, c, 3, 3), &dev)? / ((c * 9) as f64).sqrt())?)?;
    let dy = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;

    // candle's backward takes seconds per call on one core; skip it there.
    let ours_only = std::env::args().any(|a| a == "--ours-only");
    let paths: [(&str, Conv); 2] = [("ours", fast::conv2d), ("candle", reference::conv2d)];
    for (imp, conv) in paths.into_iter().take(if ours_only { 1 } else { 2 }) {
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
    let times = time_calls(iterations, || dy.apply_op2_no_bwd(&wt, &input_grad).map(drop))?;
    report("ours", "conv2d_bwd_input", &times);
    let param_grad = ParamGradOp {
        params: PARAMS,
        kernel_h: 3,
        kernel_w: 3,
        with_bias: false,
    };
    let times = time_calls(iterations, || x.apply_op2_no_bwd(&dy, &param_grad).map(drop))?;
    report("ours", "conv2d_bwd_weight", &times);
    Ok(())
}
