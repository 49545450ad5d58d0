//! `film-train extract-features` on the CLEVR-format fixture: the rows a resumed extraction
//! writes equal one uninterrupted pass, images are taken in `image_index` order, and a
//! wrong weights file or a gap in the indices is refused before any work.

mod support;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use clevr::cache::{CacheConfig, ImageCache};
use clevr::feature_writer::FeatureWriter;
use clevr::features::{FeatureDType, FeatureFile};
use film_train::data::{image_config, split_files};
use film_train::extract::{extract_features, extract_rows, split_images, ExtractRequest, IMAGE_SIDE};
use indicatif::ProgressBar;
use resnet_features::{ResNet, ResNetConfig};

fn tiny_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/resnet-tiny/weights.safetensors")
}

/// The structure of fixtures/resnet-tiny (see crates/resnet-features/tests).
fn tiny_resnet() -> ResNet {
    let config = ResNetConfig {
        stem_channels: 8,
        stage_blocks: vec![1, 2, 2],
        stage_widths: vec![4, 8, 16],
        expansion: 4,
    };
    // SAFETY: the fixture is mapped read-only.
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[tiny_weights()], DType::F32, &Device::Cpu) }.unwrap();
    ResNet::new(&config, vb).unwrap()
}

fn request(data: &Path, out: &Path) -> ExtractRequest {
    ExtractRequest {
        weights: tiny_weights(),
        data: data.to_path_buf(),
        split: "val".into(),
        out: out.to_path_buf(),
        dtype: FeatureDType::F32,
        batch: 4,
        force: false,
        progress: false,
    }
}

#[test]
fn a_resumed_extraction_writes_what_one_pass_would() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::fixture_copy(dir.path());
    let files = split_files(&data, "train").unwrap();
    let images = split_images(&files).unwrap();
    assert_eq!(
        images,
        [
            "CLEVR_train_000000.png",
            "CLEVR_train_000001.png",
            "CLEVR_train_000002.png"
        ]
    );
    let image = image_config(IMAGE_SIDE);
    let (cache, _) = ImageCache::open_or_build(
        &files,
        &images,
        &image,
        &CacheConfig::new(dir.path().join("cache")),
    )
    .unwrap();
    let net = tiny_resnet();

    // One pass over all three images at once.
    let plane = IMAGE_SIDE * IMAGE_SIDE;
    let mut input = vec![0.0f32; 3 * 3 * plane];
    for (slot, out) in input.chunks_exact_mut(3 * plane).enumerate() {
        image.normalization.apply_chw(cache.image(slot), plane, out);
    }
    let whole = net
        .forward(&Tensor::from_vec(input, (3, 3, IMAGE_SIDE, IMAGE_SIDE), &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(whole.dims(), [3, 64, 14, 14]);
    let whole = whole.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let map = 64 * 14 * 14;

    // An extraction killed after its first row, then resumed with batches of two.
    let path = dir.path().join("train_features.npy");
    let shape = (64, 14, 14);
    let mut writer = FeatureWriter::open(&path, 3, shape, FeatureDType::F32, "tiny", false).unwrap();
    writer.write_rows(&whole[..map]).unwrap();
    drop(writer);
    let mut writer = FeatureWriter::open(&path, 3, shape, FeatureDType::F32, "tiny", false).unwrap();
    assert_eq!(writer.rows_done(), 1);
    extract_rows(
        &net,
        &cache,
        image.normalization,
        &mut writer,
        2,
        &Device::Cpu,
        &ProgressBar::hidden(),
    )
    .unwrap();
    writer.finish().unwrap();

    let file = FeatureFile::open(&path).unwrap();
    assert_eq!((file.rows(), file.map_shape()), (3, shape));
    let largest = whole.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(largest > 0.1, "a vacuous comparison: the maps are all but zero");
    let mut row = vec![0.0; map];
    for i in 0..3 {
        file.read_into(i, &mut row);
        let worst = row
            .iter()
            .zip(&whole[i * map..(i + 1) * map])
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-5 * largest, "row {i}: largest difference {worst}");
    }
}

#[test]
fn weights_that_are_not_resnet_101_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::fixture_copy(dir.path());
    let out = dir.path().join("features");
    let error = format!(
        "{:#}",
        extract_features(&request(&data, &out), &Device::Cpu).unwrap_err()
    );
    assert!(
        error.contains("weights.safetensors: not the weights of ResNet-101"),
        "{error}"
    );
    assert!(
        error.contains("375 tensors missing:") && error.contains("layer1.1.conv1.weight"),
        "{error}"
    );
    assert!(
        error.contains("conv1.weight: the file holds F32 [8, 3, 7, 7]"),
        "{error}"
    );
    assert!(
        !out.exists() && !data.join(".film-cache").exists(),
        "nothing is written"
    );
}

#[test]
fn a_complete_file_is_left_alone_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::fixture_copy(dir.path());
    let out = dir.path().join("features");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("val_features.npy"), b"finished earlier").unwrap();
    let outcome = extract_features(&request(&data, &out), &Device::Cpu).unwrap();
    assert!(outcome.already_complete);
    assert_eq!((outcome.images, outcome.extracted), (2, 0));
    assert_eq!(
        std::fs::read(out.join("val_features.npy")).unwrap(),
        b"finished earlier"
    );
}

#[test]
fn a_gap_in_the_image_indices_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::fixture_copy(dir.path());
    let images = data.join("images/val");
    std::fs::rename(
        images.join("CLEVR_val_000001.png"),
        images.join("CLEVR_val_000002.png"),
    )
    .unwrap();
    std::fs::write(images.join("notes.txt"), b"not an image").unwrap();
    let error = format!(
        "{:#}",
        split_images(&split_files(&data, "val").unwrap()).unwrap_err()
    );
    assert!(
        error.contains("CLEVR_val_000002.png has image_index 2, but image_index 1 is missing"),
        "{error}"
    );
}
