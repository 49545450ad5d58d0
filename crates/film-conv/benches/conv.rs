//! The FiLM residual block's 3x3 convolution, 128 -> 128 channels on a
//! (64, 128, 14, 14) f32 batch: forward and forward+backward of the fast
//! kernels against candle's own conv2d, plus the two backward ops alone (to
//! set beside PyTorch's `conv_transpose2d` and `conv2d_weight` rows from
//! the PyTorch reference harness (`torch_film.py --micro-ops conv`, kept outside this
//! repository), which
//! `cargo xtask bench --torch PYTHON` runs and imports).
//!
//! Ids follow `{op}/{pass}/{impl}/{dtype}/{layout}/{shape}` like the FiLM
//! benchmarks; the throughput is in floating-point operations.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use film_conv::{fast, reference, ConvParams, InputGradOp, ParamGradOp};

const BATCH: usize = 64;
const CHANNELS: usize = 128;
const SIDE: usize = 14;
const KERNEL: usize = 3;
const PARAMS: ConvParams = ConvParams {
    stride: 1,
    padding: 1,
};

/// dtype, layout and shape, the end of every benchmark id.
const ID_TAIL: &str = "f32/channels-first/64x128x14x14";

/// Multiply-adds of one convolution pass, as floating-point operations.
const FLOPS: u64 = 2 * (BATCH * SIDE * SIDE * CHANNELS * CHANNELS * KERNEL * KERNEL) as u64;

type Conv = fn(&Tensor, &Tensor, Option<&Tensor>, ConvParams) -> Result<Tensor>;

fn inputs() -> Result<(Var, Var, Tensor)> {
    let dev = Device::Cpu;
    let x = Var::randn(0f32, 1.0, (BATCH, CHANNELS, SIDE, SIDE), &dev)?;
    let scale = 1.0 / ((CHANNELS * KERNEL * KERNEL) as f64).sqrt();
    let w =
        Var::from_tensor(&(Tensor::randn(0f32, 1.0, (CHANNELS, CHANNELS, KERNEL, KERNEL), &dev)? * scale)?)?;
    let dy = Tensor::randn(0f32, 1.0, (BATCH, CHANNELS, SIDE, SIDE), &dev)?;
    Ok((x, w, dy))
}

fn bench_conv3x3(c: &mut Criterion) {
    let (x, w, dy) = inputs().expect("bench inputs");
    let mut group = c.benchmark_group("conv3x3-128");
    let paths: [(&str, Conv); 2] = [("ours", fast::conv2d), ("candle", reference::conv2d)];

    group.throughput(Throughput::Elements(FLOPS));
    for (name, conv) in paths {
        group.bench_function(format!("fwd/{name}/{ID_TAIL}"), |b| {
            b.iter(|| black_box(conv(x.as_tensor(), w.as_tensor(), None, PARAMS).unwrap()))
        });
    }
    // Forward, then the gradients of input and weight (as torch's
    // `conv2d(x, w).sum().backward()` in the reference script).
    group.throughput(Throughput::Elements(3 * FLOPS));
    for (name, conv) in paths {
        group.bench_function(format!("fwd+bwd/{name}/{ID_TAIL}"), |b| {
            b.iter(|| {
                let y = conv(x.as_tensor(), w.as_tensor(), None, PARAMS).unwrap();
                black_box(y.sum_all().unwrap().backward().unwrap())
            })
        });
    }
    group.throughput(Throughput::Elements(FLOPS));
    let input_grad = InputGradOp {
        params: PARAMS,
        in_h: SIDE,
        in_w: SIDE,
    };
    group.bench_function(format!("bwd-input/ours/{ID_TAIL}"), |b| {
        b.iter(|| black_box(dy.apply_op2_no_bwd(w.as_tensor(), &input_grad).unwrap()))
    });
    let param_grad = ParamGradOp {
        params: PARAMS,
        kernel_h: KERNEL,
        kernel_w: KERNEL,
        with_bias: false,
    };
    group.bench_function(format!("bwd-weight/ours/{ID_TAIL}"), |b| {
        b.iter(|| black_box(x.as_tensor().apply_op2_no_bwd(&dy, &param_grad).unwrap()))
    });
    group.finish();
}

// In the group's config rather than on the group, so that `cargo xtask bench --quick`'s
// command-line settings can shorten it.
criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(6));
    targets = bench_conv3x3
}
criterion_main!(benches);
