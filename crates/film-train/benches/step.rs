//! The whole training step (forward, loss, backward, Adam) on the PyTorch reference
//! harness's synthetic batch of 64: the `mini` preset's, so `cargo xtask bench --torch …`
//! can set it beside `torch_film.py --config small`'s train step measured in the same run,
//! and the `default` preset's, whose stem runs once per image for its 8 questions.
//!
//! The id follows `{op}/{pass}/{impl}/{dtype}/{layout}/{shape}`; the throughput is in
//! samples, so `cargo xtask bench` reports samples/s.

use std::hint::black_box;
use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use film_train::presets;
use film_train::profile::TrainingStep;

const BATCH: usize = 64;

fn bench_preset_step(c: &mut Criterion, name: &str) {
    let preset = presets::by_name(name).expect("a known preset");
    let questions_per_image = preset.training.questions_per_image;
    let mut step = TrainingStep::new(
        &preset.model,
        BATCH,
        questions_per_image,
        preset.training.learning_rate,
        preset.training.weight_decay,
        &Device::Cpu,
    )
    .expect("building the preset's model");
    let mut group = c.benchmark_group(format!("train-step-{name}"));
    group.throughput(Throughput::Elements(BATCH as u64));
    let size = preset.model.image_size;
    let images = BATCH / questions_per_image;
    // The shape names the images the stem sees; with one question per image it is the
    // batch, as the `mini` id always was.
    let shape = if questions_per_image == 1 {
        format!("{BATCH}x3x{size}x{size}")
    } else {
        format!("{images}x3x{size}x{size}-{questions_per_image}-questions-each")
    };
    group.bench_function(format!("fwd+bwd/ours/f32/channels-first/{shape}"), |b| {
        b.iter(|| black_box(step.run().expect("training step")))
    });
    group.finish();
}

fn bench_step(c: &mut Criterion) {
    // As the film-train binary does: the step's timing depends on it (see the function).
    film_train::runtime::tune_for_training();
    bench_preset_step(c, "mini");
    bench_preset_step(c, "default");
}

// In the group's config rather than on the group, so that `cargo xtask bench --quick`'s
// command-line settings can shorten it.
criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10));
    targets = bench_step
}
criterion_main!(benches);
