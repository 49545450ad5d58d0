//! Hot paths of the loader: question encoding (lookup vs. the Hugging Face
//! tokenizer), image resizing, and building one training batch.
//!
//! `cargo bench -p clevr --bench loader`

use clevr::batch::{BatchConfig, Batcher};
use clevr::cache::{CacheConfig, ImageCache};
use clevr::dataset::QuestionSet;
use clevr::image::{decode_png, resize, write_png, Filter, ImageConfig, Normalization, RgbImage};
use clevr::layout::{Release, SplitFiles};
use clevr::vocab::{QuestionVocab, TokenizerConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

const QUESTION: &str =
    "There is a small cyan metal sphere right of the large gray rubber sphere; what color is it?";

fn encoding(c: &mut Criterion) {
    let vocab = QuestionVocab::build([QUESTION], TokenizerConfig::default()).unwrap();
    let mut group = c.benchmark_group("encode question");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rule + lookup", |b| {
        b.iter(|| vocab.encode(black_box(QUESTION)).unwrap())
    });
    group.bench_function("tokenizers pipeline", |b| {
        b.iter(|| vocab.encode_with_tokenizer(black_box(QUESTION)).unwrap())
    });
    group.finish();
}

/// A 480 × 320 image with structure (not constant), the size of a CLEVR image.
fn clevr_sized(seed: usize) -> RgbImage {
    let (width, height) = (480, 320);
    let pixels = (0..width * height * 3)
        .map(|i| ((i * 31 + seed * 17) % 251) as u8)
        .collect();
    RgbImage {
        width,
        height,
        pixels,
    }
}

/// Decoding a real CLEVR PNG (480 × 320 RGBA) of the fixture.
fn decoding(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/clevr-reference/images/CLEVR_val_000010.png");
    let mut group = c.benchmark_group("decode real CLEVR PNG 480x320 RGBA");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_png", |b| b.iter(|| decode_png(black_box(&path)).unwrap()));
    group.finish();
}

fn resizing(c: &mut Criterion) {
    let image = clevr_sized(0);
    let mut group = c.benchmark_group("resize 480x320 to 224x224");
    group.throughput(Throughput::Elements(1));
    for filter in [Filter::Bicubic, Filter::Bilinear] {
        group.bench_function(format!("{filter:?}"), |b| {
            b.iter(|| resize(black_box(&image), 224, 224, filter))
        });
    }
    group.finish();
}

fn batching(c: &mut Criterion) {
    const N: usize = 64;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("images/train")).unwrap();
    let images: Vec<String> = (0..N).map(|i| format!("CLEVR_train_{i:06}.png")).collect();
    for (i, name) in images.iter().enumerate() {
        write_png(&root.path().join("images/train").join(name), &clevr_sized(i)).unwrap();
    }
    let files = SplitFiles::clevr(root.path(), Release::V1, "train").unwrap();
    let config = ImageConfig::default();
    let cache = CacheConfig {
        progress: false,
        ..CacheConfig::new(root.path().join("cache"))
    };
    let (cache, _) = ImageCache::open_or_build(&files, &images, &config, &cache).unwrap();
    let vocab = QuestionVocab::build([QUESTION], TokenizerConfig::default()).unwrap();
    let mut set = QuestionSet {
        offsets: vec![0],
        images,
        ..QuestionSet::default()
    };
    for i in 0..N {
        set.tokens.extend(vocab.encode(QUESTION).unwrap());
        set.offsets.push(set.tokens.len() as u32);
        set.image_index.push(i as u32);
        set.image_slot.push(i as u32);
        set.answers.push(0);
        set.families.push(0);
        set.types.push(0);
    }
    let batcher = Batcher::new(
        Arc::new(set),
        Arc::new(cache),
        Normalization::IMAGENET,
        BatchConfig::default(),
    )
    .unwrap();
    let positions: Vec<usize> = (0..N).collect();
    let mut group = c.benchmark_group("batch of 64 at 224x224 from the cache");
    group.throughput(Throughput::Bytes((N * 3 * 224 * 224) as u64));
    group.bench_function("Batcher::batch", |b| {
        b.iter(|| batcher.batch(black_box(&positions)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, encoding, decoding, resizing, batching);
criterion_main!(benches);
