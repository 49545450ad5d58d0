//! The run directory: configuration, vocabularies, checkpoints and metrics, every file
//! written atomically so that a run killed at any moment can be resumed.
//!
//! Layout: `config.json`, `tokenizer.json`, `answers.json`, `state.json` (names the last
//! complete checkpoint), `model-STEP.safetensors`, `optimizer-STEP.safetensors`,
//! `best.safetensors` (best validation accuracy so far), `metrics.jsonl` and
//! `training-curve.png` (redrawn from it at every evaluation).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::presets::{ModelConfig, TrainingConfig};

/// What a run was started with; a resumed run must agree with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub preset: String,
    pub model: ModelConfig,
    pub training: TrainingConfig,
    pub data: PathBuf,
    pub seed: u64,
    /// Stop after this many epochs, if given.
    pub epochs: Option<usize>,
    /// Stop after this many minutes of training, if given.
    pub minutes: Option<f64>,
}

/// Progress of a run, rewritten at every checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer steps taken.
    pub step: u64,
    /// The epoch in progress and how many of its batches are done.
    pub epoch: u64,
    pub batches_done_in_epoch: usize,
    /// Seconds spent training, summed over sessions.
    pub train_seconds: f64,
    pub best_val_accuracy: Option<f64>,
    pub best_step: Option<u64>,
    /// The run reached its epoch or time limit.
    pub finished: bool,
}

pub struct RunDir {
    path: PathBuf,
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so
/// the file is either the old one or the complete new one, never partial.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    clevr::atomic::write_atomic(path, bytes).with_context(|| format!("writing {} atomically", path.display()))
}

/// Why tensors were not saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error(
        "refusing to write {}: tensor {tensor} holds NaN or infinite values (the model \
         diverged); the files written before it are kept",
        path.display()
    )]
    NonFinite { path: PathBuf, tensor: String },
}

/// An error naming the first tensor (by name) that holds a NaN or an infinity.
fn check_finite(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        // x * 0 is 0 for every finite x and NaN for NaN and ±inf, so the sum is finite
        // exactly when every value is, and cannot overflow; it runs on the tensor's device.
        let zeros = (&tensors[name] * 0.0)?.to_dtype(candle_core::DType::F32)?;
        let sum = zeros.sum_all()?.to_scalar::<f32>()?;
        if !sum.is_finite() {
            bail!(SaveError::NonFinite {
                path: path.to_path_buf(),
                tensor: name.clone(),
            });
        }
    }
    Ok(())
}

/// Saves named tensors as safetensors, atomically; refuses tensors that are not finite, so
/// that a diverged model never replaces a good checkpoint.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    check_finite(tensors, path)?;
    let tmp = clevr::atomic::temp_path(path);
    candle_core::safetensors::save(tensors, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    clevr::atomic::replace(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The model's variables by checkpoint name.
pub fn model_tensors(varmap: &VarMap) -> HashMap<String, Tensor> {
    let data = varmap.data().lock().expect("variable map lock poisoned");
    data.iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect()
}

/// Loads `path` into the model's variables after checking that names and shapes match
/// exactly, listing every difference.
pub fn load_model(varmap: &VarMap, path: &Path) -> Result<()> {
    let saved = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?;
    let data = varmap.data().lock().expect("variable map lock poisoned");
    let mut problems = Vec::new();
    for (name, var) in data.iter() {
        match saved.get(name) {
            None => problems.push(format!(
                "missing tensor {name} (model expects shape {:?})",
                var.dims()
            )),
            Some(t) if t.dims() != var.dims() => problems.push(format!(
                "{name}: checkpoint has shape {:?}, model expects {:?}",
                t.dims(),
                var.dims()
            )),
            Some(_) => {}
        }
    }
    for name in saved.keys().filter(|n| !data.contains_key(*n)) {
        problems.push(format!("unexpected tensor {name} (not in this model)"));
    }
    if !problems.is_empty() {
        problems.sort();
        bail!(
            "checkpoint {} does not fit the model:\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    for (name, var) in data.iter() {
        let t = saved[name].to_device(var.device())?.to_dtype(var.dtype())?;
        var.set(&t).with_context(|| format!("setting {name}"))?;
    }
    Ok(())
}

impl RunDir {
    /// The run directory at `path`, created if absent.
    pub fn create(path: &Path) -> Result<Self> {
        fs::create_dir_all(path).with_context(|| format!("creating run directory {}", path.display()))?;
        Ok(RunDir {
            path: path.to_path_buf(),
        })
    }

    /// An existing run directory; fails with what is missing otherwise.
    pub fn open(path: &Path) -> Result<Self> {
        let dir = RunDir {
            path: path.to_path_buf(),
        };
        if !dir.config_path().is_file() {
            bail!(
                "{} is not a run directory: {} is missing",
                path.display(),
                dir.config_path().display()
            );
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }

    fn state_path(&self) -> PathBuf {
        self.path.join("state.json")
    }

    pub fn best_path(&self) -> PathBuf {
        self.path.join("best.safetensors")
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }

    fn model_path(&self, step: u64) -> PathBuf {
        self.path.join(format!("model-{step:08}.safetensors"))
    }

    fn optimizer_path(&self, step: u64) -> PathBuf {
        self.path.join(format!("optimizer-{step:08}.safetensors"))
    }

    pub fn write_config(&self, config: &RunConfig) -> Result<()> {
        write_atomic(
            &self.config_path(),
            serde_json::to_string_pretty(config)?.as_bytes(),
        )
    }

    /// The run's configuration, with the fields that size allocations or divide checked:
    /// the file may have been edited by hand.
    pub fn read_config(&self) -> Result<RunConfig> {
        let path = self.config_path();
        let config = read_json(&path, "a run's config.json")?;
        crate::limits::check_run_config(&config, &path)?;
        Ok(config)
    }

    /// The state of the last complete checkpoint, if any.
    pub fn read_state(&self) -> Result<Option<RunState>> {
        let path = self.state_path();
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path, "a run's state.json").map(Some)
    }

    /// Writes model and optimizer for `state.step`, then `state.json` naming them, then
    /// removes older checkpoints: a crash at any point leaves a loadable run.
    pub fn save_checkpoint(
        &self,
        state: &RunState,
        model: &HashMap<String, Tensor>,
        optimizer: &HashMap<String, Tensor>,
    ) -> Result<()> {
        save_tensors(model, &self.model_path(state.step))?;
        save_tensors(optimizer, &self.optimizer_path(state.step))?;
        write_atomic(
            &self.state_path(),
            serde_json::to_string_pretty(state)?.as_bytes(),
        )?;
        let keep = [self.model_path(state.step), self.optimizer_path(state.step)];
        for entry in fs::read_dir(&self.path)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let is_checkpoint = (name.starts_with("model-") || name.starts_with("optimizer-"))
                && name.ends_with(".safetensors");
            if is_checkpoint && !keep.contains(&path) {
                fs::remove_file(&path)
                    .with_context(|| format!("removing old checkpoint {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Paths of the model and optimizer files of the checkpoint `state` names.
    pub fn checkpoint_paths(&self, state: &RunState) -> (PathBuf, PathBuf) {
        (self.model_path(state.step), self.optimizer_path(state.step))
    }

    /// Appends one JSON line to `metrics.jsonl`, cutting away a last line torn by a crash.
    pub fn append_metrics(&self, record: &serde_json::Value) -> Result<()> {
        Ok(crate::metrics_file::append(&self.metrics_path(), record)?)
    }
}

/// Reads a run file through clevr's JSON reader, so that an error names the file, line,
/// column and field (`config.json:12:20: training.eval_every: invalid type: …`).
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<T> {
    Ok(clevr::json::read_json(path, what)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use candle_nn::VarBuilder;

    #[test]
    fn checkpoint_shape_mismatch_names_the_tensor() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let saved = VarMap::new();
        let vb = VarBuilder::from_varmap(&saved, DType::F32, &Device::Cpu);
        vb.get_with_hints((2, 3), "layer.weight", candle_nn::init::ZERO)?;
        vb.get_with_hints(4, "extra", candle_nn::init::ZERO)?;
        let path = dir.path().join("m.safetensors");
        save_tensors(&model_tensors(&saved), &path)?;

        let other = VarMap::new();
        let vb = VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu);
        vb.get_with_hints((2, 5), "layer.weight", candle_nn::init::ZERO)?;
        vb.get_with_hints(1, "missing", candle_nn::init::ZERO)?;
        let err = load_model(&other, &path).unwrap_err().to_string();
        assert!(
            err.contains("layer.weight: checkpoint has shape [2, 3], model expects [2, 5]"),
            "{err}"
        );
        assert!(err.contains("missing tensor missing"), "{err}");
        assert!(err.contains("unexpected tensor extra"), "{err}");
        Ok(())
    }

    #[test]
    fn a_hand_edited_config_out_of_range_names_the_file_and_field() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let run = RunDir::create(dir.path())?;
        let preset = crate::presets::by_name("tiny")?;
        let mut config = RunConfig {
            preset: preset.name,
            model: preset.model,
            training: preset.training,
            data: PathBuf::from("data"),
            seed: 0,
            epochs: Some(1),
            minutes: None,
        };
        run.write_config(&config)?;
        assert_eq!(run.read_config()?, config);
        config.training.eval_every = 0;
        run.write_config(&config)?;
        let err = run.read_config().unwrap_err().to_string();
        assert!(
            err.contains("config.json: field \"training.eval_every\" is 0; it must be at least 1"),
            "{err}"
        );
        config.training.eval_every = 10;
        config.model.image_size = 0;
        run.write_config(&config)?;
        let err = run.read_config().unwrap_err().to_string();
        assert!(
            err.contains("config.json: field \"model.image_size\" is 0, outside 1..=1024"),
            "{err}"
        );
        config.model.image_size = 64;
        config.training.weight_average = Some(1.5);
        run.write_config(&config)?;
        let err = run.read_config().unwrap_err().to_string();
        assert!(
            err.contains("config.json: field \"training.weight_average\" is 1.5"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn weights_that_are_not_finite_are_never_checkpointed() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let run = RunDir::create(dir.path())?;
        let good = HashMap::from([("w".to_string(), Tensor::new(&[1f32, -2.0], &Device::Cpu)?)]);
        let state = |step| RunState {
            step,
            ..Default::default()
        };
        run.save_checkpoint(&state(10), &good, &good)?;
        for bad in [f32::NAN, f32::INFINITY] {
            let mut model = good.clone();
            model.insert(
                "blocks.1.weight".into(),
                Tensor::new(&[0.5f32, bad], &Device::Cpu)?,
            );
            let err = run
                .save_checkpoint(&state(20), &model, &good)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(
                    "model-00000020.safetensors: tensor blocks.1.weight holds NaN or infinite values"
                ),
                "{err}"
            );
            let err = save_tensors(&model, &run.best_path()).unwrap_err().to_string();
            assert!(err.contains("best.safetensors: tensor blocks.1.weight"), "{err}");
        }
        assert_eq!(
            run.read_state()?.map(|s| s.step),
            Some(10),
            "state.json still names step 10"
        );
        assert!(!dir.path().join("model-00000020.safetensors").exists());
        assert!(!run.best_path().exists());
        Ok(())
    }

    #[test]
    fn checkpoints_replace_older_ones() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let run = RunDir::create(dir.path())?;
        let t = HashMap::from([("w".to_string(), Tensor::zeros(2, DType::F32, &Device::Cpu)?)]);
        for step in [10, 20] {
            run.save_checkpoint(
                &RunState {
                    step,
                    ..Default::default()
                },
                &t,
                &t,
            )?;
        }
        let state = run.read_state()?.expect("state written");
        assert_eq!(state.step, 20);
        let (model, optimizer) = run.checkpoint_paths(&state);
        assert!(model.exists() && optimizer.exists());
        assert!(!dir.path().join("model-00000010.safetensors").exists());
        Ok(())
    }
}
