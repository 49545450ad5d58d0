//! The command line: one subcommand per job, and the default run when none is given.
//! The argument types and the work of the larger subcommands live in the submodules.

mod default_run;
mod extract_features;
mod generate;
mod print;
mod train_args;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::{Parser, Subcommand};

use crate::data::split_files;
use crate::evaluate::evaluate;
use crate::presets;
use crate::profile::{profile, ProfileRequest};
use crate::train::{load_eval_split, load_run, train};

use default_run::default_run;
use extract_features::{run_extract_features, ExtractFeaturesArgs};
use generate::{run_generate, GenerateArgs};
use print::{ask, print_evaluation};
use train_args::{override_pixel_stem, train_request, TrainArgs};

#[derive(Parser)]
#[command(
    name = "film-train",
    version,
    about = "Train, evaluate and question FiLM visual-reasoning models."
)]
#[command(long_about = "Train, evaluate and question FiLM visual-reasoning models.\n\n\
    With no subcommand: generate the embedded CLEVR-format dataset into data/mini-clevr (unless a \
    complete one is there), train the `default` preset into runs/default within its time budget \
    (resuming it if unfinished), evaluate it on the validation split and print what to try next.")]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Threads for the CPU kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// List the presets, or print one as JSON.
    Presets { name: Option<String> },
    /// Generate a CLEVR-format dataset with the embedded renderer and question generator.
    Generate(GenerateArgs),
    /// Run every question's program on its scene and compare with its answer.
    Verify {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "val")]
        split: String,
    },
    /// Train (or resume) a model.
    Train(Box<TrainArgs>),
    /// The paper's image features: ResNet-101 up to layer3 (1024 x 14 x 14 per image) for
    /// every image of a split, as the `<split>_features.npy` that `paper-features` reads;
    /// resumes where a killed extraction stopped.
    ExtractFeatures(ExtractFeaturesArgs),
    /// Accuracy of a trained run on a split: overall, per question type and family.
    Eval {
        #[arg(long)]
        run: PathBuf,
        /// The dataset folder (default: the one the run was trained on).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value = "val")]
        split: String,
        /// Another questions file about the split's images to score instead of the split's
        /// own (CLEVR's format; the official generator's raw output is read as it is).
        #[arg(long)]
        questions: Option<PathBuf>,
        /// For a features preset: the folder of `<split>_features.npy` (default: DATA/features).
        #[arg(long)]
        features: Option<PathBuf>,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Time training steps on synthetic inputs and show where the time goes.
    Profile {
        #[arg(long, default_value = "mini")]
        preset: String,
        #[arg(long)]
        batch: Option<usize>,
        /// Questions about each image: the stem runs once per image (the preset's by
        /// default: 8 for `default`, 1 for the paper's presets).
        #[arg(long, value_name = "K")]
        questions_per_image: Option<usize>,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// On CUDA, run f32 matrix products and convolutions on TF32 tensor cores (see
        /// docs/gpu.md).
        #[arg(long)]
        tf32: bool,
        /// Side of the square input image (a pixel-stem preset only).
        #[arg(long)]
        image_size: Option<usize>,
        /// Stride-2 convolutions of the pixel stem (a pixel-stem preset only).
        #[arg(long)]
        downsamplings: Option<usize>,
    },
    /// Ask a trained run a question about an image.
    Ask {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        image: PathBuf,
        question: String,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Also write where the model looks (the positions its pooled features come from)
        /// over the image, as a PNG.
        #[arg(long, value_name = "OUT.png")]
        explain: Option<PathBuf>,
    },
    /// Serve a page and a JSON API to ask a trained run about images, see where it looks
    /// and the γ and β each question gives its blocks (docs/training.md, "Serving").
    Serve(crate::serve::ServeArgs),
    /// The paper's analysis of a trained run: γ/β statistics, ablations, where the model
    /// looks, parameter embeddings; writes OUT/report.md and its pictures.
    Analyze(crate::analyze::AnalyzeArgs),
    /// Several runs' validation accuracy against questions seen and against minutes, as
    /// one picture and a Markdown table (the ablation plots of docs/results.md).
    Compare {
        /// Runs as LABEL=RUN_DIR (or RUN_DIR, labelled by its folder name).
        #[arg(required = true)]
        runs: Vec<crate::compare::LabelledRun>,
        /// More curves, LABEL=RUN_DIR each: the weights as trained of a run made with
        /// --weight-average (whose main curve is the average's), drawn after the runs.
        #[arg(long = "trained-weights", value_name = "LABEL=RUN_DIR")]
        trained_weights: Vec<crate::compare::LabelledRun>,
        /// The picture to write.
        #[arg(long, value_name = "OUT.png")]
        out: PathBuf,
        /// Questions seen at which the table reads each run, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [64_000u64, 128_000, 256_000, 512_000, 1_024_000])]
        at: Vec<u64>,
    },
}

/// The device named on the command line.
fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if candle_core::utils::cuda_is_available() => Ok(crate::gpu::cuda_device(0)?),
        "cuda" => bail!("--device cuda: this film-train was built without CUDA support; rebuild with `--features cuda` (see docs/gpu.md)"),
        other => bail!("unknown device {other:?}: expected cpu or cuda"),
    }
}

/// The device for `train` and `profile`, with TF32 products switched on when asked for.
fn training_device(name: &str, tf32: bool) -> Result<Device> {
    let device = device(name)?;
    if tf32 {
        if !device.is_cuda() {
            bail!("--tf32 is for --device cuda: the CPU has no TF32 arithmetic");
        }
        crate::gpu::allow_tf32();
    }
    Ok(device)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(threads) = cli.threads {
        // candle and film-layer size their thread pools from this variable on first use.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    match cli.command {
        None => default_run(),
        Some(Command::Presets { name }) => {
            match name {
                Some(name) => println!("{}", serde_json::to_string_pretty(&presets::by_name(&name)?)?),
                None => {
                    for p in presets::all() {
                        println!("{:<16} {}", p.name, p.description);
                    }
                    println!("\n`film-train presets NAME` prints one as JSON.");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Generate(args)) => {
            run_generate(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::ExtractFeatures(args)) => {
            run_extract_features(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Verify { data, split }) => {
            let report = clevr::verify::verify(&split_files(&data, &split)?)?;
            print!("{report}");
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::Train(args)) => {
            let request = train_request(&args)?;
            let outcome = train(&request, &training_device(&args.device, args.tf32)?)?;
            println!(
                "trained {} steps; best validation accuracy {}; run directory {}",
                outcome.state.step,
                outcome
                    .state
                    .best_val_accuracy
                    .map_or("n/a".into(), |a| format!("{:.1}%", 100.0 * a)),
                outcome.run.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Eval {
            run,
            data,
            split,
            questions,
            features,
            json,
            device: dev,
        }) => {
            let dev = device(&dev)?;
            let (config, vocab, model) = load_run(&run, &dev)?;
            let data = data.unwrap_or(config.data.clone());
            let split_data = load_eval_split(
                &data,
                &split,
                questions.as_deref(),
                &vocab,
                &config.model,
                features.as_deref(),
            )?;
            let set = &split_data.questions;
            let unknown = (0..set.len())
                .filter(|&i| set.question_tokens(i).contains(&clevr::vocab::UNK_ID))
                .count();
            if unknown > 0 {
                eprintln!(
                    "{unknown} of {} questions have words outside the run's vocabulary (read as <UNK>)",
                    set.len()
                );
            }
            let eval = evaluate(&model, &split_data, 64, None, &dev)?;
            if json {
                println!("{}", eval.summary_json());
            } else {
                print_evaluation(&eval, &vocab, &split);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Profile {
            preset,
            batch,
            questions_per_image,
            steps,
            warmup,
            json,
            device: dev,
            tf32,
            image_size,
            downsamplings,
        }) => {
            let mut preset = presets::by_name(&preset)?;
            override_pixel_stem(&mut preset.model, image_size, downsamplings, &preset.name)?;
            let request = ProfileRequest {
                model: preset.model,
                batch: batch.unwrap_or(preset.training.batch_size),
                questions_per_image: questions_per_image.unwrap_or(preset.training.questions_per_image),
                learning_rate: preset.training.learning_rate,
                weight_decay: preset.training.weight_decay,
                steps: steps.max(1),
                warmup,
            };
            let result = profile(&request, &training_device(&dev, tf32)?)?;
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                print!("{result}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Ask {
            run,
            image,
            question,
            device: dev,
            explain,
        }) => {
            let dev = device(&dev)?;
            ask(&run, &image, &question, explain.as_deref(), &dev)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Compare {
            runs,
            trained_weights,
            out,
            at,
        }) => {
            use crate::compare::{read_curve, Score};
            let recorded = runs.iter().map(|r| read_curve(r, Score::Recorded));
            let trained = trained_weights
                .iter()
                .map(|r| read_curve(r, Score::TrainedWeights));
            let curves = recorded.chain(trained).collect::<Result<Vec<_>>>()?;
            crate::compare::draw(&curves, &out)?;
            print!("{}", crate::compare::table(&curves, &at));
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Serve(args)) => {
            crate::serve::serve(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Analyze(args)) => {
            let report = crate::analyze::analyze(&args, &device(&args.device)?)?;
            println!("wrote {}", report.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_is_refused_on_the_cpu() {
        let err = training_device("cpu", true).unwrap_err();
        assert!(err.to_string().contains("--tf32 is for --device cuda"), "{err}");
        assert!(training_device("cpu", false).unwrap().is_cpu());
    }
}
