//! `film-train generate`: the embedded renderer and question generator, with a progress bar.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use clevr_synth::attributes::Cogent;
use clevr_synth::dataset::{generate, GenerateConfig};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub(super) struct GenerateArgs {
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
    /// CoGenT condition A or B.
    #[arg(long)]
    cogent: Option<String>,
    /// Render and ask about an existing CLEVR scenes JSON instead of sampling scenes.
    #[arg(long, requires = "split")]
    scenes: Option<PathBuf>,
    /// The split name to write `--scenes` as.
    #[arg(long)]
    split: Option<String>,
    /// Ask questions from the templates in this folder (the official CLEVR generator's
    /// format, with its metadata.json and synonyms.json here or in the parent folder)
    /// instead of the built-in ones.
    #[arg(long)]
    templates: Option<PathBuf>,
}

pub(super) fn run_generate(args: &GenerateArgs) -> Result<()> {
    let (width, height) = args
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .with_context(|| format!("--size {:?}: expected WIDTHxHEIGHT, e.g. 480x320", args.size))?;
    let cogent = match args.cogent.as_deref() {
        None => None,
        Some("A") => Some(Cogent::A),
        Some("B") => Some(Cogent::B),
        Some(other) => bail!("--cogent {other:?}: expected A or B"),
    };
    let config = GenerateConfig {
        out: args.out.clone(),
        train_images: args.train_images,
        val_images: args.val_images,
        questions_per_image: args.questions_per_image,
        width,
        height,
        seed: args.seed,
        cogent,
        scenes: args.scenes.clone().zip(args.split.clone()),
        templates: args.templates.clone(),
    };
    generate_with_progress(&config)
}

pub(super) fn generate_with_progress(config: &GenerateConfig) -> Result<()> {
    let progress = ProgressBar::new(0);
    progress.set_style(
        ProgressStyle::with_template("rendering {pos}/{len} images [{bar:30}] {per_sec} ETA {eta}")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    let summary =
        generate(config, &progress).with_context(|| format!("generating {}", config.out.display()))?;
    progress.finish_and_clear();
    for (split, images, questions) in &summary.splits {
        println!("{split}: {images} images, {questions} questions");
    }
    println!("wrote {}", config.out.display());
    Ok(())
}
