//! The preprocessed image cache: each split's images decoded and resized once
//! into u8 safetensors shards, memory-mapped by training.
//!
//! A cache folder holds `shard-NNNNN.safetensors` files (one tensor `images`,
//! u8, shape `[n, 3, H, W]`) and `manifest.json`, written last. The manifest
//! records where the images came from (folder, file names, a fingerprint of their
//! sizes and modification times), the target size and the filter. Opening
//! compares all of that with what is asked for, and checks every shard's header;
//! any difference, or a missing manifest (an interrupted build), makes the cache
//! stale, and it is rebuilt, never silently used.

use crate::image::{load_resized_chw, Filter, ImageConfig, ImageError};
use crate::layout::{LayoutError, SplitFiles};
use indicatif::{ProgressBar, ProgressStyle};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Bumped whenever the on-disk layout changes, so old caches are rebuilt.
const FORMAT_VERSION: u32 = 1;
const MANIFEST_FILE: &str = "manifest.json";
const TENSOR_NAME: &str = "images";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("{}: image is missing (expected by the question set; looked for it at this path)", path.display())]
    MissingImage { path: PathBuf },
    #[error("{}: cannot write shard: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error("{}: cache shard is unreadable: {problem}", path.display())]
    BadShard { path: PathBuf, problem: String },
}

/// Where the cache lives and how it is cut into shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub dir: PathBuf,
    /// Images per shard file. 1024 images of 224² are 154 MB per shard.
    pub shard_images: usize,
    /// Draw a progress bar on stderr while building.
    pub progress: bool,
}

impl CacheConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CacheConfig {
            dir: dir.into(),
            shard_images: 1024,
            progress: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ShardEntry {
    file: String,
    count: usize,
}

/// What a cache was built from and how. Two manifests that differ in any field
/// describe different caches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    format_version: u32,
    /// The images folder, as given.
    source: PathBuf,
    /// Image file names in cache order.
    images: Vec<String>,
    /// Hash of every source file's name, byte size and modification time.
    source_fingerprint: u64,
    width: usize,
    height: usize,
    filter: Filter,
    shards: Vec<ShardEntry>,
}

/// Whether [`ImageCache::open_or_build`] used an existing cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    Reused,
    /// Built, with the reason an existing cache could not be used.
    Built {
        reason: String,
    },
}

struct Shard {
    map: Mmap,
    /// Byte offset of the tensor data inside the file.
    data_start: usize,
    count: usize,
}

/// A memory-mapped cache of one split's images, CHW u8 at the configured size.
pub struct ImageCache {
    shards: Vec<Shard>,
    /// (shard, index in shard) of each cached image.
    locations: Vec<(u32, u32)>,
    width: usize,
    height: usize,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache")
            .field("images", &self.locations.len())
            .field("shards", &self.shards.len())
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

impl ImageCache {
    /// Opens the cache of `images` (file names, e.g. [`crate::dataset::QuestionSet::images`])
    /// in `cache.dir`, building it first when it is absent, partial or stale.
    pub fn open_or_build(
        files: &SplitFiles,
        images: &[String],
        image: &ImageConfig,
        cache: &CacheConfig,
    ) -> Result<(ImageCache, CacheStatus), CacheError> {
        let paths = images
            .iter()
            .map(|name| files.image_path(name))
            .collect::<Result<Vec<_>, _>>()?;
        let wanted = Manifest {
            format_version: FORMAT_VERSION,
            source: files.images_root.clone(),
            images: images.to_vec(),
            source_fingerprint: fingerprint(&paths)?,
            width: image.width,
            height: image.height,
            filter: image.filter,
            shards: plan_shards(images.len(), cache.shard_images),
        };
        let reason = match read_manifest(&cache.dir) {
            None => "no complete cache (manifest.json missing)".to_string(),
            Some(found) if found != wanted => describe_difference(&found, &wanted),
            Some(_) => match Self::open(&cache.dir, &wanted) {
                Ok(opened) => return Ok((opened, CacheStatus::Reused)),
                Err(e) => format!("existing cache unusable: {e}"),
            },
        };
        build(&paths, &wanted, image, cache)?;
        Ok((Self::open(&cache.dir, &wanted)?, CacheStatus::Built { reason }))
    }

    fn open(dir: &Path, manifest: &Manifest) -> Result<ImageCache, CacheError> {
        let image_bytes = 3 * manifest.width * manifest.height;
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut locations = Vec::with_capacity(manifest.images.len());
        for (s, entry) in manifest.shards.iter().enumerate() {
            let path = dir.join(&entry.file);
            let bad = |problem: String| CacheError::BadShard {
                path: path.clone(),
                problem,
            };
            let file = std::fs::File::open(&path).map_err(|source| CacheError::Io {
                path: path.clone(),
                what: "cannot open cache shard",
                source,
            })?;
            // SAFETY: the shard is only read; the cache folder is ours and files are
            // replaced by rename, never rewritten in place, while a map is live.
            let map = unsafe { Mmap::map(&file) }.map_err(|source| CacheError::Io {
                path: path.clone(),
                what: "cannot map cache shard",
                source,
            })?;
            let data_start = {
                let st = SafeTensors::deserialize(&map).map_err(|e| bad(e.to_string()))?;
                let view = st.tensor(TENSOR_NAME).map_err(|e| bad(e.to_string()))?;
                let expected = [entry.count, 3, manifest.height, manifest.width];
                if view.dtype() != Dtype::U8 || view.shape() != expected {
                    return Err(bad(format!(
                        "tensor {TENSOR_NAME} is {:?} {:?}, expected U8 {expected:?}",
                        view.dtype(),
                        view.shape()
                    )));
                }
                debug_assert_eq!(view.data().len(), entry.count * image_bytes);
                view.data().as_ptr() as usize - map.as_ptr() as usize
            };
            locations.extend((0..entry.count).map(|i| (s as u32, i as u32)));
            shards.push(Shard {
                map,
                data_start,
                count: entry.count,
            });
        }
        Ok(ImageCache {
            shards,
            locations,
            width: manifest.width,
            height: manifest.height,
        })
    }

    pub fn len(&self) -> usize {
        self.locations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Bytes of one cached image (3 · H · W).
    pub fn image_bytes(&self) -> usize {
        3 * self.width * self.height
    }

    /// The CHW u8 pixels of cached image `slot` (its position in the `images` list
    /// the cache was built from).
    pub fn image(&self, slot: usize) -> &[u8] {
        let (s, i) = self.locations[slot];
        let shard = &self.shards[s as usize];
        debug_assert!((i as usize) < shard.count);
        let start = shard.data_start + i as usize * self.image_bytes();
        &shard.map[start..start + self.image_bytes()]
    }
}

fn plan_shards(images: usize, per_shard: usize) -> Vec<ShardEntry> {
    let per_shard = per_shard.max(1);
    (0..images.div_ceil(per_shard))
        .map(|s| ShardEntry {
            file: format!("shard-{s:05}.safetensors"),
            count: per_shard.min(images - s * per_shard),
        })
        .collect()
}

fn fingerprint(paths: &[PathBuf]) -> Result<u64, CacheError> {
    let stats = paths
        .par_iter()
        .map(|path| {
            let meta =
                std::fs::metadata(path).map_err(|_| CacheError::MissingImage { path: path.clone() })?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            Ok((meta.len(), modified))
        })
        .collect::<Result<Vec<_>, CacheError>>()?;
    // SipHash with fixed keys: stable from run to run. A Rust release may change
    // it, which can only cause a needless rebuild, never reuse of a stale cache.
    let mut hasher = DefaultHasher::new();
    for (path, stat) in paths.iter().zip(stats) {
        path.file_name().hash(&mut hasher);
        stat.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

fn read_manifest(dir: &Path) -> Option<Manifest> {
    let text = std::fs::read(dir.join(MANIFEST_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn describe_difference(found: &Manifest, wanted: &Manifest) -> String {
    if found.format_version != wanted.format_version {
        "cache format changed".to_string()
    } else if found.source != wanted.source {
        format!(
            "cache was built from {}, not {}",
            found.source.display(),
            wanted.source.display()
        )
    } else if (found.width, found.height, found.filter) != (wanted.width, wanted.height, wanted.filter) {
        format!(
            "cache holds {}x{} {:?}, wanted {}x{} {:?}",
            found.width, found.height, found.filter, wanted.width, wanted.height, wanted.filter
        )
    } else if found.images != wanted.images {
        "the list of images differs".to_string()
    } else if found.source_fingerprint != wanted.source_fingerprint {
        "source images changed (size or modification time)".to_string()
    } else {
        "shard layout differs".to_string()
    }
}

fn build(
    paths: &[PathBuf],
    manifest: &Manifest,
    image: &ImageConfig,
    cache: &CacheConfig,
) -> Result<(), CacheError> {
    let dir = &cache.dir;
    std::fs::create_dir_all(dir).map_err(|source| CacheError::Io {
        path: dir.clone(),
        what: "cannot create cache folder",
        source,
    })?;
    // Remove the old manifest first: if this build is interrupted, the folder
    // has no manifest and is recognised as partial next time.
    let manifest_path = dir.join(MANIFEST_FILE);
    match std::fs::remove_file(&manifest_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(CacheError::Io {
                path: manifest_path,
                what: "cannot remove stale manifest",
                source: e,
            })
        }
        _ => {}
    }
    let bar = if cache.progress {
        let bar = ProgressBar::new(paths.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "caching images {bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}]",
            )
            .expect("static template is valid"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut first = 0;
    for entry in &manifest.shards {
        // Decoded straight into the shard buffer: one shard in memory at a time.
        let image_bytes = 3 * image.width * image.height;
        let mut data = vec![0u8; entry.count * image_bytes];
        data.par_chunks_mut(image_bytes)
            .zip(&paths[first..first + entry.count])
            .try_for_each(|(out, path)| {
                out.copy_from_slice(&load_resized_chw(path, image)?);
                bar.inc(1);
                Ok::<(), CacheError>(())
            })?;
        let shape = vec![entry.count, 3, image.height, image.width];
        let path = dir.join(&entry.file);
        let write_error = |message: String| CacheError::Write {
            path: path.clone(),
            message,
        };
        let view = safetensors::tensor::TensorView::new(Dtype::U8, shape, &data)
            .map_err(|e| write_error(e.to_string()))?;
        let partial = dir.join(format!("{}.partial", entry.file));
        safetensors::serialize_to_file([(TENSOR_NAME, view)], None, &partial)
            .map_err(|e| write_error(e.to_string()))?;
        rename(&partial, &path)?;
        first += entry.count;
    }
    bar.finish_and_clear();
    remove_unlisted_shards(dir, manifest)?;
    let partial = dir.join(format!("{MANIFEST_FILE}.partial"));
    let text = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
    std::fs::write(&partial, text).map_err(|source| CacheError::Io {
        path: partial.clone(),
        what: "cannot write manifest",
        source,
    })?;
    rename(&partial, &manifest_path)
}

/// Deletes shard files a previous, larger cache left behind, so the folder holds
/// exactly what the manifest lists.
fn remove_unlisted_shards(dir: &Path, manifest: &Manifest) -> Result<(), CacheError> {
    let io = |source| CacheError::Io {
        path: dir.to_path_buf(),
        what: "cannot list cache folder",
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let name = name.to_string_lossy();
        let is_shard = name.starts_with("shard-") && name.ends_with(".safetensors");
        if is_shard && !manifest.shards.iter().any(|s| s.file == name) {
            let path = dir.join(name.as_ref());
            std::fs::remove_file(&path).map_err(|source| CacheError::Io {
                path,
                what: "cannot remove stale shard",
                source,
            })?;
        }
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<(), CacheError> {
    crate::atomic::replace(from, to).map_err(|source| CacheError::Io {
        path: to.to_path_buf(),
        what: "cannot move finished file into place",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{decode_png, resize, write_png, RgbImage};
    use crate::layout::Release;

    fn write_images(root: &Path, count: usize) -> Vec<String> {
        let dir = root.join("images/val");
        std::fs::create_dir_all(&dir).unwrap();
        (0..count)
            .map(|i| {
                let name = format!("CLEVR_val_{i:06}.png");
                let image = RgbImage {
                    width: 12,
                    height: 8,
                    pixels: [(i * 20) as u8, 100, 7].repeat(12 * 8),
                };
                write_png(&dir.join(&name), &image).unwrap();
                name
            })
            .collect()
    }

    fn setup(
        count: usize,
    ) -> (
        tempfile::TempDir,
        SplitFiles,
        Vec<String>,
        ImageConfig,
        CacheConfig,
    ) {
        let root = tempfile::tempdir().unwrap();
        let images = write_images(root.path(), count);
        let files = SplitFiles::clevr(root.path(), Release::V1, "val").unwrap();
        let (config, cache) = crate::testing::small_cache_config(root.path(), (6, 4));
        (root, files, images, config, cache)
    }

    #[test]
    fn builds_then_reuses_and_reads_back_pixels() {
        let (_root, files, images, config, cache) = setup(5);
        let (built, status) = ImageCache::open_or_build(&files, &images, &config, &cache).unwrap();
        assert!(matches!(status, CacheStatus::Built { .. }));
        assert_eq!(built.len(), 5);
        assert_eq!(built.image(3).len(), 3 * 6 * 4);
        // A constant image resizes to the same constant: red plane is i * 20.
        assert!(built.image(3)[..24].iter().all(|&v| v == 60));
        assert!(built.image(4)[24..48].iter().all(|&v| v == 100));
        let (again, status) = ImageCache::open_or_build(&files, &images, &config, &cache).unwrap();
        assert_eq!(status, CacheStatus::Reused);
        assert_eq!(again.image(4), built.image(4));
        assert_eq!(std::fs::read_dir(&cache.dir).unwrap().count(), 3 + 1);

        // A smaller image list rebuilds with fewer shards and removes the old extra one.
        let (fewer, status) = ImageCache::open_or_build(&files, &images[..3], &config, &cache).unwrap();
        assert!(matches!(status, CacheStatus::Built { ref reason } if reason.contains("list of images")));
        assert_eq!(fewer.len(), 3);
        assert_eq!(std::fs::read_dir(&cache.dir).unwrap().count(), 2 + 1);
    }

    #[test]
    fn stale_or_partial_caches_are_rebuilt_with_a_reason() {
        let (_root, files, images, config, cache) = setup(3);
        ImageCache::open_or_build(&files, &images, &config, &cache).unwrap();
        let bigger = ImageConfig { width: 8, ..config };
        let (_, status) = ImageCache::open_or_build(&files, &images, &bigger, &cache).unwrap();
        let CacheStatus::Built { reason } = status else {
            panic!("size change must rebuild")
        };
        assert!(reason.contains("6x4"), "{reason}");

        // A shard replaced by garbage is detected through its header.
        std::fs::write(cache.dir.join("shard-00000.safetensors"), b"garbage").unwrap();
        let (_, status) = ImageCache::open_or_build(&files, &images, &bigger, &cache).unwrap();
        assert!(
            matches!(status, CacheStatus::Built { ref reason } if reason.contains("unusable")),
            "{status:?}"
        );

        // An interrupted build leaves no manifest.
        std::fs::remove_file(cache.dir.join(MANIFEST_FILE)).unwrap();
        let (_, status) = ImageCache::open_or_build(&files, &images, &bigger, &cache).unwrap();
        assert!(matches!(status, CacheStatus::Built { ref reason } if reason.contains("manifest")));

        // A source image rewritten with a different size changes the fingerprint.
        let path = files.image_path(&images[1]).unwrap();
        write_png(
            &path,
            &RgbImage {
                width: 3,
                height: 3,
                pixels: vec![0; 27],
            },
        )
        .unwrap();
        let (cache_now, status) = ImageCache::open_or_build(&files, &images, &bigger, &cache).unwrap();
        assert!(
            matches!(status, CacheStatus::Built { ref reason } if reason.contains("changed")),
            "{status:?}"
        );
        assert!(cache_now.image(1).iter().all(|&v| v == 0));
    }

    #[test]
    fn caches_real_rgba_clevr_images() {
        let root = tempfile::tempdir().unwrap();
        let files = SplitFiles::clevr(root.path(), Release::V1, "val").unwrap();
        std::fs::create_dir_all(root.path().join("images/val")).unwrap();
        let images: Vec<String> = (10..13).map(|i| format!("CLEVR_val_{i:06}.png")).collect();
        for name in &images {
            std::fs::copy(
                crate::testing::reference_file(&format!("images/{name}")),
                files.image_path(name).unwrap(),
            )
            .unwrap();
        }
        let cache = crate::testing::small_cache(root.path(), &files, &images, (32, 32));
        assert_eq!(cache.len(), 3);
        for (slot, name) in images.iter().enumerate() {
            let chw = cache.image(slot);
            let expected = resize(
                &decode_png(&files.image_path(name).unwrap()).unwrap(),
                32,
                32,
                Filter::Bicubic,
            );
            assert_eq!(chw, expected.to_chw().as_slice(), "image {slot}");
        }
    }

    #[test]
    fn missing_and_corrupt_images_are_errors_naming_the_file() {
        let (_root, files, mut images, config, cache) = setup(2);
        images.push("CLEVR_val_000009.png".to_string());
        let err = ImageCache::open_or_build(&files, &images, &config, &cache).unwrap_err();
        assert!(matches!(err, CacheError::MissingImage { .. }));
        assert!(err.to_string().contains("CLEVR_val_000009.png"), "{err}");
        images.pop();
        std::fs::write(files.image_path(&images[0]).unwrap(), b"\x89PNG\r\n\x1a\n").unwrap();
        let err = ImageCache::open_or_build(&files, &images, &config, &cache).unwrap_err();
        assert!(
            matches!(err, CacheError::Image(ImageError::Decode { .. })),
            "{err}"
        );
        assert!(
            read_manifest(&cache.dir).is_none(),
            "failed build must leave no manifest"
        );
    }
}
