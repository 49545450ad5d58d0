//! Helpers shared by the unit tests.

use std::path::{Path, PathBuf};

use crate::cache::{CacheConfig, ImageCache};
use crate::image::ImageConfig;
use crate::layout::SplitFiles;

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real CLEVR v1.0 scene graphs in the fixture: validation scenes 0 to 39.
pub const REFERENCE_SCENES: &str = "CLEVR_val_scenes_40.json";

/// A file of the real CLEVR sample in `fixtures/clevr-reference` (see its README). The
/// files are part of the repository, so a missing one fails the test instead of skipping
/// it: a test that silently checks nothing is worse than none.
pub fn reference_file(name: &str) -> PathBuf {
    let path = workspace_root().join("fixtures/clevr-reference").join(name);
    assert!(
        path.is_file(),
        "{} is missing: the real CLEVR fixture is part of the repository (fixtures/README.md)",
        path.display()
    );
    path
}

/// A cache of `images` (files of `files`) at `width` x `height`, built quietly under
/// `root/cache` in shards of two images, so that the tests cross shard boundaries.
pub fn small_cache(
    root: &Path,
    files: &SplitFiles,
    images: &[String],
    (width, height): (usize, usize),
) -> ImageCache {
    let (config, cache) = small_cache_config(root, (width, height));
    ImageCache::open_or_build(files, images, &config, &cache)
        .unwrap()
        .0
}

/// The configurations [`small_cache`] builds with.
pub fn small_cache_config(root: &Path, (width, height): (usize, usize)) -> (ImageConfig, CacheConfig) {
    let config = ImageConfig {
        width,
        height,
        ..ImageConfig::default()
    };
    let cache = CacheConfig {
        dir: root.join("cache"),
        shard_images: 2,
        progress: false,
    };
    (config, cache)
}
