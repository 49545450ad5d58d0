//! The FiLM hot path: fused kernels against the naive candle composition, and a plain
//! copy of the same bytes as the memory-bandwidth bound.
//!
//! Benchmark ids read `{op}/{pass}/{impl}/{dtype}/{layout}/{shape}`; `cargo xtask bench`
//! parses them into its table and JSON. Each benchmark's criterion throughput is the
//! bytes it must move at least: every input read once, every output written once.

use std::hint::black_box;
use std::mem::MaybeUninit;

use candle_core::{DType, Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use film_layer::reference::film_composed;
use film_layer::{film_fused, ChannelLayout, FilmConfig};

struct Case {
    shape: &'static [usize],
    layout: ChannelLayout,
    /// The residual-block epilogue relu(γx+β)+r is benchmarked on these shapes too.
    with_epilogue: bool,
}

const CASES: &[Case] = &[
    // The paper's residual block at 14x14.
    Case {
        shape: &[64, 128, 14, 14],
        layout: ChannelLayout::ChannelsFirst,
        with_epilogue: true,
    },
    Case {
        shape: &[64, 128, 56, 56],
        layout: ChannelLayout::ChannelsFirst,
        with_epilogue: false,
    },
    Case {
        shape: &[32, 256, 28, 28],
        layout: ChannelLayout::ChannelsFirst,
        with_epilogue: false,
    },
    // A transformer's modulate over 1024 tokens of width 1024.
    Case {
        shape: &[8, 1024, 1024],
        layout: ChannelLayout::ChannelsLast,
        with_epilogue: false,
    },
];

/// One FiLM flavour: the plain affine, or the block epilogue with ReLU and residual.
#[derive(Clone, Copy)]
enum Op {
    Film,
    FilmReluResidual,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Film => "film",
            Op::FilmReluResidual => "film-relu-residual",
        }
    }

    /// Feature-map-sized tensors each pass must read or write.
    fn traffic(self, backward: bool) -> u64 {
        match (self, backward) {
            (Op::Film, false) => 2,             // x in, y out
            (Op::Film, true) => 5,              // + x, dy in, dx out
            (Op::FilmReluResidual, false) => 3, // x, r in, y out
            (Op::FilmReluResidual, true) => 6,  // + x, dy in, dx out (dr is dy itself)
        }
    }

    fn apply(
        self,
        fused: bool,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        residual: &Tensor,
        layout: ChannelLayout,
    ) -> Result<Tensor> {
        let (relu, residual) = match self {
            Op::Film => (false, None),
            Op::FilmReluResidual => (true, Some(residual)),
        };
        Ok(if fused {
            film_fused(
                x,
                gamma,
                Some(beta),
                residual,
                &FilmConfig::as_given(layout, relu),
            )?
        } else {
            film_composed(x, gamma, Some(beta), layout, relu, residual)?
        })
    }
}

/// A copy of `src` into freshly allocated memory, split over the same threads as the
/// fused kernels: what any op that returns a new tensor of this size must at least pay.
fn parallel_copy(src: &[f32]) -> Vec<f32> {
    let threads = candle_core::utils::get_num_threads().max(1);
    let mut dst: Vec<MaybeUninit<f32>> = Vec::with_capacity(src.len());
    // SAFETY: MaybeUninit needs no initialisation.
    unsafe { dst.set_len(src.len()) };
    let chunk = src.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
            scope.spawn(move || {
                for (d, s) in d.iter_mut().zip(s) {
                    d.write(*s);
                }
            });
        }
    });
    let mut dst = std::mem::ManuallyDrop::new(dst);
    // SAFETY: every element was written by exactly one thread above.
    unsafe { Vec::from_raw_parts(dst.as_mut_ptr() as *mut f32, dst.len(), dst.capacity()) }
}

fn shape_label(shape: &[usize]) -> String {
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

fn bench_case(c: &mut Criterion, case: &Case) -> Result<()> {
    let dev = Device::Cpu;
    let numel: usize = case.shape.iter().product();
    let bytes = (numel * DType::F32.size_in_bytes()) as u64;
    let (batch, channels) = match case.layout {
        ChannelLayout::ChannelsFirst => (case.shape[0], case.shape[1]),
        ChannelLayout::ChannelsLast => (case.shape[0], case.shape[case.shape.len() - 1]),
    };
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, case.shape, &dev)?)?;
    let gamma = Var::from_tensor(&Tensor::randn(1f32, 0.5, (batch, channels), &dev)?)?;
    let beta = Var::from_tensor(&Tensor::randn(0f32, 0.5, (batch, channels), &dev)?)?;
    let residual = Var::from_tensor(&Tensor::randn(0f32, 1.0, case.shape, &dev)?)?;
    let param = format!("f32/{}/{}", case.layout, shape_label(case.shape));

    let mut group = c.benchmark_group("copy");
    group.throughput(Throughput::Bytes(2 * bytes));
    let src = x.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    group.bench_function(BenchmarkId::new("fwd/copy", &param), |b| {
        b.iter(|| parallel_copy(black_box(&src)))
    });
    group.finish();

    let ops: &[Op] = if case.with_epilogue {
        &[Op::Film, Op::FilmReluResidual]
    } else {
        &[Op::Film]
    };
    for &op in ops {
        let mut group = c.benchmark_group(op.name());
        for backward in [false, true] {
            group.throughput(Throughput::Bytes(op.traffic(backward) * bytes));
            let pass = if backward { "fwd+bwd" } else { "fwd" };
            for fused in [false, true] {
                let imp = if fused { "fused" } else { "naive" };
                let run = || -> Result<()> {
                    let y = op.apply(fused, &x, &gamma, &beta, &residual, case.layout)?;
                    if backward {
                        black_box(y.backward()?);
                    } else {
                        black_box(y);
                    }
                    Ok(())
                };
                group.bench_function(BenchmarkId::new(format!("{pass}/{imp}"), &param), |b| {
                    b.iter(|| run().expect("benchmark step failed"))
                });
            }
        }
        group.finish();
    }
    Ok(())
}

fn benches(c: &mut Criterion) {
    for case in CASES {
        bench_case(c, case).expect("setting up the benchmark failed");
    }
}

criterion_group! {
    name = film;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(film);
