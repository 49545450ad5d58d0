//! End-to-end training on the tiny CLEVR-format fixture: the model learns, and a resumed
//! run ends with exactly the weights of an uninterrupted one.

use std::path::{Path, PathBuf};

use candle_core::Device;
use film_train::presets;
use film_train::train::{train, TrainRequest};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clevr-mini")
}

fn request(out: &Path, cache: &Path, epochs: usize) -> TrainRequest {
    TrainRequest {
        data: fixture(),
        preset: presets::by_name("tiny").unwrap(),
        out: out.to_path_buf(),
        epochs: Some(epochs),
        minutes: None,
        seed: 7,
        val_limit: None,
        cache_dir: Some(cache.to_path_buf()),
        quiet: true,
    }
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn tiny_model_overfits_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let outcome = train(&request(&run, &dir.path().join("cache"), 40), &Device::Cpu).unwrap();
    assert!(outcome.state.finished);
    let m = metrics(&run);
    let (first, last) = (&m[0], &m[m.len() - 1]);
    let loss = |r: &serde_json::Value| r["train_loss"].as_f64().unwrap();
    let accuracy = |r: &serde_json::Value| r["train_accuracy"].as_f64().unwrap();
    assert!(
        loss(last) < 0.3 * loss(first),
        "loss {} -> {}",
        loss(first),
        loss(last)
    );
    assert!(accuracy(last) > 0.9, "train accuracy only {}", accuracy(last));
    assert!(accuracy(last) > accuracy(first) + 0.5);
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let straight = dir.path().join("straight");
    let resumed = dir.path().join("resumed");
    train(&request(&straight, &cache, 6), &Device::Cpu).unwrap();
    train(&request(&resumed, &cache, 3), &Device::Cpu).unwrap();
    let outcome = train(&request(&resumed, &cache, 6), &Device::Cpu).unwrap();
    assert_eq!(outcome.state.epoch, 6);

    let load = |run: &Path| {
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
        let step = state["step"].as_u64().unwrap();
        candle_core::safetensors::load(run.join(format!("model-{step:08}.safetensors")), &Device::Cpu)
            .unwrap()
    };
    let (a, b) = (load(&straight), load(&resumed));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let diff = (t - &b[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert_eq!(diff, 0.0, "{name} differs by {diff} after resuming");
    }
}
