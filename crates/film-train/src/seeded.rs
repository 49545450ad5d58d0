//! Reproducible weight initialisation: candle cannot seed its CPU generator, so the
//! variables are drawn here from a seeded generator in the order the model asks for them.

use std::sync::Mutex;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};

/// A [`VarMap`] whose new variables come from a seeded generator.
struct SeededVarMap {
    varmap: VarMap,
    rng: Mutex<rand::rngs::StdRng>,
}

/// A `VarBuilder` that creates the model's variables in `varmap`, initialised from `seed`.
pub fn seeded_var_builder(varmap: &VarMap, seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
    let backend = SeededVarMap {
        varmap: varmap.clone(),
        rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

fn sample(init: Init, shape: &Shape, rng: &mut rand::rngs::StdRng) -> Vec<f64> {
    let n = shape.elem_count();
    let uniform = |rng: &mut rand::rngs::StdRng, lo: f64, up: f64| -> Vec<f64> {
        (0..n).map(|_| rng.random_range(lo..up)).collect()
    };
    let normal = |rng: &mut rand::rngs::StdRng, mean: f64, std: f64| -> Vec<f64> {
        (0..n)
            .map(|_| {
                // Box–Muller; 1 - u keeps the logarithm finite.
                let (u, v): (f64, f64) = (rng.random(), rng.random());
                mean + std * (-2.0 * (1.0 - u).ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
            })
            .collect()
    };
    match init {
        Init::Const(c) => vec![c; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, shape: Shape, name: &str, init: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("variable map lock poisoned");
        if let Some(var) = data.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "variable {name} exists with shape {:?}, asked for {:?}",
                    var.dims(),
                    shape.dims()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let values = sample(init, &shape, &mut self.rng.lock().expect("rng lock poisoned"));
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, dev)?.to_dtype(dtype)?)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("variable {name} must be created with a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .expect("variable map lock poisoned")
            .contains_key(name)
    }
}
