//! Generates a dataset in the CLEVR v1.0 layout, with the options
//! `film-train generate` will expose, and prints its question statistics.
//!
//! cargo run --release -p clevr-synth --example generate -- --out DIR \
//!     [--train-images N] [--val-images M] [--questions-per-image K] \
//!     [--size WxH] [--seed S] [--cogent A|B] [--scenes FILE --split NAME]

use clap::Parser;
use clevr_synth::attributes::Cogent;
use clevr_synth::dataset::{generate, GenerateConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = GenerateConfig::default().train_images)]
    train_images: usize,
    #[arg(long, default_value_t = GenerateConfig::default().val_images)]
    val_images: usize,
    #[arg(long, default_value_t = GenerateConfig::default().questions_per_image)]
    questions_per_image: usize,
    /// Image size, WIDTHxHEIGHT.
    #[arg(long, default_value = "480x320")]
    size: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    cogent: Option<String>,
    /// Render and ask about an existing CLEVR scenes JSON instead of sampling.
    #[arg(long, requires = "split")]
    scenes: Option<PathBuf>,
    #[arg(long)]
    split: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (w, h) = args
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .ok_or_else(|| {
            format!(
                "--size {:?}: expected WIDTHxHEIGHT, e.g. 480x320",
                args.size
            )
        })?;
    let cogent = match args.cogent.as_deref() {
        None => None,
        Some("A") => Some(Cogent::A),
        Some("B") => Some(Cogent::B),
        Some(other) => return Err(format!("--cogent {other:?}: expected A or B").into()),
    };
    let config = GenerateConfig {
        out: args.out,
        train_images: args.train_images,
        val_images: args.val_images,
        questions_per_image: args.questions_per_image,
        width: w,
        height: h,
        seed: args.seed,
        cogent,
        scenes: args.scenes.zip(args.split),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} images ({per_sec}, eta {eta})",
    )?);
    let start = Instant::now();
    let summary = generate(&config, &bar)?;
    println!(
        "wrote {} in {:.1} s",
        config.out.display(),
        start.elapsed().as_secs_f64()
    );
    for (split, images, questions) in summary.splits {
        println!("  {split}: {images} images, {questions} questions");
    }
    Ok(())
}
