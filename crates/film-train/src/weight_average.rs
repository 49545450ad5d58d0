//! An exponential moving average of the model's variables (`--weight-average DECAY`),
//! evaluated and kept as the best model in place of the weights as trained.
//!
//! Late in a run at a high learning rate the weights jump around the region they are
//! settling in; their average sits nearer its middle. The average never feeds back into
//! training, so a run with it takes exactly the steps of the same run without it.

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

/// Prefix of the averages' names in the optimizer checkpoint.
const PREFIX: &str = "average.";

/// The averaged copy of every variable, BatchNorm's running statistics included (they
/// must describe the averaged weights' activations, not the last step's).
pub struct WeightAverage {
    decay: f64,
    vars: Vec<(String, Var)>,
    averages: HashMap<String, Tensor>,
    updates: u64,
}

impl WeightAverage {
    /// Starts the average at the variables' current values.
    pub fn new(varmap: &VarMap, decay: f64) -> Result<Self> {
        let data = varmap.data().lock().expect("variable map lock poisoned");
        let mut vars: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        // Detached: a copy of a variable is a node of the autograd graph, and every average
        // computed from it would keep all the earlier ones alive, a full copy of the
        // weights per step.
        let averages = vars
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().detach().copy()?)))
            .collect::<Result<_>>()?;
        Ok(WeightAverage {
            decay,
            vars,
            averages,
            updates: 0,
        })
    }

    /// The decay of update `t` (counted from 1): short at first, so that the average is
    /// not dominated by the random initialisation for thousands of steps, and `decay` once
    /// (1 + t) / (10 + t) exceeds it.
    fn decay_at(&self, t: u64) -> f64 {
        self.decay.min((1.0 + t as f64) / (10.0 + t as f64))
    }

    /// Folds the variables' current values into the average; called after every
    /// optimizer step.
    pub fn update(&mut self) -> Result<()> {
        self.updates += 1;
        let d = self.decay_at(self.updates);
        for (name, var) in &self.vars {
            let average = &self.averages[name];
            let next = ((average * d)? + (var.as_tensor().detach() * (1.0 - d))?)?;
            self.averages.insert(name.clone(), next);
        }
        Ok(())
    }

    /// Runs `f` with the averaged values in the variables, then puts the trained values
    /// back, also when `f` fails.
    pub fn with_averaged<R>(&self, f: impl FnOnce() -> anyhow::Result<R>) -> anyhow::Result<R> {
        let trained = self
            .vars
            .iter()
            .map(|(_, var)| var.as_tensor().detach().copy())
            .collect::<Result<Vec<_>>>()?;
        for (name, var) in &self.vars {
            var.set(&self.averages[name])?;
        }
        let result = f();
        for ((_, var), value) in self.vars.iter().zip(&trained) {
            var.set(value)?;
        }
        result
    }

    /// The averages and the update count, for the optimizer checkpoint.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut state: HashMap<String, Tensor> = self
            .averages
            .iter()
            .map(|(name, t)| (format!("{PREFIX}{name}"), t.clone()))
            .collect();
        let device = self
            .vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        state.insert(
            format!("{PREFIX}updates"),
            Tensor::new(&[self.updates as f64], &device)?,
        );
        Ok(state)
    }

    /// Takes this module's entries out of a loaded optimizer checkpoint and restores them,
    /// checking every average against its variable; the rest is left for Adam.
    pub fn load_state(&mut self, state: &mut HashMap<String, Tensor>) -> Result<()> {
        let updates = state.remove(&format!("{PREFIX}updates")).ok_or_else(|| {
            candle_core::Error::msg(
                "the checkpoint has no weight average: the run was started without --weight-average",
            )
        })?;
        self.updates = updates.to_vec1::<f64>()?.first().copied().unwrap_or(0.0) as u64;
        for (name, var) in &self.vars {
            let key = format!("{PREFIX}{name}");
            let saved = state
                .remove(&key)
                .ok_or_else(|| candle_core::Error::msg(format!("the checkpoint has no {key}")))?;
            if saved.dims() != var.dims() {
                candle_core::bail!("{key}: shape {:?}, variable has {:?}", saved.dims(), var.dims());
            }
            let saved = saved.to_device(var.device())?.to_dtype(var.dtype())?;
            self.averages.insert(name.clone(), saved);
        }
        if let Some(extra) = state.keys().find(|k| k.starts_with(PREFIX)) {
            candle_core::bail!("the checkpoint's {extra} belongs to no variable of this model");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn one_var(value: f32) -> Result<(VarMap, Var)> {
        let varmap = VarMap::new();
        let var = Var::from_tensor(&Tensor::new(&[value], &Device::Cpu)?)?;
        varmap.data().lock().unwrap().insert("w".into(), var.clone());
        Ok((varmap, var))
    }

    #[test]
    fn the_average_follows_the_weights_and_evaluation_sees_it() -> anyhow::Result<()> {
        let (varmap, var) = one_var(0.0)?;
        let mut average = WeightAverage::new(&varmap, 0.5)?;
        var.set(&Tensor::new(&[4f32], &Device::Cpu)?)?;
        // Update 1 decays by min(0.5, 2/11): 0 * 2/11 + 4 * 9/11.
        average.update()?;
        // Each average stands alone: were it a node of the autograd graph, it would hold
        // on to every average before it.
        assert!(average.averages.values().all(|t| !t.track_op()));
        let seen = average.with_averaged(|| Ok(var.as_tensor().to_vec1::<f32>()?[0]))?;
        assert!((seen - 4.0 * 9.0 / 11.0).abs() < 1e-6, "{seen}");
        // The trained value is back afterwards.
        assert_eq!(var.as_tensor().to_vec1::<f32>()?, [4.0]);
        Ok(())
    }

    #[test]
    fn a_failing_evaluation_still_restores_the_trained_weights() -> anyhow::Result<()> {
        let (varmap, var) = one_var(1.0)?;
        let mut average = WeightAverage::new(&varmap, 0.9)?;
        var.set(&Tensor::new(&[3f32], &Device::Cpu)?)?;
        average.update()?;
        let result: anyhow::Result<()> = average.with_averaged(|| anyhow::bail!("disk full"));
        assert!(result.is_err());
        assert_eq!(var.as_tensor().to_vec1::<f32>()?, [3.0]);
        Ok(())
    }

    #[test]
    fn state_round_trips_and_a_missing_average_is_named() -> anyhow::Result<()> {
        let (varmap, var) = one_var(2.0)?;
        let mut average = WeightAverage::new(&varmap, 0.99)?;
        var.set(&Tensor::new(&[5f32], &Device::Cpu)?)?;
        average.update()?;
        average.update()?;
        let mut saved = average.state()?;
        saved.insert("m.w".into(), Tensor::zeros(1, DType::F32, &Device::Cpu)?);
        let mut restored = WeightAverage::new(&varmap, 0.99)?;
        restored.load_state(&mut saved)?;
        // Adam's entries are left where they were.
        assert!(saved.contains_key("m.w") && saved.len() == 1);
        assert_eq!(restored.updates, 2);
        assert_eq!(
            restored.averages["w"].to_vec1::<f32>()?,
            average.averages["w"].to_vec1::<f32>()?
        );

        let mut without = average.state()?;
        without.remove("average.w");
        let err = WeightAverage::new(&varmap, 0.99)?
            .load_state(&mut without)
            .unwrap_err();
        assert!(err.to_string().contains("average.w"), "{err}");
        Ok(())
    }
}
