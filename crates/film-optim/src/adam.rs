//! Adam with L2 weight decay exactly as PyTorch's `torch.optim.Adam(weight_decay=…)`:
//! the decay is added to the gradient (not decoupled as in AdamW).

use std::collections::HashMap;

use candle_core::{backprop::GradStore, CpuStorage, DType, InplaceOp3, Layout, Result, Tensor, Var};
use rayon::prelude::*;

/// Adam's hyper-parameters; β₁, β₂ and ε are PyTorch's defaults.
#[derive(Clone, Copy, Debug)]
pub struct AdamConfig {
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl AdamConfig {
    pub fn new(learning_rate: f64, weight_decay: f64) -> Self {
        AdamConfig {
            learning_rate,
            weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// The optimizer over named variables, with moment estimates that can be saved and
/// restored so that a resumed run continues exactly.
pub struct Adam {
    config: AdamConfig,
    vars: Vec<(String, Var)>,
    first_moment: HashMap<String, Tensor>,
    second_moment: HashMap<String, Tensor>,
    step: u64,
}

impl Adam {
    /// `vars` are the trainable variables with their checkpoint names.
    pub fn new(vars: Vec<(String, Var)>, config: AdamConfig) -> Self {
        Adam {
            config,
            vars,
            first_moment: HashMap::new(),
            second_moment: HashMap::new(),
            step: 0,
        }
    }

    /// The learning rate of the steps from now on (a warmup changes it every step).
    pub fn set_learning_rate(&mut self, learning_rate: f64) {
        self.config.learning_rate = learning_rate;
    }

    /// One update from the gradients in `grads`; variables without a gradient (BatchNorm
    /// running statistics, unused weights) are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_with(grads, true)
    }

    /// [`Adam::step`] through candle's composed operations only, never the in-place
    /// passes: the reference those are tested and timed against.
    pub fn step_composed(&mut self, grads: &GradStore) -> Result<()> {
        self.step_with(grads, false)
    }

    /// [`Adam::step`]; `fused` allows the in-place passes ([`MomentUpdate`],
    /// [`ParameterUpdate`]) for f32 variables on the CPU, and on CUDA devices with the `cuda`
    /// feature; every other variable takes the composed candle path.
    fn step_with(&mut self, grads: &GradStore, fused: bool) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        for (name, var) in &self.vars {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            if fused && in_place_supported(var) {
                let grad = grad.detach().contiguous()?;
                let param = var.as_tensor();
                let m = match self.first_moment.get(name) {
                    Some(m) => m.clone(),
                    None => param.detach().zeros_like()?,
                };
                let v = match self.second_moment.get(name) {
                    Some(v) => v.clone(),
                    None => param.detach().zeros_like()?,
                };
                let passes = InPlacePasses::of_step(&c, self.step);
                m.inplace_op3(&grad, param, &passes.first_moment)?;
                v.inplace_op3(&grad, param, &passes.second_moment)?;
                param.inplace_op3(&m, &v, &passes.parameter)?;
                self.first_moment.insert(name.clone(), m);
                self.second_moment.insert(name.clone(), v);
                continue;
            }
            // Detached: the moments must not hold on to this step's autograd graph, or every
            // step's activations would stay alive through them.
            let (grad, param) = (grad.detach(), var.as_tensor().detach());
            let grad = if c.weight_decay != 0.0 {
                (grad + (&param * c.weight_decay)?)?
            } else {
                grad
            };
            let m = match self.first_moment.get(name) {
                Some(m) => ((m * c.beta1)? + (&grad * (1.0 - c.beta1))?)?,
                None => (&grad * (1.0 - c.beta1))?,
            };
            let v = match self.second_moment.get(name) {
                Some(v) => ((v * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?,
                None => (grad.sqr()? * (1.0 - c.beta2))?,
            };
            let denom = ((&v / bias2)?.sqrt()? + c.eps)?;
            let update = ((&m / bias1)? / denom)?;
            var.set(&(param - (update * c.learning_rate)?)?)?;
            self.first_moment.insert(name.clone(), m);
            self.second_moment.insert(name.clone(), v);
        }
        Ok(())
    }

    /// The moments as named tensors (`m.NAME`, `v.NAME`) plus the step count.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut state = HashMap::new();
        for (name, m) in &self.first_moment {
            state.insert(format!("m.{name}"), m.clone());
        }
        for (name, v) in &self.second_moment {
            state.insert(format!("v.{name}"), v.clone());
        }
        let device = self
            .vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        state.insert("step".into(), Tensor::new(&[self.step as f64], &device)?);
        Ok(state)
    }

    /// Restores what [`Adam::state`] saved, checking every moment against its variable.
    pub fn load_state(&mut self, state: HashMap<String, Tensor>) -> Result<()> {
        let shapes: HashMap<&str, &Var> = self.vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
        self.first_moment.clear();
        self.second_moment.clear();
        for (key, tensor) in state {
            if key == "step" {
                self.step = tensor.to_vec1::<f64>()?.first().copied().unwrap_or(0.0) as u64;
                continue;
            }
            let (kind, name) = key
                .split_once('.')
                .ok_or_else(|| candle_core::Error::msg(format!("unexpected optimizer entry {key:?}")))?;
            let var = shapes.get(name).ok_or_else(|| {
                candle_core::Error::msg(format!("optimizer state for unknown variable {name:?}"))
            })?;
            if tensor.dims() != var.dims() {
                candle_core::bail!(
                    "optimizer state {key}: shape {:?}, variable has {:?}",
                    tensor.dims(),
                    var.dims()
                );
            }
            let tensor = tensor.to_device(var.device())?.to_dtype(var.dtype())?;
            match kind {
                "m" => self.first_moment.insert(name.to_string(), tensor),
                "v" => self.second_moment.insert(name.to_string(), tensor),
                other => candle_core::bail!("unexpected optimizer entry kind {other:?} in {key:?}"),
            };
        }
        Ok(())
    }
}

/// Whether the in-place passes can update `var`: f32 on the CPU, and on CUDA devices with
/// the `cuda` feature (`cuda/mod.rs`).
fn in_place_supported(var: &Var) -> bool {
    let device = var.device();
    var.dtype() == DType::F32 && (device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda()))
}

/// Values handed to one thread at a time by the in-place passes.
const CHUNK: usize = 1 << 14;

fn values<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    kernel_launch::cpu::contiguous(storage, layout, "Adam")
}

fn values_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&mut data[start..end]),
        _ => candle_core::bail!("Adam: optimizer tensors must be contiguous f32"),
    }
}

/// The three in-place passes of one step, in the order they run.
pub(crate) struct InPlacePasses {
    pub first_moment: MomentUpdate,
    pub second_moment: MomentUpdate,
    pub parameter: ParameterUpdate,
}

impl InPlacePasses {
    /// For step `step` (the first is 1), with the scalars in f32 as the kernels take them.
    pub fn of_step(c: &AdamConfig, step: u64) -> InPlacePasses {
        let moment = |decay: f64, squared: bool| MomentUpdate {
            decay: decay as f32,
            rest: (1.0 - decay) as f32,
            weight_decay: c.weight_decay as f32,
            squared,
        };
        let bias = |beta: f64| (1.0 - beta.powi(step as i32)) as f32;
        InPlacePasses {
            first_moment: moment(c.beta1, false),
            second_moment: moment(c.beta2, true),
            parameter: ParameterUpdate {
                learning_rate: c.learning_rate as f32,
                bias1: bias(c.beta1),
                bias2: bias(c.beta2),
                eps: c.eps as f32,
            },
        }
    }
}

/// `moment = decay · moment + (1 - decay) · t` in place, t = g + λ·p (or its square for
/// the second moment): one pass instead of the five allocating candle ops it replaces
/// (what the passes saved: docs/benchmarks.md, "The training step", change 11).
pub(crate) struct MomentUpdate {
    pub decay: f32,
    /// 1 - decay, computed in f64: `1.0 - 0.999f32` is about 1.3e-5 off in relative terms.
    pub rest: f32,
    pub weight_decay: f32,
    pub squared: bool,
}

impl InplaceOp3 for MomentUpdate {
    fn name(&self) -> &'static str {
        "adam-moment"
    }

    fn cpu_fwd(
        &self,
        moment: &mut CpuStorage,
        moment_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
        param: &CpuStorage,
        param_layout: &Layout,
    ) -> Result<()> {
        let moment = values_mut(moment, moment_layout)?;
        let (grad, param) = (values(grad, grad_layout)?, values(param, param_layout)?);
        if grad.len() != moment.len() || param.len() != moment.len() {
            candle_core::bail!("Adam: moment, gradient and parameter sizes differ");
        }
        let Self {
            decay,
            rest,
            weight_decay,
            squared,
        } = *self;
        moment
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK).zip(param.par_chunks(CHUNK)))
            .for_each(|(moment, (grad, param))| {
                for ((m, &g), &p) in moment.iter_mut().zip(grad).zip(param) {
                    let g = g + weight_decay * p;
                    let t = if squared { g * g } else { g };
                    *m = decay * *m + rest * t;
                }
            });
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        moment: &mut candle_core::CudaStorage,
        moment_layout: &Layout,
        grad: &candle_core::CudaStorage,
        grad_layout: &Layout,
        param: &candle_core::CudaStorage,
        param_layout: &Layout,
    ) -> Result<()> {
        crate::cuda::moment(
            self,
            (moment, moment_layout),
            (grad, grad_layout),
            (param, param_layout),
        )
    }
}

/// `p -= lr · (m / bias1) / (√(v / bias2) + ε)` in place.
pub(crate) struct ParameterUpdate {
    pub learning_rate: f32,
    pub bias1: f32,
    pub bias2: f32,
    pub eps: f32,
}

impl InplaceOp3 for ParameterUpdate {
    fn name(&self) -> &'static str {
        "adam-parameter"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_layout: &Layout,
        m: &CpuStorage,
        m_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<()> {
        let param = values_mut(param, param_layout)?;
        let (m, v) = (values(m, m_layout)?, values(v, v_layout)?);
        if m.len() != param.len() || v.len() != param.len() {
            candle_core::bail!("Adam: parameter and moment sizes differ");
        }
        let Self {
            learning_rate,
            bias1,
            bias2,
            eps,
        } = *self;
        param
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(param, (m, v))| {
                for ((p, &m), &v) in param.iter_mut().zip(m).zip(v) {
                    *p -= learning_rate * (m / bias1) / ((v / bias2).sqrt() + eps);
                }
            });
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        param: &mut candle_core::CudaStorage,
        param_layout: &Layout,
        m: &candle_core::CudaStorage,
        m_layout: &Layout,
        v: &candle_core::CudaStorage,
        v_layout: &Layout,
    ) -> Result<()> {
        crate::cuda::parameter(self, (param, param_layout), (m, m_layout), (v, v_layout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps on f(p) = Σ p² against values worked out by hand with PyTorch's formula.
    #[test]
    fn matches_pytorch_adam_with_l2() -> Result<()> {
        let p = Var::new(&[1.0f64, -2.0], &Device::Cpu)?;
        let mut adam = Adam::new(vec![("p".into(), p.clone())], AdamConfig::new(0.1, 0.01));
        for _ in 0..2 {
            let loss = p.as_tensor().sqr()?.sum_all()?;
            adam.step(&loss.backward()?)?;
        }
        // Step 1: g = 2p + 0.01p; m̂ = g and v̂ = g², so p moves by lr·g/(|g| + ε).
        let g1 = [2.01f64, -4.02];
        let p1 = [
            1.0 - 0.1 * g1[0] / (g1[0].abs() + 1e-8),
            -2.0 - 0.1 * g1[1] / (g1[1].abs() + 1e-8),
        ];
        let g2 = [2.01 * p1[0], 2.01 * p1[1]];
        let want: Vec<f64> = (0..2)
            .map(|i| {
                let m = 0.9 * 0.1 * g1[i] + 0.1 * g2[i];
                let v = 0.999 * 0.001 * g1[i] * g1[i] + 0.001 * g2[i] * g2[i];
                let (mh, vh) = (m / (1.0 - 0.81), v / (1.0 - 0.999f64.powi(2)));
                p1[i] - 0.1 * mh / (vh.sqrt() + 1e-8)
            })
            .collect();
        // The moments carry no autograd graph: otherwise each step's graph (activations
        // included) would stay alive through them and memory would grow without bound.
        for (key, t) in adam.state()? {
            assert!(
                !t.track_op(),
                "optimizer state {key} still tracks its autograd graph"
            );
        }
        let got = p.as_tensor().to_vec1::<f64>()?;
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "got {got:?}, want {want:?}");
        }
        Ok(())
    }
    /// The in-place f32 passes against the composed path on the same variables and losses,
    /// over several steps, with weight decay; and their saved states agree.
    #[test]
    fn fused_cpu_update_matches_the_composed_one() -> Result<()> {
        let dev = Device::Cpu;
        let start = Tensor::randn(0f32, 1.0, (3, 70_001), &dev)?;
        let target = Tensor::randn(0f32, 1.0, (3, 70_001), &dev)?;
        let run = |fused: bool| -> Result<(Tensor, Adam)> {
            let p = Var::from_tensor(&start)?;
            let mut adam = Adam::new(vec![("p".into(), p.clone())], AdamConfig::new(1e-2, 1e-3));
            for _ in 0..4 {
                let loss = (p.as_tensor() - &target)?.sqr()?.sum_all()?;
                adam.step_with(&loss.backward()?, fused)?;
            }
            Ok((p.as_tensor().clone(), adam))
        };
        let ((fused, fused_adam), (composed, composed_adam)) = (run(true)?, run(false)?);
        let diff = (&fused - &composed)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "parameters differ by {diff}");
        let moved = (&fused - &start)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            moved > 0.03,
            "four steps of lr 1e-2 moved the parameters only {moved}"
        );
        let (a, b) = (fused_adam.state()?, composed_adam.state()?);
        assert_eq!(a.len(), b.len());
        for (key, t) in a.iter().filter(|(key, _)| key.as_str() != "step") {
            let scale = b[key].abs()?.max_all()?.to_scalar::<f32>()?;
            let d = (t - &b[key])?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                d <= 1e-6 * scale,
                "state {key} differs by {d} (largest value {scale})"
            );
        }
        Ok(())
    }
}
