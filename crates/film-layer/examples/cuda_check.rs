//! GPU check of the fused FiLM kernels, in one run on a CUDA machine:
//!
//! 1. parity of the CUDA forward and of every gradient (x, γ, β, residual) against the
//!    CPU reference composition computed in f64 from the same inputs, over several
//!    shapes, both layouts, f32/f64/f16/bf16, with and without ReLU and residual; the
//!    process exits with status 1 if any error exceeds its dtype's bound;
//! 2. timings at (64,128,56,56), (256,256,56,56) and (64,128,14,14) in f32: device copy
//!    bandwidth (`cuMemcpyDtoD` between buffers allocated once, and `Tensor::copy`), the
//!    fused forward's bandwidth and its fraction of both, and fused forward+backward
//!    against candle's broadcast composition with autograd (seeded by a loss summed in one
//!    block, as `sum_all` does on CUDA, and by one summed in two stages); all of it twice,
//!    with the driver's default memory pool and with one that keeps freed memory.
//!
//! Every measurement is printed as one JSON line (prefix `JSON `) and in a table.
//! Build and run: see docs/gpu.md.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use film_layer::{film_fused, reference, ChannelLayout, FilmConfig};
use kernel_launch::test_values::Stream;

/// Largest error allowed, relative to the largest magnitude of the reference tensor.
/// Half precision is bounded by one rounding of the result (2^-11, 2^-8 with margin
/// for the f32 accumulation order); f32 and f64 by accumulation-order differences.
fn bound(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-10,
        DType::F32 => 2e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1.6e-2,
        other => unreachable!("no bound for {other:?}"),
    }
}

/// Deterministic uniform values in [-1, 1): the check must be reproducible.
struct Rng(Stream);

impl Rng {
    fn values(&mut self, n: usize) -> Vec<f32> {
        self.0.uniform(n, -1.0, 1.0)
    }

    fn tensor(&mut self, dims: &[usize], dtype: DType) -> candle_core::Result<Tensor> {
        let n = dims.iter().product();
        Tensor::from_vec(self.values(n), dims, &Device::Cpu)?.to_dtype(dtype)
    }
}

/// One parity case: shape of x, layout, epilogue.
struct Case {
    dims: Vec<usize>,
    layout: ChannelLayout,
    relu: bool,
    residual: bool,
    /// Start x at an element offset inside a larger buffer, which forces the kernels'
    /// unaligned (scalar) path.
    misaligned: bool,
}

/// The outputs compared: y, then the gradients of x, γ, β and the residual.
const OUTPUTS: [&str; 5] = ["y", "dx", "dgamma", "dbeta", "dresidual"];

/// Runs FiLM and its backward on `device`; `fused` picks the fused op or the reference
/// composition. Inputs are CPU tensors in the dtype under test.
fn run_film(
    inputs: &[Tensor; 5],
    case: &Case,
    device: &Device,
    fused: bool,
    dtype: DType,
) -> candle_core::Result<Vec<Tensor>> {
    let [x, gamma, beta, residual, upstream] = inputs;
    let to = |t: &Tensor| t.to_dtype(dtype)?.to_device(device);
    let x = if case.misaligned {
        // x lives one element into a buffer: a contiguous view with a start offset.
        let dims = x.dims().to_vec();
        let flat = Tensor::cat(&[&x.flatten_all()?.narrow(0, 0, 1)?, &x.flatten_all()?], 0)?;
        Var::from_tensor(&to(&flat)?.narrow(0, 1, x.elem_count())?.reshape(dims)?)?
    } else {
        Var::from_tensor(&to(x)?)?
    };
    let gamma = Var::from_tensor(&to(gamma)?)?;
    let beta = Var::from_tensor(&to(beta)?)?;
    let residual = Var::from_tensor(&to(residual)?)?;
    let residual_arg = case.residual.then_some(residual.as_tensor());
    let y = if fused {
        film_fused(
            &x,
            &gamma,
            Some(&beta),
            residual_arg,
            &FilmConfig::as_given(case.layout, case.relu),
        )
    } else {
        reference::film_composed(&x, &gamma, Some(&beta), case.layout, case.relu, residual_arg)
    }
    .map_err(candle_core::Error::from)?;
    // d(loss)/dy = upstream exactly: the gradient of a sum of y ⊙ upstream.
    let loss = (&y * to(upstream)?)?.sum_all()?;
    let grads = loss.backward()?;
    let grad = |v: &Var| -> candle_core::Result<Tensor> {
        match grads.get(v) {
            Some(g) => Ok(g.clone()),
            None => v.zeros_like(),
        }
    };
    Ok(vec![y, grad(&x)?, grad(&gamma)?, grad(&beta)?, grad(&residual)?])
}

/// max |a - b| / max |b|, in f64 on the CPU.
fn relative_error(got: &Tensor, want: &Tensor) -> candle_core::Result<f64> {
    let got = got.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let want = want.to_dtype(DType::F64)?;
    let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
    let scale = want.abs()?.max_all()?.to_scalar::<f64>()?;
    if diff.is_nan() {
        return Ok(f64::INFINITY);
    }
    Ok(if scale > 0.0 { diff / scale } else { diff })
}

fn parity_cases() -> Vec<Case> {
    let shapes = [
        (vec![2, 3, 5, 7], ChannelLayout::ChannelsFirst),
        (vec![4, 16, 8, 8], ChannelLayout::ChannelsFirst),
        (vec![8, 64, 28, 28], ChannelLayout::ChannelsFirst),
        (vec![3, 2, 1], ChannelLayout::ChannelsFirst),
        (vec![2, 5, 3], ChannelLayout::ChannelsLast),
        (vec![4, 7, 7, 64], ChannelLayout::ChannelsLast),
        (vec![8, 196, 256], ChannelLayout::ChannelsLast),
        (vec![2, 3000, 24], ChannelLayout::ChannelsLast),
    ];
    let mut cases = Vec::new();
    for (dims, layout) in shapes {
        for (relu, residual) in [(false, false), (true, false), (false, true), (true, true)] {
            cases.push(Case {
                dims: dims.clone(),
                layout,
                relu,
                residual,
                misaligned: false,
            });
        }
        cases.push(Case {
            dims,
            layout,
            relu: true,
            residual: true,
            misaligned: true,
        });
    }
    cases
}

/// Returns the number of failures.
fn check_parity(device: &Device) -> candle_core::Result<usize> {
    println!("== parity: CUDA fused vs CPU reference (f64), error relative to max |reference| ==");
    println!(
        "{:<18} {:<15} {:>4} {:>4} {:>5} {:<5} {:>9} {:>9} {:>9} {:>9} {:>9}  ok",
        "shape", "layout", "relu", "res", "unal", "dtype", "y", "dx", "dgamma", "dbeta", "dres"
    );
    let mut rng = Rng(Stream::new(0x5eed_f11e));
    let mut failures = 0;
    let mut worst = std::collections::BTreeMap::<&str, f64>::new();
    for case in parity_cases() {
        let dims = &case.dims;
        let (n, c) = match case.layout {
            ChannelLayout::ChannelsFirst => (dims[0], dims[1]),
            ChannelLayout::ChannelsLast => (dims[0], dims[dims.len() - 1]),
        };
        for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
            // Inputs rounded to the dtype once, so both sides see the same values.
            let inputs = [
                rng.tensor(dims, dtype)?,
                rng.tensor(&[n, c], dtype)?.affine(1.0, 1.0)?,
                rng.tensor(&[n, c], dtype)?,
                rng.tensor(dims, dtype)?,
                rng.tensor(dims, dtype)?,
            ];
            let want = run_film(&inputs, &case, &Device::Cpu, false, DType::F64)?;
            // An error on the device fails this case but not the run, so that one run
            // reports every case and the timings.
            let errors = match run_film(&inputs, &case, device, true, dtype).and_then(|got| {
                got.iter()
                    .zip(&want)
                    .map(|(g, w)| relative_error(g, w))
                    .collect::<candle_core::Result<Vec<_>>>()
            }) {
                Ok(errors) => errors,
                Err(e) => {
                    println!(
                        "ERROR {dims:?} {} relu={} residual={} misaligned={} {}: {e}",
                        case.layout,
                        case.relu,
                        case.residual,
                        case.misaligned,
                        dtype.as_str()
                    );
                    vec![f64::INFINITY; OUTPUTS.len()]
                }
            };
            let ok = errors.iter().all(|&e| e <= bound(dtype));
            if !ok {
                failures += 1;
            }
            let dtype_name = dtype.as_str();
            let entry = worst.entry(dtype.as_str()).or_insert(0.0);
            *entry = errors.iter().fold(*entry, |m, &e| m.max(e));
            println!(
                "{:<18} {:<15} {:>4} {:>4} {:>5} {:<5} {:>9.2e} {:>9.2e} {:>9.2e} {:>9.2e} {:>9.2e}  {}",
                format!("{dims:?}"),
                case.layout.to_string(),
                case.relu,
                case.residual,
                case.misaligned,
                dtype_name,
                errors[0],
                errors[1],
                errors[2],
                errors[3],
                errors[4],
                if ok { "ok" } else { "FAIL" }
            );
            let fields = OUTPUTS
                .iter()
                .zip(&errors)
                .map(|(name, e)| match e.is_finite() {
                    true => format!("\"{name}\":{e:e}"),
                    false => format!("\"{name}\":null"),
                })
                .collect::<Vec<_>>()
                .join(",");
            println!(
                "JSON {{\"check\":\"parity\",\"shape\":{dims:?},\"layout\":\"{}\",\"relu\":{},\"residual\":{},\"misaligned\":{},\"dtype\":\"{dtype_name}\",{fields},\"bound\":{:e},\"ok\":{ok}}}",
                case.layout, case.relu, case.residual, case.misaligned, bound(dtype)
            );
        }
    }
    for (dtype, err) in &worst {
        println!("worst relative error {dtype}: {err:.3e}");
    }
    Ok(failures)
}

/// Median seconds per call of `f`, timed over `reps` batches of `per_rep` calls between
/// device synchronisations, after `warmup` calls.
fn time_median(
    device: &Device,
    warmup: usize,
    reps: usize,
    per_rep: usize,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    device.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        for _ in 0..per_rep {
            f()?;
        }
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64() / per_rep as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

struct Row {
    pool: &'static str,
    shape: Vec<usize>,
    what: &'static str,
    ms: f64,
    note: String,
}

fn json_line(pool: &str, shape: &[usize], what: &str, ms: f64, extra: &str) {
    println!(
        "JSON {{\"check\":\"bench\",\"pool\":\"{pool}\",\"what\":\"{what}\",\"shape\":{shape:?},\"dtype\":\"f32\",\"ms\":{ms:.5}{extra}}}"
    );
}

/// The card's device-to-device copy bandwidth: `cuMemcpyDtoDAsync` between two buffers
/// allocated once, so no allocation is timed. Seconds per copy of `numel` f32.
fn raw_copy_seconds(device: &Device, numel: usize, reps: usize, per_rep: usize) -> candle_core::Result<f64> {
    use candle_core::cuda_backend::WrapErr;
    let stream = device.as_cuda_device()?.cuda_stream();
    let src = stream.alloc_zeros::<f32>(numel).w()?;
    let mut dst = stream.alloc_zeros::<f32>(numel).w()?;
    time_median(device, 3, reps, per_rep, || {
        stream.memcpy_dtod(&src, &mut dst).w()
    })
}

fn bench_shape(
    device: &Device,
    pool: &'static str,
    dims: [usize; 4],
    rows: &mut Vec<Row>,
) -> candle_core::Result<()> {
    let shape = dims.to_vec();
    let numel: usize = dims.iter().product();
    // Fewer calls per timed batch for the large shape keep the run short.
    let (reps, per_rep) = if numel > 100_000_000 { (7, 3) } else { (11, 10) };
    let mut rng = Rng(Stream::new(0xbe_0c4));
    let on_device = |t: Tensor| t.to_device(device);
    let x = on_device(rng.tensor(&dims, DType::F32)?)?;
    let gamma = on_device(rng.tensor(&[dims[0], dims[1]], DType::F32)?)?;
    let beta = on_device(rng.tensor(&[dims[0], dims[1]], DType::F32)?)?;
    let upstream = on_device(rng.tensor(&dims, DType::F32)?)?;
    let cf = ChannelLayout::ChannelsFirst;
    let bytes = 2.0 * (numel * 4) as f64;

    let raw_copy = raw_copy_seconds(device, numel, reps, per_rep)?;
    let raw_copy_gbs = bytes / raw_copy / 1e9;
    json_line(
        pool,
        &shape,
        "raw_copy",
        raw_copy * 1e3,
        &format!(",\"gb_s\":{raw_copy_gbs:.1}"),
    );
    rows.push(Row {
        pool,
        shape: shape.clone(),
        what: "device copy (cuMemcpyDtoD)",
        ms: raw_copy * 1e3,
        note: format!("{raw_copy_gbs:.0} GB/s, buffers allocated once"),
    });

    let copy = time_median(device, 3, reps, per_rep, || x.copy().map(drop))?;
    let copy_gbs = bytes / copy / 1e9;
    json_line(
        pool,
        &shape,
        "copy",
        copy * 1e3,
        &format!(",\"gb_s\":{copy_gbs:.1}"),
    );
    rows.push(Row {
        pool,
        shape: shape.clone(),
        what: "device copy (Tensor::copy)",
        ms: copy * 1e3,
        note: format!("{copy_gbs:.0} GB/s"),
    });

    let fwd = time_median(device, 3, reps, per_rep, || {
        film_fused(&x, &gamma, Some(&beta), None, &FilmConfig::as_given(cf, false))
            .map(drop)
            .map_err(Into::into)
    })?;
    let fwd_gbs = bytes / fwd / 1e9;
    let fraction = fwd_gbs / copy_gbs;
    let raw_fraction = fwd_gbs / raw_copy_gbs;
    json_line(
        pool,
        &shape,
        "fused_forward",
        fwd * 1e3,
        &format!(
            ",\"gb_s\":{fwd_gbs:.1},\"fraction_of_copy\":{fraction:.3},\"fraction_of_raw_copy\":{raw_fraction:.3}"
        ),
    );
    rows.push(Row {
        pool,
        shape: shape.clone(),
        what: "fused forward",
        ms: fwd * 1e3,
        note: format!(
            "{fwd_gbs:.0} GB/s = {:.1}% of cuMemcpyDtoD (bar >= 85%: {}), {:.1}% of Tensor::copy",
            100.0 * raw_fraction,
            if raw_fraction >= 0.85 { "met" } else { "NOT met" },
            100.0 * fraction,
        ),
    });

    // Forward + backward through autograd. The gradient is seeded by a loss whose
    // gradient is `upstream`, the sum of y ⊙ upstream, which costs the same for both paths;
    // `Seed::Only` (y = x) times that alone so that it can be subtracted. candle's CUDA
    // `sum_all` reduces the whole map in a single block of threads, which makes that loss
    // cost more than the op itself at these sizes; the two-stage sum (each (n, c) row, then
    // the rows) spreads it over the device. Both are measured; the bar is judged on the
    // two-stage one, where the time is FiLM's and autograd's rather than one block's.
    let (xv, gv, bv) = (
        Var::from_tensor(&x)?,
        Var::from_tensor(&gamma)?,
        Var::from_tensor(&beta)?,
    );
    for two_stage in [false, true] {
        let step = |path: Path| -> candle_core::Result<()> {
            let y = match path {
                Path::Fused => film_fused(&xv, &gv, Some(&bv), None, &FilmConfig::as_given(cf, false))?,
                Path::Composed => reference::film_composed(&xv, &gv, Some(&bv), cf, false, None)?,
                Path::SeedOnly => xv.as_tensor().clone(),
            };
            let weighted = (y * &upstream)?;
            let loss = match two_stage {
                false => weighted.sum_all()?,
                true => weighted.flatten_from(2)?.sum(2)?.sum_all()?,
            };
            drop(loss.backward()?);
            Ok(())
        };
        let fused = time_median(device, 3, reps, per_rep, || step(Path::Fused))?;
        let composed = time_median(device, 3, reps, per_rep, || step(Path::Composed))?;
        let seed = time_median(device, 3, reps, per_rep, || step(Path::SeedOnly))?;
        let ratio = composed / fused;
        let op_ratio = (composed - seed) / (fused - seed);
        let (key, label) = match two_stage {
            false => ("", "loss sum_all (one block)"),
            true => ("_two_stage", "loss summed by rows, then"),
        };
        json_line(pool, &shape, &format!("fwd_bwd_fused{key}"), fused * 1e3, "");
        json_line(
            pool,
            &shape,
            &format!("fwd_bwd_composed{key}"),
            composed * 1e3,
            "",
        );
        json_line(pool, &shape, &format!("fwd_bwd_seed_only{key}"), seed * 1e3, "");
        json_line(
            pool,
            &shape,
            &format!("fwd_bwd_speedup{key}"),
            (fused - seed) * 1e3,
            &format!(",\"ratio_with_seed\":{ratio:.3},\"ratio_op_only\":{op_ratio:.3}"),
        );
        rows.push(Row {
            pool,
            shape: shape.clone(),
            what: "fwd+bwd fused (autograd)",
            ms: fused * 1e3,
            note: format!("{label}; op alone {:.3} ms", (fused - seed) * 1e3),
        });
        rows.push(Row {
            pool,
            shape: shape.clone(),
            what: "fwd+bwd candle composition",
            ms: composed * 1e3,
            note: format!("{label}; op alone {:.3} ms", (composed - seed) * 1e3),
        });
        rows.push(Row {
            pool,
            shape: shape.clone(),
            what: "fwd+bwd speed-up",
            ms: f64::NAN,
            note: match two_stage {
                // The bar is forward+backward through autograd, as a user runs it.
                true => format!(
                    "{ratio:.2}x end to end (bar >= 2x: {}), {op_ratio:.2}x without the loss",
                    if ratio >= 2.0 { "met" } else { "NOT met" }
                ),
                false => format!("{ratio:.2}x end to end with the one-block loss, {op_ratio:.2}x without it"),
            },
        });
    }
    Ok(())
}

/// What a timed forward+backward runs before its loss.
#[derive(Clone, Copy)]
enum Path {
    Fused,
    Composed,
    /// y = x: the loss and its backward alone.
    SeedOnly,
}

fn describe(device: &Device) -> candle_core::Result<String> {
    let cuda = device.as_cuda_device()?;
    let context = cuda.cuda_stream().context().clone();
    let name = context.name().unwrap_or_else(|e| format!("unknown ({e})"));
    let (major, minor) = context.compute_capability().unwrap_or((0, 0));
    let (mut nv_major, mut nv_minor) = (0, 0);
    // SAFETY: plain out-pointer query of the NVRTC library the kernels are compiled with.
    unsafe { candle_core::cuda_backend::cudarc::nvrtc::sys::nvrtcVersion(&mut nv_major, &mut nv_minor) };
    Ok(format!(
        "{name}, compute capability {major}.{minor}, NVRTC {nv_major}.{nv_minor}"
    ))
}

fn main() -> candle_core::Result<()> {
    let started = Instant::now();
    let device = match Device::new_cuda(0) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("cuda_check: no CUDA device available ({e}); nothing checked");
            std::process::exit(2);
        }
    };
    println!("device: {}", describe(&device)?);

    let failures = check_parity(&device)?;
    println!("parity done in {:.1} s", started.elapsed().as_secs_f64());

    println!("\n== timings, f32, channels-first, median of batches between synchronisations ==");
    // Each shape twice: with the driver's default pool, which hands free memory back at
    // every synchronisation (so every timed batch maps its outputs afresh), then with a
    // pool that keeps it, as film-train runs.
    let mut rows = Vec::new();
    for (pool, threshold) in [("release", 0), ("keep", u64::MAX)] {
        kernel_launch::nvrtc::set_pool_release_threshold(device.as_cuda_device()?, threshold)?;
        for dims in [[64, 128, 56, 56], [256, 256, 56, 56], [64, 128, 14, 14]] {
            if let Err(e) = bench_shape(&device, pool, dims, &mut rows) {
                println!("ERROR timing {dims:?} (pool {pool}): {e}");
            }
        }
    }
    println!(
        "{:<8} {:<20} {:<28} {:>10}  note",
        "pool", "shape", "measurement", "ms"
    );
    for row in &rows {
        let ms = if row.ms.is_nan() {
            String::new()
        } else {
            format!("{:.4}", row.ms)
        };
        println!(
            "{:<8} {:<20} {:<28} {:>10}  {}",
            row.pool,
            format!("{:?}", row.shape),
            row.what,
            ms,
            row.note
        );
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());

    if failures > 0 {
        eprintln!("cuda_check: {failures} parity case(s) above their dtype's bound");
        std::process::exit(1);
    }
    println!("cuda_check: all parity cases within bounds");
    Ok(())
}
