//! Rendering throughput: sampled CLEVR-like scenes at 480x320, rendered and
//! PNG-encoded in parallel on all cores (the dataset writer's hot path).
//! The goal is at least 50 images/s on the 2-core CI machine.

use clevr_synth::camera::CameraModel;
use clevr_synth::png_out::encode_png;
use clevr_synth::render::{RenderObject, Renderer};
use clevr_synth::sampler::{SamplerConfig, SceneSampler};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

const BATCH: usize = 32;

fn bench_render(c: &mut Criterion) {
    let renderer = Renderer::default();
    let sampler = SceneSampler::new(SamplerConfig::default(), CameraModel::clevr(), &renderer);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let scenes: Vec<_> = (0..BATCH).map(|_| sampler.sample(&mut rng)).collect();
    let objects: Vec<Vec<RenderObject>> = scenes
        .iter()
        .map(|s| s.objects.iter().map(|o| o.render_object()).collect())
        .collect();

    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.bench_function("render_png_480x320_parallel", |b| {
        b.iter(|| {
            scenes
                .par_iter()
                .zip(objects.par_iter())
                .map(|(s, o)| {
                    let image = renderer
                        .render(&s.camera, o)
                        .expect("480 x 320 is within the renderer's limit");
                    let mut png = Vec::with_capacity(200_000);
                    encode_png(&image, &mut png).expect("in-memory PNG");
                    png.len()
                })
                .sum::<usize>()
        })
    });
    group.bench_function("render_480x320_one_thread", |b| {
        b.iter(|| {
            scenes
                .iter()
                .zip(&objects)
                .map(|(s, o)| {
                    renderer
                        .render(&s.camera, o)
                        .expect("480 x 320 is within the renderer's limit")
                        .rgba
                        .len()
                })
                .sum::<usize>()
        })
    });
    group.bench_function("sample_scene", |b| {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        b.iter(|| {
            (0..BATCH)
                .map(|_| sampler.sample(&mut rng).objects.len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
