//! Checking a weights file against the network before building it, so that a wrong file is
//! refused with everything that is wrong with it, not with the first tensor that fails.

use crate::config::ResNetConfig;
use candle_core::safetensors::MmapedSafetensors;
use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The most names of each kind an error message lists before it counts the rest.
const LISTED: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{}: cannot read the weights file: {problem}", path.display())]
    Unreadable { path: PathBuf, problem: String },
    #[error("{}: not the weights of {network}:{}", path.display(), describe(missing, mismatched))]
    Mismatch {
        path: PathBuf,
        network: String,
        /// Names the network reads that the file lacks.
        missing: Vec<String>,
        /// `name: what the file holds, what the network needs` for each tensor present with
        /// the wrong shape or a non-float type.
        mismatched: Vec<String>,
    },
}

fn describe(missing: &[String], mismatched: &[String]) -> String {
    let mut text = String::new();
    let mut list = |what: &str, items: &[String]| {
        if items.is_empty() {
            return;
        }
        let _ = write!(text, "\n  {} {what}:", items.len());
        for item in items.iter().take(LISTED) {
            let _ = write!(text, "\n    {item}");
        }
        if items.len() > LISTED {
            let _ = write!(text, "\n    … and {} more", items.len() - LISTED);
        }
    };
    list("tensors missing", missing);
    list("tensors of the wrong shape or type", mismatched);
    text.push_str(
        "\n  The file must be a torchvision ResNet state dict saved with safetensors, under its \
         own names (conv1.weight, layer1.0.bn1.running_mean, …), without a prefix such as \
         'module.' (see docs/training.md, \"Extracting the features\").",
    );
    text
}

/// Whether `path` holds every tensor `config`'s network reads, in the right shape and a
/// float type. Extra tensors (later stages, the classifier) are allowed.
pub fn check_weights(path: &Path, config: &ResNetConfig, network: &str) -> Result<(), WeightsError> {
    // SAFETY: the file is mapped read-only; candle's own safetensors loading does the same.
    let file = unsafe { MmapedSafetensors::new(path) }.map_err(|e| WeightsError::Unreadable {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    let present: HashMap<String, (Vec<usize>, String, bool)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = view.dtype();
            let float = matches!(
                dtype,
                safetensors::Dtype::F16
                    | safetensors::Dtype::BF16
                    | safetensors::Dtype::F32
                    | safetensors::Dtype::F64
            );
            (name, (view.shape().to_vec(), format!("{dtype:?}"), float))
        })
        .collect();
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    for expected in config.expected_tensors() {
        match present.get(&expected.name) {
            None => missing.push(expected.name),
            Some((shape, dtype, float)) if *shape != expected.shape || !float => mismatched.push(format!(
                "{}: the file holds {dtype} {shape:?}, the network needs a float tensor of {:?}",
                expected.name, expected.shape
            )),
            Some(_) => {}
        }
    }
    if missing.is_empty() && mismatched.is_empty() {
        Ok(())
    } else {
        Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            network: network.to_string(),
            missing,
            mismatched,
        })
    }
}
