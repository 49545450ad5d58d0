//! How adam.cu's kernels are launched for Adam's in-place passes ([`crate::adam`]): which
//! kernel, with which grid and which arguments. `cuda/mod.rs` puts device addresses in
//! these calls and launches them; the tests below run the same calls on the CPU through
//! cuda-emulator, in every build, against Adam's composed update.

use kernel_launch::kernel_call::{KernelArg, KernelCall};

use crate::adam::{MomentUpdate, ParameterUpdate};

/// Threads per block, and the resident blocks per multiprocessor the grid-stride loops aim
/// for.
const GRID_STRIDE: (u32, u32) = (256, 8);

/// The vectors adam.cu's kernels read and write, all of one variable's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum AdamBuffer {
    /// The moment a [`MomentUpdate`] updates in place.
    Moment,
    Grad,
    /// The parameters: read by the moment updates, updated in place by the
    /// [`ParameterUpdate`].
    Param,
    FirstMoment,
    SecondMoment,
}

impl MomentUpdate {
    /// `adam_moment_f32` over a variable of `len` values on a device with `sm_count`
    /// multiprocessors.
    pub(crate) fn kernel_call(&self, len: usize, sm_count: u32) -> KernelCall<AdamBuffer> {
        use AdamBuffer::*;
        KernelCall::grid_stride(
            "adam_moment_f32",
            len,
            GRID_STRIDE,
            sm_count,
            vec![
                KernelArg::Buffer(Moment),
                KernelArg::Buffer(Grad),
                KernelArg::Buffer(Param),
                KernelArg::U64(len as u64),
                KernelArg::F32(self.decay),
                KernelArg::F32(self.rest),
                KernelArg::F32(self.weight_decay),
                KernelArg::I32(self.squared as i32),
            ],
        )
    }
}

impl ParameterUpdate {
    /// `adam_parameter_f32` over a variable of `len` values on a device with `sm_count`
    /// multiprocessors.
    pub(crate) fn kernel_call(&self, len: usize, sm_count: u32) -> KernelCall<AdamBuffer> {
        use AdamBuffer::*;
        KernelCall::grid_stride(
            "adam_parameter_f32",
            len,
            GRID_STRIDE,
            sm_count,
            vec![
                KernelArg::Buffer(Param),
                KernelArg::Buffer(FirstMoment),
                KernelArg::Buffer(SecondMoment),
                KernelArg::U64(len as u64),
                KernelArg::F32(self.learning_rate),
                KernelArg::F32(self.bias1),
                KernelArg::F32(self.bias2),
                KernelArg::F32(self.eps),
            ],
        )
    }
}

/// adam.cu's kernels, compiled for the CPU by cuda-emulator and launched as planned above
/// with the passes `Adam::step` makes, against `Adam::step_composed` (candle's composed
/// update) over several steps, with weight decay.
#[cfg(test)]
mod tests {
    use candle_core::{Device, Result, Tensor, Var};
    use kernel_launch::emulator::{self, Arg, DeviceBuffer, Module};

    use super::*;
    use crate::adam::{Adam, AdamConfig, InPlacePasses};

    /// A small device, so that the capped grids loop.
    const SM_COUNT: u32 = 1;

    /// Runs `call` on the emulator, each buffer it names given by `buffer`.
    fn run<'a>(
        module: &Module,
        call: &KernelCall<AdamBuffer>,
        buffer: impl Fn(AdamBuffer) -> &'a DeviceBuffer,
    ) {
        emulator::launch(module, call, |&b| Arg::buffer(buffer(b))).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn adam_kernels_follow_the_composed_update() -> Result<()> {
        let module = kernel_launch::emulated_kernels!("adam.cu", include_str!("cuda/adam.cu"));
        // More values than the capped grid has threads, so that they loop.
        let len = 3001;
        assert!(SM_COUNT * GRID_STRIDE.0 * GRID_STRIDE.1 < len as u32);
        let config = AdamConfig::new(3e-3, 1e-2);
        let start: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).collect();
        // A linear loss Σ c·p: the gradient is c at every step, so both sides see the same
        // one; the weight decay makes the update depend on the parameters all the same.
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

            let passes = InPlacePasses::of_step(&config, step);
            for (moment, pass) in [(&m, &passes.first_moment), (&v, &passes.second_moment)] {
                run(module, &pass.kernel_call(len, SM_COUNT), |b| match b {
                    AdamBuffer::Moment => moment,
                    AdamBuffer::Grad => &grad,
                    AdamBuffer::Param => &param,
                    other => panic!("a moment update does not read {other:?}"),
                });
            }
            run(
                module,
                &passes.parameter.kernel_call(len, SM_COUNT),
                |b| match b {
                    AdamBuffer::Param => &param,
                    AdamBuffer::FirstMoment => &m,
                    AdamBuffer::SecondMoment => &v,
                    other => panic!("the parameter update does not read {other:?}"),
                },
            );
            for buffer in [&param, &m, &v, &grad] {
                assert_eq!(buffer.guard_report(), None, "step {step}");
            }

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
}
