//! How batch_norm.cu's kernels are launched: for a contiguous (N, C, S) f32 tensor, which
//! kernel, with which grid and which arguments, for the statistics, the normalisation and
//! the two backward passes. `cuda/mod.rs` puts device addresses in these calls and launches
//! them; the tests below run the same calls on the CPU through cuda-emulator, in every
//! build, against candle-nn's BatchNorm.

use candle_core::Result;
use kernel_launch::kernel_call::{KernelArg, KernelCall};

/// Threads of the per-channel blocks: `BN_THREADS` in batch_norm.cu, whose shared arrays
/// have one slot per thread.
const CHANNEL_THREADS: u32 = 512;
/// Threads per block of the element-wise kernels, and the resident blocks per
/// multiprocessor their grid-stride loops aim for.
const ELEMENTWISE: (u32, u32) = (256, 8);

/// Batch, channels and values per (example, channel) row of a contiguous (N, C, S) tensor.
pub(crate) type Dims = (usize, usize, usize);

/// The buffers batch_norm.cu's kernels read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BnBuffer {
    X,
    /// (C, 3) rows [mean, 1/√(variance + eps), variance], written by the statistics.
    Statistics,
    /// (C, 2) rows [scale, shift].
    Affine,
    /// (C, 2) rows [mean, 1/√(variance + eps)] the output is normalised with.
    MeanInvStd,
    Y,
    Dy,
    /// (C, 2) rows [d scale, d shift].
    GradAffine,
    Dx,
}

fn u32_of(what: &'static str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| {
        candle_core::Error::Msg(format!("fused BatchNorm on CUDA: {what} {value} exceeds 32 bits"))
    })
}

/// One block of CHANNEL_THREADS per channel.
fn per_channel(kernel: &str, channels: u32, args: Vec<KernelArg<BnBuffer>>) -> KernelCall<BnBuffer> {
    KernelCall {
        kernel: kernel.into(),
        grid: (channels.max(1), 1, 1),
        block: (CHANNEL_THREADS, 1, 1),
        shared_bytes: 0,
        args,
    }
}

/// `bn_statistics_f32`: `Statistics` from `X`, the variance biased, as the CPU's
/// `channel_statistics` computes it.
pub(crate) fn statistics((batch, channels, spatial): Dims, eps: f32) -> Result<KernelCall<BnBuffer>> {
    use BnBuffer::*;
    let channels = u32_of("channels", channels)?;
    Ok(per_channel(
        "bn_statistics_f32",
        channels,
        vec![
            KernelArg::Buffer(X),
            KernelArg::Buffer(Statistics),
            KernelArg::U32(u32_of("batch", batch)?),
            KernelArg::U32(channels),
            KernelArg::U32(u32_of("row length", spatial)?),
            KernelArg::F32(eps),
        ],
    ))
}

/// `bn_forward_f32`: `Y` = [relu](scale · (x - mean) · inv_std + shift), from `X`,
/// `Affine` and `MeanInvStd`.
pub(crate) fn forward(
    (batch, channels, spatial): Dims,
    relu: bool,
    sm_count: u32,
) -> Result<KernelCall<BnBuffer>> {
    use BnBuffer::*;
    let total = batch * channels * spatial;
    Ok(KernelCall::grid_stride(
        "bn_forward_f32",
        total,
        ELEMENTWISE,
        sm_count,
        vec![
            KernelArg::Buffer(X),
            KernelArg::Buffer(Affine),
            KernelArg::Buffer(MeanInvStd),
            KernelArg::Buffer(Y),
            KernelArg::U64(total as u64),
            KernelArg::U32(u32_of("channels", channels)?),
            KernelArg::U32(u32_of("row length", spatial.max(1))?),
            KernelArg::I32(relu as i32),
        ],
    ))
}

/// The backward, as the CPU's `normalize_backward`: `bn_backward_sums_f32` writes
/// `GradAffine`, then `bn_backward_input_f32` reads it to write `Dx`. `batch_statistics`:
/// the forward normalised with this batch's statistics (training), whose dependence on x
/// the input gradient then carries.
pub(crate) fn backward(
    (batch, channels, spatial): Dims,
    relu: bool,
    batch_statistics: bool,
    sm_count: u32,
) -> Result<[KernelCall<BnBuffer>; 2]> {
    use BnBuffer::*;
    let total = batch * channels * spatial;
    let (channels, spatial_u) = (
        u32_of("channels", channels)?,
        u32_of("row length", spatial.max(1))?,
    );
    let sums = per_channel(
        "bn_backward_sums_f32",
        channels,
        vec![
            KernelArg::Buffer(X),
            KernelArg::Buffer(Dy),
            KernelArg::Buffer(Affine),
            KernelArg::Buffer(MeanInvStd),
            KernelArg::Buffer(GradAffine),
            KernelArg::U32(u32_of("batch", batch)?),
            KernelArg::U32(channels),
            KernelArg::U32(spatial_u),
            KernelArg::I32(relu as i32),
        ],
    );
    let input = KernelCall::grid_stride(
        "bn_backward_input_f32",
        total,
        ELEMENTWISE,
        sm_count,
        vec![
            KernelArg::Buffer(X),
            KernelArg::Buffer(Dy),
            KernelArg::Buffer(Affine),
            KernelArg::Buffer(MeanInvStd),
            KernelArg::Buffer(GradAffine),
            KernelArg::Buffer(Dx),
            KernelArg::U64(total as u64),
            KernelArg::U32(channels),
            KernelArg::U32(spatial_u),
            KernelArg::F32((batch * spatial) as f32),
            KernelArg::I32(relu as i32),
            KernelArg::I32(batch_statistics as i32),
        ],
    );
    Ok([sums, input])
}

/// batch_norm.cu's kernels, compiled for the CPU by cuda-emulator and launched as planned
/// above, against candle-nn's BatchNorm: the statistics, the output and every gradient, in
/// training and evaluation, with and without affine parameters and ReLU.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::{VarBuilder, VarMap};
    use kernel_launch::emulator::{self, Arg, DeviceBuffer, Module};

    use super::*;
    use crate::BatchNorm;

    /// A small device, so that the element-wise kernels' capped grids loop.
    const SM_COUNT: u32 = 1;
    const EPS: f32 = 1e-5;

    fn kernels() -> &'static Module {
        kernel_launch::emulated_kernels!("batch_norm.cu", include_str!("cuda/batch_norm.cu"))
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

    /// Runs `call` on the emulator with the buffers of `device`.
    fn run(call: &KernelCall<BnBuffer>, device: &HashMap<BnBuffer, DeviceBuffer>) {
        emulator::launch(kernels(), call, |b| Arg::buffer(&device[b])).unwrap_or_else(|e| panic!("{e}"));
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

        let dims = (batch, channels, spatial);
        let mut device = HashMap::from([
            (BnBuffer::X, DeviceBuffer::from_slice("x", &x_values)),
            (BnBuffer::Dy, DeviceBuffer::from_slice("dy", &dy_values)),
            (BnBuffer::Affine, DeviceBuffer::from_slice("affine", &affine_rows)),
            (
                BnBuffer::Statistics,
                DeviceBuffer::uninit("statistics", 3 * channels),
            ),
            (BnBuffer::Y, DeviceBuffer::uninit("y", total)),
            (
                BnBuffer::GradAffine,
                DeviceBuffer::uninit("grad_affine", 2 * channels),
            ),
            (BnBuffer::Dx, DeviceBuffer::uninit("dx", total)),
        ]);
        let mean_inv_std: Vec<f32> = if train {
            run(&statistics(dims, EPS)?, &device);
            let out = device[&BnBuffer::Statistics].values();
            for c in 0..channels {
                let values: Vec<f64> = (0..batch)
                    .flat_map(|n| {
                        x_values[(n * channels + c) * spatial..][..spatial]
                            .iter()
                            .map(|&v| v as f64)
                    })
                    .collect();
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let variance =
                    values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len() as f64;
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
        device.insert(
            BnBuffer::MeanInvStd,
            DeviceBuffer::from_slice("mean_inv_std", &mean_inv_std),
        );

        run(&forward(dims, relu, SM_COUNT)?, &device);
        let y = device[&BnBuffer::Y].values();
        let err = max_relative_error(&y, &y_ref.flatten_all()?.to_vec1::<f32>()?);
        assert!(err < 1e-5, "outputs differ by {err} ({what})");

        for call in backward(dims, relu, train, SM_COUNT)? {
            run(&call, &device);
        }
        for buffer in device.values() {
            assert_eq!(buffer.guard_report(), None, "{what}");
        }
        let (dx, grad_affine) = (&device[&BnBuffer::Dx], &device[&BnBuffer::GradAffine]);
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
        check([4, 2, 5, 3], false, false, false)?;
        // More values than the capped grid's threads, so that they loop.
        check([2, 3, 1, 1000], true, true, false)
    }
}
