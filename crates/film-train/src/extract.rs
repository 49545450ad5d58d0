//! `film-train extract-features`: the paper's image features, ResNet-101 up to the end of
//! its third stage, for every image of a split, written as the `<split>_features.npy` that
//! the `paper-features` preset reads (row i: the image with `image_index` i).
//!
//! Images go through the image cache at 224 × 224 (bicubic, ImageNet statistics: the
//! reference's `extract_features.py` preprocessing), the network is `resnet-features`'
//! ResNet, and the rows go through clevr's `FeatureWriter`: a killed extraction resumes
//! after its last flushed batch, and the file takes its final name only when complete.

use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use clevr::cache::{CacheConfig, ImageCache};
use clevr::feature_writer::FeatureWriter;
use clevr::features::FeatureDType;
use clevr::image::Normalization;
use clevr::layout::{image_name_parts, SplitFiles};
use indicatif::{ProgressBar, ProgressStyle};
use resnet_features::{check_weights, ResNet, ResNetConfig};

use crate::data::{default_cache_dir, image_config, split_files};

/// The side of the images the reference feeds ResNet-101.
pub const IMAGE_SIDE: usize = 224;

/// What to extract, and where to.
#[derive(Debug, Clone)]
pub struct ExtractRequest {
    pub weights: PathBuf,
    pub data: PathBuf,
    pub split: String,
    /// The folder of `<split>_features.npy`.
    pub out: PathBuf,
    pub dtype: FeatureDType,
    pub batch: usize,
    /// Start over: an unfinished extraction is discarded, a finished one redone.
    pub force: bool,
    pub progress: bool,
}

/// What an extraction did.
#[derive(Debug, Clone)]
pub struct ExtractOutcome {
    pub path: PathBuf,
    pub images: usize,
    /// Rows found on disk from an earlier, interrupted extraction.
    pub resumed_at: usize,
    /// Rows computed by this run, and the seconds the network and writing took for them.
    pub extracted: usize,
    pub seconds: f64,
    /// The file was already complete and `force` was not given: nothing was done.
    pub already_complete: bool,
}

/// The image file names of a split's folder in `image_index` order, which must run
/// 0, 1, 2, … without a gap: the rows of a feature file are indexed by it.
pub fn split_images(files: &SplitFiles) -> Result<Vec<String>> {
    let dir = files.images_root.join(&files.split);
    let prefix = format!("CLEVR_{}_", files.split);
    let mut indexed = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| {
        format!(
            "listing the images of split {:?} in {}",
            files.split,
            dir.display()
        )
    })? {
        let name = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        match image_name_parts(&name) {
            Ok((split, index)) if split == files.split => indexed.push((index, name)),
            _ => {}
        }
    }
    indexed.sort();
    if indexed.is_empty() {
        bail!("{}: no image named {prefix}<index>.png", dir.display());
    }
    for (position, (index, name)) in indexed.iter().enumerate() {
        if *index != position {
            bail!(
                "{}: {name} has image_index {index}, but image_index {position} is missing: \
                 a feature file's row i is the image with image_index i, so the indices must \
                 run from 0 without a gap",
                dir.display()
            );
        }
    }
    Ok(indexed.into_iter().map(|(_, name)| name).collect())
}

/// What produces the rows, recorded with an unfinished extraction so that a resumed one
/// continues only with the same weights and images.
fn inputs_description(weights: &Path, images: &Path, count: usize) -> Result<String> {
    let meta = std::fs::metadata(weights).with_context(|| format!("reading {}", weights.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    Ok(format!(
        "weights {} ({} bytes, modified at {modified} s); {count} images of {}",
        weights.display(),
        meta.len(),
        images.display()
    ))
}

/// Runs `network` over the cached images from the writer's first missing row to the last,
/// `batch` images at a time, writing each batch's maps as it completes.
pub fn extract_rows(
    network: &impl Module,
    cache: &ImageCache,
    normalization: Normalization,
    writer: &mut FeatureWriter,
    batch: usize,
    device: &Device,
    progress: &ProgressBar,
) -> Result<()> {
    let (width, height) = (cache.width(), cache.height());
    let plane = width * height;
    let mut input = Vec::new();
    while writer.rows_done() < writer.rows() {
        let first = writer.rows_done();
        let count = batch.min(writer.rows() - first);
        input.resize(count * 3 * plane, 0.0);
        for (slot, out) in (first..first + count).zip(input.chunks_exact_mut(3 * plane)) {
            normalization.apply_chw(cache.image(slot), plane, out);
        }
        let images =
            Tensor::from_slice(&input, (count, 3, height, width), &Device::Cpu)?.to_device(device)?;
        let maps = network
            .forward(&images)
            .with_context(|| format!("running the network on images {first}..{}", first + count))?;
        let values = maps.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        writer.write_rows(&values)?;
        progress.inc(count as u64);
    }
    Ok(())
}

/// Extracts ResNet-101 conv4 features for every image of `request.split`.
pub fn extract_features(request: &ExtractRequest, device: &Device) -> Result<ExtractOutcome> {
    if request.batch == 0 {
        bail!("--batch 0: a batch holds at least one image");
    }
    let path = request.out.join(format!("{}_features.npy", request.split));
    let files = split_files(&request.data, &request.split)?;
    let images = split_images(&files)?;
    if path.exists() && !request.force {
        return Ok(ExtractOutcome {
            path,
            images: images.len(),
            resumed_at: images.len(),
            extracted: 0,
            seconds: 0.0,
            already_complete: true,
        });
    }
    let config = ResNetConfig::resnet101_conv4();
    check_weights(
        &request.weights,
        &config,
        "ResNet-101 (torchvision resnet101) up to layer3",
    )?;
    // SAFETY: the weights file is mapped read-only for the life of the VarBuilder.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&request.weights], DType::F32, device) }
        .with_context(|| format!("reading {}", request.weights.display()))?;
    let network = ResNet::new(&config, vb)
        .with_context(|| format!("building ResNet-101 from {}", request.weights.display()))?;

    let image = image_config(IMAGE_SIDE);
    let cache_dir =
        default_cache_dir(&request.data).join(format!("{}-{IMAGE_SIDE}x{IMAGE_SIDE}", request.split));
    let (cache, _) = ImageCache::open_or_build(&files, &images, &image, &CacheConfig::new(cache_dir))
        .with_context(|| format!("preparing the image cache of split {:?}", request.split))?;

    std::fs::create_dir_all(&request.out).with_context(|| format!("creating {}", request.out.display()))?;
    let side = config.output_side(IMAGE_SIDE);
    let inputs = inputs_description(
        &request.weights,
        &files.images_root.join(&request.split),
        images.len(),
    )?;
    let mut writer = FeatureWriter::open(
        &path,
        images.len(),
        (config.output_channels(), side, side),
        request.dtype,
        &inputs,
        request.force,
    )
    .context("pass --force to start the extraction over")?;
    let resumed_at = writer.rows_done();
    let progress = if request.progress {
        let bar = ProgressBar::new(images.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "extracting features {bar:40} {pos}/{len} images, {per_sec} [{elapsed_precise} < {eta_precise}]",
            )
            .expect("static template is valid"),
        );
        bar.set_position(resumed_at as u64);
        bar.reset_eta();
        bar
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    extract_rows(
        &network,
        &cache,
        image.normalization,
        &mut writer,
        request.batch,
        device,
        &progress,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let path = writer.finish()?;
    Ok(ExtractOutcome {
        path,
        images: images.len(),
        resumed_at,
        extracted: images.len() - resumed_at,
        seconds,
        already_complete: false,
    })
}
