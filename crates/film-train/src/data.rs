//! Loading a CLEVR-layout split for training or evaluation through the `clevr` crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clevr::batch::{BatchConfig, Batcher, ImageInputs, Mirror};
use clevr::cache::{CacheConfig, ImageCache};
use clevr::dataset::{LoadOptions, QuestionSet};
use clevr::features::FeatureFile;
use clevr::image::{Filter, ImageConfig, Normalization};
use clevr::layout::{Release, SplitFiles};
use clevr::vocab::Vocabulary;
use clevr::{Scene, ScenesFile};
use film_vision::Stem;

use crate::presets::ModelConfig;

/// A split ready to batch: its questions encoded with the run's vocabulary, and its images
/// in the preprocessing cache or their pre-extracted features.
#[derive(Clone)]
pub struct Split {
    pub name: String,
    pub questions: Arc<QuestionSet>,
    pub inputs: ImageInputs,
}

/// What a model reads for each question's image.
#[derive(Clone, Debug)]
pub enum ImageSource {
    /// Pixels resized and normalised by `image`, cached under `cache_root`.
    Pixels { image: ImageConfig, cache_root: PathBuf },
    /// Pre-extracted feature maps of `channels` channels, read from
    /// `<dir>/<split>_features.npy` (see [`clevr::features`]).
    Features { dir: PathBuf, channels: usize },
}

impl ImageSource {
    /// The source `model`'s stem reads for the dataset `data`: pixels cached under
    /// `cache_dir` (default `<data>/.film-cache`), or features in `features_dir` (default
    /// `<data>/features`).
    pub fn for_model(
        model: &ModelConfig,
        data: &Path,
        cache_dir: Option<&Path>,
        features_dir: Option<&Path>,
    ) -> Self {
        match model.vision.stem {
            Stem::Pixels { .. } => ImageSource::Pixels {
                image: image_config(model.image_size),
                cache_root: cache_dir.map_or_else(|| default_cache_dir(data), Path::to_path_buf),
            },
            Stem::Features { in_channels } => ImageSource::Features {
                dir: features_dir.map_or_else(|| data.join("features"), Path::to_path_buf),
                channels: in_channels,
            },
        }
    }
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

/// The scene graphs of `files`, for the training switches that learn from them (`what`
/// names the switch in errors): a split without a scene file (CLEVR-Humans) is an error.
pub fn read_scenes(files: &SplitFiles, what: &str) -> Result<Vec<Scene>> {
    let Some(path) = &files.scenes else {
        bail!(
            "{what} needs scene graphs, and split {:?} has no scene file",
            files.split
        );
    };
    let file = ScenesFile::read(path).with_context(|| format!("{what}: reading {}", path.display()))?;
    Ok(file.scenes)
}

/// Where preprocessed images of the dataset `root` are cached unless told otherwise.
pub fn default_cache_dir(root: &Path) -> PathBuf {
    root.join(".film-cache")
}

/// Loads `split` of `root`, reporting skipped questions on stderr, with its images from
/// `source`.
pub fn load_split(root: &Path, split: &str, vocab: &Vocabulary, source: &ImageSource) -> Result<Split> {
    load_split_with(root, split, vocab, source, LoadOptions::default())
}

/// [`load_split`] with the questions' programs kept when `options` asks.
pub fn load_split_with(
    root: &Path,
    split: &str,
    vocab: &Vocabulary,
    source: &ImageSource,
    options: LoadOptions,
) -> Result<Split> {
    load_split_files(split_files(root, split)?, vocab, source, options)
}

/// [`load_split_with`] for split files located already (e.g. with another questions file
/// about the split's images).
pub fn load_split_files(
    files: SplitFiles,
    vocab: &Vocabulary,
    source: &ImageSource,
    options: LoadOptions,
) -> Result<Split> {
    let split = files.split.as_str();
    let (questions, report) = QuestionSet::load(&files, vocab, options)
        .with_context(|| format!("loading questions of split {split:?}"))?;
    if !report.skipped.is_empty() {
        eprintln!("{split}: {report}");
    }
    let inputs = match source {
        ImageSource::Pixels { image, cache_root } => {
            let cache_dir = cache_root.join(format!("{split}-{}x{}", image.width, image.height));
            let (images, _status) =
                ImageCache::open_or_build(&files, &questions.images, image, &CacheConfig::new(cache_dir))
                    .with_context(|| format!("preparing the image cache of split {split:?}"))?;
            ImageInputs::Pixels {
                cache: Arc::new(images),
                normalization: image.normalization,
            }
        }
        ImageSource::Features { dir, channels } => {
            let path = dir.join(format!("{split}_features.npy"));
            let features = FeatureFile::open(&path).with_context(|| {
                format!(
                    "the features stem reads pre-extracted image features of split {split:?} \
                     (see docs/training.md, \"Pre-extracted features\")"
                )
            })?;
            let (c, h, w) = features.map_shape();
            if c != *channels {
                bail!(
                    "{}: header field 'shape': feature maps of {c} x {h} x {w}, but the model's \
                     features stem reads {channels} channels",
                    path.display()
                );
            }
            ImageInputs::Features(Arc::new(features))
        }
    };
    Ok(Split {
        name: split.to_string(),
        questions: Arc::new(questions),
        inputs,
    })
}

impl Split {
    /// Batches of this split: shuffled with `seed` for training, in file order otherwise.
    pub fn batcher(&self, batch_size: usize, seed: u64, shuffle: bool) -> Result<Batcher> {
        self.batcher_with(BatchConfig {
            batch_size,
            seed,
            shuffle,
            ..BatchConfig::default()
        })
    }

    /// Shuffled training batches keeping `questions_per_image` questions of one image
    /// together, with about half of the images mirrored when `mirror` is given.
    pub fn training_batcher(
        &self,
        batch_size: usize,
        seed: u64,
        questions_per_image: usize,
        mirror: Option<Mirror>,
    ) -> Result<Batcher> {
        self.batcher_with(BatchConfig {
            batch_size,
            seed,
            questions_per_image,
            mirror,
            ..BatchConfig::default()
        })
    }

    fn batcher_with(&self, config: BatchConfig) -> Result<Batcher> {
        Ok(match &self.inputs {
            ImageInputs::Pixels { cache, normalization } => {
                Batcher::new(self.questions.clone(), cache.clone(), *normalization, config)?
            }
            ImageInputs::Features(features) => {
                Batcher::with_features(self.questions.clone(), features.clone(), config)?
            }
        })
    }
}
