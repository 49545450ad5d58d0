//! Fuzzing of the run directory's JSON files, which a user may edit by hand and a crash
//! may damage: `config.json`, `state.json` and `metrics.jsonl` (through `compare`'s
//! reader, which also reads the config). Arbitrary bytes and damaged valid files, 10 000
//! cases a file: no panic, and every failure an error naming the file.

#[path = "../../clevr/tests/support/mutate.rs"]
mod mutate;

use std::path::Path;

use film_train::compare::{read_curve, LabelledRun, Score};
use film_train::presets;
use film_train::run_dir::{RunConfig, RunDir, RunState};
use mutate::{arbitrary_bytes, edits, mutate};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const CASES: u32 = 10_000;

/// A run directory holding a valid config, state and metrics, and the valid bytes of each.
struct Run {
    dir: tempfile::TempDir,
    config: Vec<u8>,
    state: Vec<u8>,
    metrics: Vec<u8>,
}

impl Run {
    fn new() -> Self {
        let dir = mutate::scratch_dir();
        let run = RunDir::create(dir.path()).unwrap();
        let preset = presets::by_name("tiny").unwrap();
        run.write_config(&RunConfig {
            preset: preset.name,
            model: preset.model,
            training: preset.training,
            data: "data/mini-clevr".into(),
            seed: 3,
            epochs: Some(4),
            minutes: Some(1.5),
        })
        .unwrap();
        let state = RunState {
            step: 120,
            epoch: 2,
            batches_done_in_epoch: 7,
            train_seconds: 31.25,
            best_val_accuracy: Some(0.5),
            best_step: Some(100),
            finished: false,
        };
        std::fs::write(
            dir.path().join("state.json"),
            serde_json::to_string_pretty(&state).unwrap(),
        )
        .unwrap();
        for step in [50u64, 100, 120] {
            run.append_metrics(&serde_json::json!({
                "step": step, "epoch": step / 50, "train_seconds": step as f64 / 4.0,
                "train_loss": 1.5, "train_accuracy": 0.25, "overall": 0.5,
                "by_type": {"count": 0.5, "exist": 0.75}
            }))
            .unwrap();
        }
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        Run {
            config: read("config.json"),
            state: read("state.json"),
            metrics: read("metrics.jsonl"),
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path().join(name), bytes).unwrap();
    }

    /// Reads the config and state as `train` and `eval` do.
    fn read_config_and_state(&self) {
        let run = RunDir::open(self.path()).unwrap();
        if let Err(err) = run.read_config() {
            assert_names_file(format!("{err:#}"), "config.json");
        }
        if let Err(err) = run.read_state() {
            assert_names_file(format!("{err:#}"), "state.json");
        }
    }

    /// Reads the metrics as `compare` does (with the config, for the batch size).
    fn read_metrics(&self) {
        if let Err(err) = film_train::metrics_file::read(&self.path().join("metrics.jsonl")) {
            assert_names_file(err.to_string(), "metrics.jsonl");
        }
        let labelled = LabelledRun {
            label: "run".into(),
            dir: self.path().to_path_buf(),
        };
        if let Err(err) = read_curve(&labelled, Score::Recorded) {
            let message = format!("{err:#}");
            assert!(
                message.contains("metrics.jsonl") || message.contains("config.json"),
                "the error names neither file: {message:?}"
            );
        }
    }
}

fn assert_names_file(message: String, file: &str) {
    assert!(
        message.contains(file),
        "the error does not name {file}: {message:?}"
    );
}

// One run directory per test, shared by its cases: each case rewrites every file it
// damages, and creating a directory per case would cost more than the reading tested.

#[test]
fn config_and_state_survive_arbitrary_bytes_and_damage() {
    let run = Run::new();
    let cases = (arbitrary_bytes(), edits(), edits());
    runner()
        .run(&cases, |(bytes, config_edits, state_edits)| {
            run.write("config.json", &bytes);
            run.write("state.json", &bytes);
            run.read_config_and_state();
            run.write("config.json", &mutate(&run.config, &config_edits));
            run.write("state.json", &mutate(&run.state, &state_edits));
            run.read_config_and_state();
            Ok(())
        })
        .unwrap();
}

#[test]
fn metrics_survive_arbitrary_bytes_and_damage() {
    let run = Run::new();
    runner()
        .run(&(arbitrary_bytes(), edits()), |(bytes, edits)| {
            run.write("metrics.jsonl", &bytes);
            run.read_metrics();
            run.write("metrics.jsonl", &mutate(&run.metrics, &edits));
            run.read_metrics();
            Ok(())
        })
        .unwrap();
}

fn runner() -> TestRunner {
    // A manual runner knows no source file to save failing cases beside; the failure's
    // message prints the minimal case instead.
    TestRunner::new(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(CASES)
    })
}
