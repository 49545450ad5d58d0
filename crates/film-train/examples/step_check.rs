//! GPU check of the training step's CUDA paths beyond FiLM's: the question encoder's fused
//! GRU recurrence (film-question's `cuda` feature), Adam's in-place update (film-optim's),
//! the cuDNN convolutions (film-conv's) and the fused BatchNorm (film-vision's), in one run
//! on a CUDA machine:
//!
//! 1. parity of the CUDA forward and of every gradient (inputs, W_ih, W_hh, b_ih, b_hh)
//!    against the composed candle GRU computed on the CPU in f64 from the same values, for
//!    several sizes, with questions of different lengths; candle's composition on the GPU
//!    in f32 is measured the same way beside it, as the yardstick of what f32 allows. The
//!    process exits with status 1 if any error of the fused op exceeds [`GRU_BOUND`];
//! 2. timings of `Gru::last_states`, forward alone and forward + backward, fused against
//!    candle's composition, at the `mini` (64 questions, 46 steps, 64 → 256) and paper
//!    (64, 46, 200 → 4096) sizes, with f32 products and with TF32 ones
//!    (`set_gemm_reduced_precision_f32`, what PyTorch's cuDNN GRU uses by default);
//! 3. parity of four Adam steps on the GPU against the same steps on the CPU (parameters
//!    and both moments, within [`ADAM_BOUND`]), and the time of one step over the
//!    `paper-features` model's parameter count, in-place kernels against the composed
//!    candle update;
//! 4. parity of the cuDNN convolution's output and gradients (input, weight, bias) against
//!    candle's convolution on the CPU in f64, for the model's kinds of layer (the stem's
//!    4×4 stride-2, the blocks' 1×1 and 3×3, an odd one), within [`CONV_BOUND`]; and
//!    forward and forward + backward times at the `paper-raw` sizes, cuDNN against candle's
//!    convolution, in f32 and TF32;
//! 5. parity of the fused BatchNorm (+ ReLU) kernels against candle-nn's BatchNorm on the
//!    CPU in f64: a training step's output and gradients (input, scale, shift), then an
//!    evaluation with the running statistics that step updated, within [`BN_BOUND`]; and
//!    the stem's first BatchNorm at batch 64 timed, fused against candle-nn's composition.
//!
//! Every measurement is printed as one JSON line (prefix `JSON `). Exit status: 0 parity
//! within bounds, 1 a parity failure, 2 no CUDA device. Build and run: see docs/gpu.md.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use film_conv::ConvParams;
use film_optim::{Adam, AdamConfig};
use film_question::Gru;
use film_vision::BatchNorm;
use kernel_launch::test_values::Stream;

/// Largest error allowed, relative to the largest magnitude of the f64 reference: f32
/// rounding accumulated over 46 steps and sums of up to 2 944 rows, with margin.
const GRU_BOUND: f64 = 1e-4;

/// Adam's bound: the same f32 operations in the same order on both devices, so only the
/// GPU's fused multiply-adds and square root differ.
const ADAM_BOUND: f64 = 1e-5;

/// BatchNorm's bound: sums over up to 800 000 values per channel, in double on the GPU.
const BN_BOUND: f64 = 1e-4;

/// The convolutions' bound: f32 sums of up to 2 048 products, in cuDNN's order.
const CONV_BOUND: f64 = 1e-4;

/// Deterministic uniform values in [-1, 1): the check must be reproducible.
struct Rng(Stream);

impl Rng {
    fn values(&mut self, n: usize) -> Vec<f32> {
        self.0.uniform(n, -1.0, 1.0)
    }

    fn tensor(&mut self, dims: &[usize], scale: f32) -> candle_core::Result<Tensor> {
        let n = dims.iter().product();
        let values = self.values(n).into_iter().map(|v| v * scale).collect();
        Tensor::from_vec(values, dims, &Device::Cpu)
    }
}

/// One GRU size: questions, steps, input width, hidden units.
#[derive(Clone, Copy, Debug)]
struct Size {
    batch: usize,
    steps: usize,
    input: usize,
    hidden: usize,
}

/// Parameter names in `Gru`'s VarBuilder (PyTorch's).
const PARAMS: [&str; 4] = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"];

/// A GRU on `device` in `dtype` whose parameters are `values` (in [`PARAMS`] order).
fn gru_with(
    size: Size,
    values: &[Tensor],
    device: &Device,
    dtype: DType,
) -> candle_core::Result<(Gru, VarMap)> {
    let varmap = VarMap::new();
    let gru = Gru::new(
        size.input,
        size.hidden,
        VarBuilder::from_varmap(&varmap, dtype, device),
    )?;
    {
        let data = varmap.data().lock().expect("varmap lock");
        for (name, value) in PARAMS.iter().zip(values) {
            data[*name].set(&value.to_dtype(dtype)?.to_device(device)?)?;
        }
    }
    Ok((gru, varmap))
}

/// Lengths from `steps` down to about a third of it, so that padding and per-question
/// last steps are exercised.
fn lengths(size: Size) -> Vec<usize> {
    (0..size.batch)
        .map(|i| (size.steps - (i * 7) % (2 * size.steps / 3 + 1)).max(1))
        .collect()
}

/// The output and the gradients of inputs and of every parameter, for the loss
/// Σ last_states ⊙ upstream.
fn run(
    size: Size,
    values: &[Tensor],
    inputs: &Tensor,
    upstream: &Tensor,
    device: &Device,
    dtype: DType,
    fused: bool,
) -> candle_core::Result<Vec<Tensor>> {
    let (gru, varmap) = gru_with(size, values, device, dtype)?;
    let inputs = Var::from_tensor(&inputs.to_dtype(dtype)?.to_device(device)?)?;
    let upstream = upstream.to_dtype(dtype)?.to_device(device)?;
    let lengths = lengths(size);
    let out = if fused {
        gru.last_states(&inputs, &lengths)?
    } else {
        gru.last_states_reference(&inputs, &lengths)?
    };
    let grads = (&out * &upstream)?.sum_all()?.backward()?;
    let mut results = vec![out.clone()];
    let grad_of = |t: &Tensor| {
        grads
            .get(t)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg("a gradient is missing".into()))
    };
    results.push(grad_of(inputs.as_tensor())?);
    let data = varmap.data().lock().expect("varmap lock");
    for name in PARAMS {
        results.push(grad_of(data[name].as_tensor())?);
    }
    results
        .into_iter()
        .map(|t| t.to_dtype(DType::F64)?.to_device(&Device::Cpu))
        .collect()
}

fn relative_error(got: &Tensor, want: &Tensor) -> candle_core::Result<f64> {
    let scale = want.abs()?.max_all()?.to_scalar::<f64>()?.max(1e-30);
    Ok((got - want)?.abs()?.max_all()?.to_scalar::<f64>()? / scale)
}

fn check_parity(device: &Device) -> candle_core::Result<usize> {
    let names = ["output", "d inputs", "d W_ih", "d W_hh", "d b_ih", "d b_hh"];
    let sizes = [
        Size {
            batch: 3,
            steps: 5,
            input: 7,
            hidden: 9,
        },
        Size {
            batch: 64,
            steps: 46,
            input: 64,
            hidden: 256,
        },
        Size {
            batch: 16,
            steps: 20,
            input: 200,
            hidden: 1024,
        },
    ];
    let mut failures = 0;
    for size in sizes {
        let mut rng = Rng(Stream::new(0x6e0_1234 + size.hidden as u64));
        // PyTorch's initialisation range, U(-1/√H, 1/√H).
        let scale = 1.0 / (size.hidden as f32).sqrt();
        let (h, e) = (size.hidden, size.input);
        let values = vec![
            rng.tensor(&[3 * h, e], scale)?,
            rng.tensor(&[3 * h, h], scale)?,
            rng.tensor(&[3 * h], scale)?,
            rng.tensor(&[3 * h], scale)?,
        ];
        let inputs = rng.tensor(&[size.batch, size.steps, e], 1.0)?;
        let upstream = rng.tensor(&[size.batch, h], 1.0)?;
        let reference = run(size, &values, &inputs, &upstream, &Device::Cpu, DType::F64, false)?;
        let fused = run(size, &values, &inputs, &upstream, device, DType::F32, true)?;
        let composed = run(size, &values, &inputs, &upstream, device, DType::F32, false)?;
        for (i, name) in names.iter().enumerate() {
            let fused_err = relative_error(&fused[i], &reference[i])?;
            let composed_err = relative_error(&composed[i], &reference[i])?;
            let ok = fused_err <= GRU_BOUND;
            failures += usize::from(!ok);
            println!(
                "JSON {{\"check\":\"gru_parity\",\"size\":\"{size:?}\",\"what\":\"{name}\",\"fused_error\":{fused_err:.3e},\"composed_error\":{composed_err:.3e},\"bound\":{GRU_BOUND:e},\"ok\":{ok}}}"
            );
            println!(
                "  {:<48} {name:<8} fused {fused_err:.2e}  composed {composed_err:.2e}  {}",
                format!("{size:?}"),
                if ok { "ok" } else { "FAILED" }
            );
        }
    }
    Ok(failures)
}

/// Median seconds per call of `f` over `reps` calls, each followed by a device
/// synchronisation, after `warmup` calls.
fn time_median(
    device: &Device,
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    device.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn bench(device: &Device) -> candle_core::Result<()> {
    let sizes = [
        (
            "mini",
            Size {
                batch: 64,
                steps: 46,
                input: 64,
                hidden: 256,
            },
        ),
        (
            "paper",
            Size {
                batch: 64,
                steps: 46,
                input: 200,
                hidden: 4096,
            },
        ),
    ];
    for (label, size) in sizes {
        let mut rng = Rng(Stream::new(0xbe_0c4));
        let (gru, _varmap) = gru_with(
            size,
            &[
                rng.tensor(&[3 * size.hidden, size.input], 0.01)?,
                rng.tensor(&[3 * size.hidden, size.hidden], 0.01)?,
                rng.tensor(&[3 * size.hidden], 0.01)?,
                rng.tensor(&[3 * size.hidden], 0.01)?,
            ],
            device,
            DType::F32,
        )?;
        let inputs = Var::from_tensor(
            &rng.tensor(&[size.batch, size.steps, size.input], 1.0)?
                .to_device(device)?,
        )?;
        // Every question full length, as the batches' longest ones are.
        let lengths = vec![size.steps; size.batch];
        // Multiply-adds of the products, forward: input and hidden projections.
        let forward_flops =
            2.0 * (size.batch * size.steps * 3 * size.hidden * (size.input + size.hidden)) as f64;
        for tf32 in [false, true] {
            candle_core::cuda_backend::set_gemm_reduced_precision_f32(tf32);
            let precision = if tf32 { "tf32" } else { "f32" };
            for fused in [true, false] {
                let path = if fused { "fused" } else { "composed" };
                let states = |gru: &Gru| {
                    if fused {
                        gru.last_states(&inputs, &lengths)
                    } else {
                        gru.last_states_reference(&inputs, &lengths)
                    }
                };
                let reps = if size.hidden > 1024 { 7 } else { 21 };
                let forward = time_median(device, 2, reps, || states(&gru).map(drop))?;
                let both = time_median(device, 2, reps, || states(&gru)?.sum_all()?.backward().map(drop))?;
                println!(
                    "JSON {{\"check\":\"gru_bench\",\"size\":\"{label}\",\"shape\":\"N{}_T{}_E{}_H{}\",\"precision\":\"{precision}\",\"path\":\"{path}\",\"forward_ms\":{:.3},\"forward_backward_ms\":{:.3},\"forward_tflops\":{:.2}}}",
                    size.batch,
                    size.steps,
                    size.input,
                    size.hidden,
                    forward * 1e3,
                    both * 1e3,
                    forward_flops / forward / 1e12,
                );
                println!(
                    "  {label:<6} {precision:<5} {path:<9} forward {:>9.3} ms  forward+backward {:>9.3} ms",
                    forward * 1e3,
                    both * 1e3
                );
            }
        }
        candle_core::cuda_backend::set_gemm_reduced_precision_f32(false);
    }
    Ok(())
}

/// Four steps of Adam (with weight decay) on f(p) = Σ (p - target)², from the same start;
/// the parameters and the saved moments, on the CPU.
fn adam_run(device: &Device, start: &Tensor, target: &Tensor) -> candle_core::Result<Vec<(String, Tensor)>> {
    let p = Var::from_tensor(&start.to_device(device)?)?;
    let target = target.to_device(device)?;
    let mut adam = Adam::new(vec![("p".into(), p.clone())], AdamConfig::new(1e-2, 1e-3));
    for _ in 0..4 {
        let loss = (p.as_tensor() - &target)?.sqr()?.sum_all()?;
        adam.step(&loss.backward()?)?;
    }
    let mut out = vec![("p".to_string(), p.as_tensor().to_device(&Device::Cpu)?)];
    let mut state: Vec<_> = adam.state()?.into_iter().filter(|(k, _)| k != "step").collect();
    state.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, t) in state {
        out.push((key, t.to_device(&Device::Cpu)?));
    }
    Ok(out)
}

fn check_adam(device: &Device) -> candle_core::Result<usize> {
    let mut rng = Rng(Stream::new(0xada_0001));
    // An odd length, so that the grid-stride loop's last turn is partial.
    let start = rng.tensor(&[3, 70_001], 1.0)?;
    let target = rng.tensor(&[3, 70_001], 1.0)?;
    let cpu = adam_run(&Device::Cpu, &start, &target)?;
    let gpu = adam_run(device, &start, &target)?;
    let mut failures = 0;
    for ((name, want), (_, got)) in cpu.iter().zip(&gpu) {
        let err = relative_error(&got.to_dtype(DType::F64)?, &want.to_dtype(DType::F64)?)?;
        let ok = err <= ADAM_BOUND;
        failures += usize::from(!ok);
        println!(
            "JSON {{\"check\":\"adam_parity\",\"what\":\"{name}\",\"error\":{err:.3e},\"bound\":{ADAM_BOUND:e},\"ok\":{ok}}}"
        );
        println!("  adam {name:<4} {err:.2e}  {}", if ok { "ok" } else { "FAILED" });
    }
    Ok(failures)
}

/// One Adam step over as many f32 parameters as `paper-features` trains (about 59 M, in
/// 40 tensors): the in-place kernels against candle's composed update
/// ([`Adam::step_composed`]).
fn bench_adam(device: &Device) -> candle_core::Result<()> {
    let mut rng = Rng(Stream::new(0xada_0002));
    let vars: Vec<(String, Var)> = (0..40)
        .map(|i| {
            let values = rng.tensor(&[1_475_000], 0.1)?.to_device(device)?;
            Ok((format!("w{i}"), Var::from_tensor(&values)?))
        })
        .collect::<candle_core::Result<_>>()?;
    let loss = vars
        .iter()
        .map(|(_, v)| v.as_tensor().sqr()?.sum_all())
        .try_fold(Tensor::zeros((), DType::F32, device)?, |acc, s| acc + s?)?;
    let grads = loss.backward()?;
    let mut fused_adam = Adam::new(vars.clone(), AdamConfig::new(1e-4, 1e-5));
    let fused = time_median(device, 2, 11, || fused_adam.step(&grads))?;
    let mut composed_adam = Adam::new(vars.clone(), AdamConfig::new(1e-4, 1e-5));
    let composed = time_median(device, 2, 11, || composed_adam.step_composed(&grads))?;
    println!(
        "JSON {{\"check\":\"adam_bench\",\"parameters\":59000000,\"fused_ms\":{:.3},\"composed_ms\":{:.3}}}",
        fused * 1e3,
        composed * 1e3
    );
    println!(
        "  adam step over 59 M parameters: in place {:.3} ms, composed {:.3} ms",
        fused * 1e3,
        composed * 1e3
    );
    Ok(())
}

/// One convolution layer: input (N, C, H, W), output channels, kernel, stride, padding.
#[derive(Clone, Copy, Debug)]
struct ConvCase {
    input: [usize; 4],
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl ConvCase {
    fn params(&self) -> ConvParams {
        ConvParams {
            stride: self.stride,
            padding: self.padding,
        }
    }

    fn weight_dims(&self) -> [usize; 4] {
        [self.out_channels, self.input[1], self.kernel, self.kernel]
    }
}

/// The output and the gradients of input, weight and bias for Σ conv(x, w, b) ⊙ upstream,
/// through `film_conv::cudnn::conv2d` on `device` (f32 CUDA tensors) or candle's
/// convolution, on the CPU in f64 from the same values.
fn conv_run(
    case: ConvCase,
    values: &[Tensor; 3],
    device: &Device,
    dtype: DType,
    reference: bool,
) -> candle_core::Result<Vec<Tensor>> {
    let vars = values
        .iter()
        .map(|v| Var::from_tensor(&v.to_dtype(dtype)?.to_device(device)?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let (x, w, b) = (vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor());
    let y = if reference {
        film_conv::reference::conv2d(x, w, Some(b), case.params())?
    } else {
        // cuDNN itself, not film_conv::conv2d, which would fall back to candle (with a
        // warning) for a shape cuDNN cannot plan.
        film_conv::cudnn::conv2d(x, w, Some(b), case.params())?
    };
    let mut upstream_rng = Rng(Stream::new(0xc0_4f));
    let upstream = upstream_rng
        .tensor(y.dims(), 1.0)?
        .to_dtype(dtype)?
        .to_device(device)?;
    let grads = (&y * &upstream)?.sum_all()?.backward()?;
    let mut out = vec![y];
    for var in &vars {
        out.push(
            grads
                .get(var.as_tensor())
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg("a convolution gradient is missing".into()))?,
        );
    }
    out.into_iter()
        .map(|t| t.to_dtype(DType::F64)?.to_device(&Device::Cpu))
        .collect()
}

fn conv_values(case: ConvCase, rng: &mut Rng) -> candle_core::Result<[Tensor; 3]> {
    let fan_in = (case.input[1] * case.kernel * case.kernel) as f32;
    Ok([
        rng.tensor(&case.input, 1.0)?,
        rng.tensor(&case.weight_dims(), 1.0 / fan_in.sqrt())?,
        rng.tensor(&[case.out_channels], 0.1)?,
    ])
}

fn check_conv(device: &Device) -> candle_core::Result<usize> {
    let cases = [
        ConvCase {
            input: [2, 3, 32, 32],
            out_channels: 16,
            kernel: 4,
            stride: 2,
            padding: 1,
        },
        ConvCase {
            input: [2, 16, 16, 16],
            out_channels: 16,
            kernel: 4,
            stride: 2,
            padding: 1,
        },
        ConvCase {
            input: [2, 130, 14, 14],
            out_channels: 128,
            kernel: 1,
            stride: 1,
            padding: 0,
        },
        ConvCase {
            input: [2, 128, 14, 14],
            out_channels: 128,
            kernel: 3,
            stride: 1,
            padding: 1,
        },
        ConvCase {
            input: [3, 5, 9, 7],
            out_channels: 4,
            kernel: 3,
            stride: 3,
            padding: 1,
        },
    ];
    let names = ["output", "d input", "d weight", "d bias"];
    let mut failures = 0;
    for case in cases {
        let values = conv_values(case, &mut Rng(Stream::new(0xc0_0001)))?;
        let reference = conv_run(case, &values, &Device::Cpu, DType::F64, true)?;
        let got = conv_run(case, &values, device, DType::F32, false)?;
        for (i, name) in names.iter().enumerate() {
            let err = relative_error(&got[i], &reference[i])?;
            let ok = err <= CONV_BOUND;
            failures += usize::from(!ok);
            println!(
                "JSON {{\"check\":\"conv_parity\",\"case\":\"{case:?}\",\"what\":\"{name}\",\"error\":{err:.3e},\"bound\":{CONV_BOUND:e},\"ok\":{ok}}}"
            );
            println!(
                "  conv {:?} k{} s{} p{} {name:<8} {err:.2e}  {}",
                case.input,
                case.kernel,
                case.stride,
                case.padding,
                if ok { "ok" } else { "FAILED" }
            );
        }
    }
    Ok(failures)
}

/// Forward and forward + backward of the `paper-raw` model's convolutions at batch 64,
/// cuDNN against candle's convolution, in f32 and TF32.
fn bench_conv(device: &Device) -> candle_core::Result<()> {
    let cases = [
        (
            "stem_0",
            ConvCase {
                input: [64, 3, 224, 224],
                out_channels: 128,
                kernel: 4,
                stride: 2,
                padding: 1,
            },
        ),
        (
            "stem_1",
            ConvCase {
                input: [64, 128, 112, 112],
                out_channels: 128,
                kernel: 4,
                stride: 2,
                padding: 1,
            },
        ),
        (
            "block_1x1",
            ConvCase {
                input: [64, 130, 14, 14],
                out_channels: 128,
                kernel: 1,
                stride: 1,
                padding: 0,
            },
        ),
        (
            "block_3x3",
            ConvCase {
                input: [64, 128, 14, 14],
                out_channels: 128,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
        ),
    ];
    for (label, case) in cases {
        let values = conv_values(case, &mut Rng(Stream::new(0xc0_0002)))?;
        let vars = values
            .iter()
            .map(|v| Var::from_tensor(&v.to_device(device)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let (x, w, b) = (vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor());
        for tf32 in [false, true] {
            candle_core::cuda_backend::set_gemm_reduced_precision_f32(tf32);
            let precision = if tf32 { "tf32" } else { "f32" };
            for cudnn in [true, false] {
                let path = if cudnn { "cudnn" } else { "candle" };
                let conv = || {
                    if cudnn {
                        film_conv::cudnn::conv2d(x, w, Some(b), case.params())
                    } else {
                        film_conv::reference::conv2d(x, w, Some(b), case.params())
                    }
                };
                let reps = if case.input[2] > 100 { 5 } else { 21 };
                let forward = time_median(device, 2, reps, || conv().map(drop))?;
                let both = time_median(device, 2, reps, || conv()?.sum_all()?.backward().map(drop))?;
                println!(
                    "JSON {{\"check\":\"conv_bench\",\"layer\":\"{label}\",\"case\":\"{case:?}\",\"precision\":\"{precision}\",\"path\":\"{path}\",\"forward_ms\":{:.4},\"forward_backward_ms\":{:.4}}}",
                    forward * 1e3,
                    both * 1e3
                );
                println!(
                    "  {label:<9} {precision:<5} {path:<7} forward {:>8.3} ms  forward+backward {:>8.3} ms",
                    forward * 1e3,
                    both * 1e3
                );
            }
        }
        candle_core::cuda_backend::set_gemm_reduced_precision_f32(false);
    }
    Ok(())
}

/// A BatchNorm of `channels` on `device` in `dtype` whose scale and shift are `affine`.
fn batch_norm_with(
    channels: usize,
    affine: &[Tensor; 2],
    device: &Device,
    dtype: DType,
) -> candle_core::Result<(BatchNorm, VarMap)> {
    let varmap = VarMap::new();
    let norm = BatchNorm::new(channels, true, VarBuilder::from_varmap(&varmap, dtype, device))?;
    {
        let data = varmap.data().lock().expect("varmap lock");
        for (name, value) in ["weight", "bias"].iter().zip(affine) {
            data[*name].set(&value.to_dtype(dtype)?.to_device(device)?)?;
        }
    }
    Ok((norm, varmap))
}

/// A training step's output and gradients (input, scale, shift) for Σ y ⊙ upstream, then
/// the evaluation output with the running statistics it updated; on the CPU in f64 through
/// candle-nn's composition when `reference`, else through the fused op on `device`.
fn batch_norm_run(
    dims: &[usize],
    relu: bool,
    values: &[Tensor; 4],
    device: &Device,
    dtype: DType,
    reference: bool,
) -> candle_core::Result<Vec<Tensor>> {
    let (norm, varmap) = batch_norm_with(dims[1], &[values[1].clone(), values[2].clone()], device, dtype)?;
    let x = Var::from_tensor(&values[0].to_dtype(dtype)?.to_device(device)?)?;
    let upstream = values[3].to_dtype(dtype)?.to_device(device)?;
    let forward = |train: bool| match (reference, relu) {
        (true, _) => norm.forward_reference_t(x.as_tensor(), train, relu),
        (false, true) => norm.forward_relu_t(x.as_tensor(), train),
        (false, false) => norm.forward_t(x.as_tensor(), train),
    };
    let y = forward(true)?;
    let grads = (&y * &upstream)?.sum_all()?.backward()?;
    let mut out = vec![y];
    let missing = || candle_core::Error::Msg("a BatchNorm gradient is missing".into());
    out.push(grads.get(x.as_tensor()).cloned().ok_or_else(missing)?);
    {
        let data = varmap.data().lock().expect("varmap lock");
        for name in ["weight", "bias"] {
            out.push(grads.get(data[name].as_tensor()).cloned().ok_or_else(missing)?);
        }
    }
    out.push(forward(false)?);
    out.into_iter()
        .map(|t| t.to_dtype(DType::F64)?.to_device(&Device::Cpu))
        .collect()
}

fn batch_norm_values(dims: &[usize], rng: &mut Rng) -> candle_core::Result<[Tensor; 4]> {
    let channels = dims[1];
    // Inputs off zero and spread, so that the mean matters and the ReLU cuts.
    let x = (rng.tensor(dims, 2.0)? + 0.5)?;
    let scale = (rng.tensor(&[channels], 0.5)? + 1.0)?;
    Ok([x, scale, rng.tensor(&[channels], 0.5)?, rng.tensor(dims, 1.0)?])
}

fn check_batch_norm(device: &Device) -> candle_core::Result<usize> {
    let cases: [(&[usize], bool); 5] = [
        (&[4, 16, 9, 7], true),
        (&[4, 16, 9, 7], false),
        (&[2, 128, 14, 14], true),
        (&[64, 1024], true),
        (&[3, 5, 33], false),
    ];
    let names = ["output", "d input", "d scale", "d shift", "evaluation output"];
    let mut failures = 0;
    for (dims, relu) in cases {
        let values = batch_norm_values(dims, &mut Rng(Stream::new(0xb0_0001)))?;
        let reference = batch_norm_run(dims, relu, &values, &Device::Cpu, DType::F64, true)?;
        let got = batch_norm_run(dims, relu, &values, device, DType::F32, false)?;
        for (i, name) in names.iter().enumerate() {
            let err = relative_error(&got[i], &reference[i])?;
            let ok = err <= BN_BOUND;
            failures += usize::from(!ok);
            println!(
                "JSON {{\"check\":\"batch_norm_parity\",\"shape\":{dims:?},\"relu\":{relu},\"what\":\"{name}\",\"error\":{err:.3e},\"bound\":{BN_BOUND:e},\"ok\":{ok}}}"
            );
            println!(
                "  batch norm {dims:?} relu {relu:<5} {name:<17} {err:.2e}  {}",
                if ok { "ok" } else { "FAILED" }
            );
        }
    }
    Ok(failures)
}

/// The stem's first BatchNorm + ReLU at batch 64 (64, 128, 112, 112), training: the fused
/// kernels against candle-nn's composition.
fn bench_batch_norm(device: &Device) -> candle_core::Result<()> {
    let dims = [64, 128, 112, 112];
    let mut rng = Rng(Stream::new(0xb0_0002));
    let values = batch_norm_values(&dims, &mut rng)?;
    let (norm, _varmap) = batch_norm_with(
        dims[1],
        &[values[1].clone(), values[2].clone()],
        device,
        DType::F32,
    )?;
    let x = Var::from_tensor(&values[0].to_device(device)?)?;
    for fused in [true, false] {
        let path = if fused { "fused" } else { "composed" };
        let forward = || match fused {
            true => norm.forward_relu_t(x.as_tensor(), true),
            false => norm.forward_reference_t(x.as_tensor(), true, true),
        };
        let fwd = time_median(device, 2, 11, || forward().map(drop))?;
        let both = time_median(device, 2, 11, || forward()?.sum_all()?.backward().map(drop))?;
        println!(
            "JSON {{\"check\":\"batch_norm_bench\",\"shape\":{dims:?},\"path\":\"{path}\",\"forward_ms\":{:.4},\"forward_backward_ms\":{:.4}}}",
            fwd * 1e3,
            both * 1e3
        );
        println!(
            "  batch norm + relu {dims:?} {path:<8} forward {:>8.3} ms  forward+backward {:>8.3} ms",
            fwd * 1e3,
            both * 1e3
        );
    }
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let device = match film_train::gpu::cuda_device(0) {
        Ok(device) => device,
        Err(e) => {
            eprintln!("step_check: no CUDA device ({e}); nothing checked");
            std::process::exit(2);
        }
    };
    println!("parity against the composed GRU in f64 on the CPU (bound {GRU_BOUND:e}):");
    let failures = check_parity(&device)?;
    println!("timings (medians, memory pool kept as film-train keeps it):");
    bench(&device)?;
    println!("Adam: four steps on the GPU against the same steps on the CPU (bound {ADAM_BOUND:e}):");
    let failures = failures + check_adam(&device)?;
    bench_adam(&device)?;
    println!("cuDNN convolutions against candle's on the CPU in f64 (bound {CONV_BOUND:e}):");
    let failures = failures + check_conv(&device)?;
    bench_conv(&device)?;
    println!("fused BatchNorm against candle-nn's on the CPU in f64 (bound {BN_BOUND:e}):");
    let failures = failures + check_batch_norm(&device)?;
    bench_batch_norm(&device)?;
    if failures > 0 {
        eprintln!("step_check: {failures} parity case(s) above the bound");
        std::process::exit(1);
    }
    println!("step_check: every parity case within its bound");
    Ok(())
}
