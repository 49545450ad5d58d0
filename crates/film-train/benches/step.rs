//! The whole training step of the `mini` preset (forward, loss, backward, Adam) on the
//! PyTorch reference harness's synthetic batch of 64, so `cargo xtask bench --torch …` can
//! set it beside `torch_film.py --config small`'s train step measured in the same run.
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

fn bench_step(c: &mut Criterion) {
    // As the film-train binary does: the step's timing depends on it (see the function).
    film_train::runtime::tune_for_training();
    let preset = presets::by_name("mini").expect("the mini preset");
    let mut step = TrainingStep::new(
        &preset.model,
        BATCH,
        preset.training.learning_rate,
        preset.training.weight_decay,
        &Device::Cpu,
    )
    .expect("building the mini model");
    let mut group = c.benchmark_group("train-step-mini");
    group.throughput(Throughput::Elements(BATCH as u64));
    let size = preset.model.image_size;
    group.bench_function(
        format!("fwd+bwd/ours/f32/channels-first/{BATCH}x3x{size}x{size}"),
        |b| b.iter(|| black_box(step.run().expect("training step"))),
    );
    group.finish();
}

// In the group's config rather than on the group, so that `cargo xtask bench --quick`'s
// command-line settings can shorten it.
criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(10));
    targets = bench_step
}
criterion_main!(benches);
