//! `film-train extract-features`: arguments and the summary printed at the end.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use clevr::features::FeatureDType;

use crate::extract::{extract_features, ExtractRequest};

#[derive(Args)]
pub(super) struct ExtractFeaturesArgs {
    /// A safetensors copy of a torchvision `resnet101` state dict (docs/training.md,
    /// "Extracting the features", gives the one line of Python that writes it).
    #[arg(long)]
    weights: PathBuf,
    /// A CLEVR-layout folder (images/<split>/CLEVR_<split>_<index>.png).
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    split: String,
    /// Where `<split>_features.npy` goes (default: DATA/features, where `paper-features`
    /// looks).
    #[arg(long)]
    out: Option<PathBuf>,
    /// f16 (half the disk, about three significant digits) or f32.
    #[arg(long, default_value = "f16")]
    dtype: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Start over: discard an unfinished extraction, or redo a finished one.
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub(super) fn run_extract_features(args: &ExtractFeaturesArgs) -> Result<()> {
    let dtype = match args.dtype.as_str() {
        "f16" => FeatureDType::F16,
        "f32" => FeatureDType::F32,
        other => bail!("--dtype {other:?}: expected f16 or f32"),
    };
    let request = ExtractRequest {
        weights: args.weights.clone(),
        data: args.data.clone(),
        split: args.split.clone(),
        out: args.out.clone().unwrap_or_else(|| args.data.join("features")),
        dtype,
        batch: args.batch,
        force: args.force,
        progress: !args.quiet,
    };
    let outcome = extract_features(&request, &super::device(&args.device)?)?;
    if outcome.already_complete {
        println!(
            "{} is complete ({} images); nothing to do (--force extracts it again)",
            outcome.path.display(),
            outcome.images
        );
        return Ok(());
    }
    if outcome.resumed_at > 0 {
        println!("resumed after {} images extracted earlier", outcome.resumed_at);
    }
    println!(
        "extracted {} images in {:.1} s ({:.2} images/s); wrote {} ({} images)",
        outcome.extracted,
        outcome.seconds,
        outcome.extracted as f64 / outcome.seconds.max(1e-9),
        outcome.path.display(),
        outcome.images
    );
    Ok(())
}
