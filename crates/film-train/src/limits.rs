//! Bounds on the values that size allocations or divide, checked where they enter: the
//! command line, and a run's `config.json` (which a user may edit by hand).

use std::path::{Path, PathBuf};

use film_vision::Stem;

use crate::presets::ModelConfig;
use crate::run_dir::RunConfig;

/// The largest side, in pixels, of a pixel stem's square input. CLEVR's images are
/// 480 x 320, so larger inputs only upsample, while the image cache and every batch grow
/// with the square of the side.
pub const MAX_IMAGE_SIZE: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LimitError {
    #[error("--image-size {value}: the side must be between 1 and {MAX_IMAGE_SIZE} pixels")]
    ImageSizeFlag { value: usize },
    #[error(
        "{}: field {field:?} is {value}, outside 1..={max} ({why})",
        path.display()
    )]
    ConfigRange {
        path: PathBuf,
        field: &'static str,
        value: usize,
        max: usize,
        why: &'static str,
    },
    #[error(
        "{}: field \"training.weight_average\" is {value}; a decay must lie in (0, 1), or the field be null",
        path.display()
    )]
    ConfigDecay { path: PathBuf, value: f64 },
    #[error("{}: field {field:?} is 0; it must be at least 1 ({why})", path.display())]
    ConfigZero {
        path: PathBuf,
        field: &'static str,
        why: &'static str,
    },
}

/// Checks the value given to `--image-size`.
pub fn check_image_size_flag(value: usize) -> Result<(), LimitError> {
    match (1..=MAX_IMAGE_SIZE).contains(&value) {
        true => Ok(()),
        false => Err(LimitError::ImageSizeFlag { value }),
    }
}

/// Checks the fields of a run's configuration, read from `path`, that size allocations or
/// divide.
pub fn check_run_config(config: &RunConfig, path: &Path) -> Result<(), LimitError> {
    check_model(&config.model, path)?;
    let training = &config.training;
    if let Some(value) = training.weight_average.filter(|d| !(*d > 0.0 && *d < 1.0)) {
        return Err(LimitError::ConfigDecay {
            path: path.to_path_buf(),
            value,
        });
    }
    let fields = [
        (
            "training.eval_every",
            training.eval_every,
            "the run evaluates every this many steps",
        ),
        ("training.batch_size", training.batch_size, "questions per batch"),
        (
            "training.questions_per_image",
            training.questions_per_image,
            "questions about one image kept together",
        ),
    ];
    match fields.into_iter().find(|&(_, value, _)| value == 0) {
        Some((field, _, why)) => Err(LimitError::ConfigZero {
            path: path.to_path_buf(),
            field,
            why,
        }),
        None => Ok(()),
    }
}

fn check_model(model: &ModelConfig, path: &Path) -> Result<(), LimitError> {
    // A features stem ignores the field.
    if !matches!(model.vision.stem, Stem::Pixels { .. }) || (1..=MAX_IMAGE_SIZE).contains(&model.image_size) {
        return Ok(());
    }
    Err(LimitError::ConfigRange {
        path: path.to_path_buf(),
        field: "model.image_size",
        value: model.image_size,
        max: MAX_IMAGE_SIZE,
        why: "the side of the input image in pixels",
    })
}
