//! The job `cargo run --release -p film-train` does with no subcommand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use candle_core::Device;
use clevr::QuestionType;
use clevr_synth::dataset::GenerateConfig;

use super::generate::generate_with_progress;
use crate::evaluate::{evaluate, type_key};
use crate::presets;
use crate::train::{load_eval_split, load_run, train, TrainRequest};

/// Where the default run keeps its data and its run directory (both git-ignored).
const DEFAULT_DATA: &str = "data/mini-clevr";
const DEFAULT_RUN: &str = "runs/default";

/// The job `cargo run --release -p film-train` does.
pub(super) fn default_run() -> Result<ExitCode> {
    let data = PathBuf::from(DEFAULT_DATA);
    let complete = data.join("questions").join("CLEVR_val_questions.json").is_file();
    if complete {
        println!("using the embedded dataset in {}", data.display());
    } else {
        println!(
            "generating the embedded dataset into {} (once; see docs/embedded-dataset.md)",
            data.display()
        );
        generate_with_progress(&GenerateConfig {
            out: data.clone(),
            ..GenerateConfig::default()
        })?;
    }
    let preset = presets::by_name("default")?;
    let minutes = preset.training.minutes;
    println!(
        "training the `default` preset for up to {minutes} minutes into {DEFAULT_RUN} (rerun to resume)"
    );
    let request = TrainRequest {
        data: data.clone(),
        preset,
        out: PathBuf::from(DEFAULT_RUN),
        epochs: None,
        minutes: None,
        seed: 0,
        val_limit: None,
        cache_dir: None,
        features_dir: None,
        quiet: false,
    };
    let dev = Device::Cpu;
    train(&request, &dev)?;
    let (config, vocab, model) = load_run(Path::new(DEFAULT_RUN), &dev)?;
    let split = load_eval_split(&data, "val", None, &vocab, &config.model, None)?;
    let eval = evaluate(&model, &split, 64, None, &dev)?;
    println!();
    println!("{:<20} {:>9}", "question type", "accuracy");
    for t in QuestionType::ALL {
        if let Some(a) = eval.by_type.get(&t.index()).and_then(|t| t.accuracy()) {
            println!("{:<20} {:>8.1}%  ({})", t.name(), 100.0 * a, type_key(t));
        }
    }
    println!(
        "{:<20} {:>8.1}%  ({} validation questions)",
        "overall",
        100.0 * eval.overall.accuracy().unwrap_or(0.0),
        eval.overall.total
    );
    println!("\nrun directory: {DEFAULT_RUN} (best model: {DEFAULT_RUN}/best.safetensors, metrics: {DEFAULT_RUN}/metrics.jsonl)");
    println!("try:\n  cargo run --release -p film-train -- ask --run {DEFAULT_RUN} --image {}/images/val/CLEVR_val_000000.png \"How many cubes are there?\"", data.display());
    println!("  cargo run --release -p film-train -- eval --run {DEFAULT_RUN} --split val");
    println!("  cargo run --release -p film-train -- analyze --run {DEFAULT_RUN} --out {DEFAULT_RUN}/analysis   (report.md with the paper's analysis)");
    Ok(ExitCode::SUCCESS)
}
