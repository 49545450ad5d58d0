//! Loading a CLEVR-layout split for training or evaluation through the `clevr` crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clevr::batch::{BatchConfig, Batcher};
use clevr::cache::{CacheConfig, ImageCache};
use clevr::dataset::{LoadOptions, QuestionSet};
use clevr::image::{Filter, ImageConfig, Normalization};
use clevr::layout::{Release, SplitFiles};
use clevr::vocab::Vocabulary;

/// A split ready to batch: its questions encoded with the run's vocabulary and its images
/// in the preprocessing cache.
pub struct Split {
    pub name: String,
    pub questions: Arc<QuestionSet>,
    pub images: Arc<ImageCache>,
    pub image_config: ImageConfig,
}

/// The image preprocessing of a model whose input is `size` x `size` pixels.
pub fn image_config(size: usize) -> ImageConfig {
    ImageConfig {
        width: size,
        height: size,
        filter: Filter::Bicubic,
        normalization: Normalization::IMAGENET,
    }
}

/// The files of `split` under the CLEVR-layout folder `root`.
pub fn split_files(root: &Path, split: &str) -> Result<SplitFiles> {
    SplitFiles::clevr(root, Release::V1, split)
        .with_context(|| format!("locating split {split:?} under {}", root.display()))
}

/// Where preprocessed images of the dataset `root` are cached unless told otherwise.
pub fn default_cache_dir(root: &Path) -> PathBuf {
    root.join(".film-cache")
}

/// Loads `split` of `root`, reporting skipped questions on stderr; resized images are
/// cached under `cache_root`.
pub fn load_split(
    root: &Path,
    split: &str,
    vocab: &Vocabulary,
    image: ImageConfig,
    cache_root: &Path,
) -> Result<Split> {
    let files = split_files(root, split)?;
    let (questions, report) = QuestionSet::load(&files, vocab, LoadOptions::default())
        .with_context(|| format!("loading questions of split {split:?}"))?;
    if !report.skipped.is_empty() {
        eprintln!("{split}: {report}");
    }
    let cache_dir = cache_root.join(format!("{split}-{}x{}", image.width, image.height));
    let (images, _status) =
        ImageCache::open_or_build(&files, &questions.images, &image, &CacheConfig::new(cache_dir))
            .with_context(|| format!("preparing the image cache of split {split:?}"))?;
    Ok(Split {
        name: split.to_string(),
        questions: Arc::new(questions),
        images: Arc::new(images),
        image_config: image,
    })
}

impl Split {
    /// Batches of this split: shuffled with `seed` for training, in file order otherwise.
    pub fn batcher(&self, batch_size: usize, seed: u64, shuffle: bool) -> Result<Batcher> {
        let config = BatchConfig {
            batch_size,
            seed,
            shuffle,
            drop_last: false,
            prefetch: 2,
        };
        Ok(Batcher::new(
            self.questions.clone(),
            self.images.clone(),
            self.image_config.normalization,
            config,
        )?)
    }
}
