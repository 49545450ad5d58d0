//! Kill and resume, over and over: `film-train train` of the `tiny` preset on the fixture,
//! SIGKILLed at seeded random moments and resumed after each kill, must end with the
//! weights of an uninterrupted run. After every kill the run directory must load, and the
//! checkpoint must be at most one checkpoint interval behind the furthest evaluation the
//! killed sessions reached.
//!
//! Ignored by `cargo test` (it trains the run twice over); `.ci/run` runs it with
//! `cargo test --workspace --test soak -- --ignored`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use film_train::run_dir::{RunDir, RunState};

mod support;
use support::fixture_copy;

/// The randomness of the kill moments; printed with every failure, so that one can be
/// replayed (where a kill lands also depends on the machine's speed and load).
const SEED: u64 = 0x5EED_0021;
const KILLS: usize = 24;
/// Long enough that every kill lands inside training, not after the run finished.
const EPOCHS: u64 = 120;
/// Kill moments are uniform from a session's start to this fraction of the uninterrupted
/// run's time: from before the data is loaded to several epochs in, and on any machine
/// the killed sessions together cover about half the run, leaving the rest to resume.
const MAX_DELAY_SHARE: f64 = 1.0 / 24.0;

/// SplitMix64: the kill moments need a few seeded numbers, not a generator's guarantees.
struct Moments(u64);

impl Moments {
    /// A delay uniform in 0..max.
    fn next_delay(&mut self, max: Duration) -> Duration {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        max.mul_f64((z >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Starts `film-train train` on `data` into `run`, its stderr kept in `log`.
fn start(data: &Path, run: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_film-train"))
        .args(["train", "--preset", "tiny", "--seed", "5", "--quiet", "--epochs"])
        .arg(EPOCHS.to_string())
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(run)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .expect("the film-train binary starts")
}

/// The model checkpoint `state.json` names, tensor by tensor.
fn checkpoint(run: &Path) -> (RunState, std::collections::HashMap<String, Tensor>) {
    let dir = RunDir::open(run).unwrap();
    let state = dir
        .read_state()
        .unwrap()
        .expect("a finished run has a checkpoint");
    let (model, _) = dir.checkpoint_paths(&state);
    (
        state,
        candle_core::safetensors::load(model, &Device::Cpu).unwrap(),
    )
}

/// Steps between checkpoints: one at every epoch's end, and every `eval_every` steps.
fn checkpoint_interval(data: &Path) -> u64 {
    let questions: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("questions/CLEVR_train_questions.json")).unwrap())
            .unwrap();
    let training = film_train::presets::by_name("tiny").unwrap().training;
    let batches = questions["questions"]
        .as_array()
        .unwrap()
        .len()
        .div_ceil(training.batch_size);
    batches.min(training.eval_every) as u64
}

/// What a killed run's directory holds: its checkpoint's step, if it has one, and the
/// furthest step its metrics recorded. Fails if anything written is unreadable.
fn inspect(run: &Path, context: &str) -> (Option<u64>, u64) {
    if !run.join("config.json").exists() {
        // Killed before the new run wrote its configuration: nothing to load yet.
        assert!(
            !run.join("state.json").exists(),
            "{context}: state.json without config.json"
        );
        return (None, 0);
    }
    let dir = RunDir::open(run).unwrap_or_else(|e| panic!("{context}: {e:#}"));
    dir.read_config().unwrap_or_else(|e| panic!("{context}: {e:#}"));
    let reached = match dir.metrics_path().exists() {
        true => film_train::metrics_file::read(&dir.metrics_path())
            .unwrap_or_else(|e| panic!("{context}: {e}"))
            .iter()
            .filter_map(|(_, record)| record["step"].as_u64())
            .max()
            .unwrap_or(0),
        false => 0,
    };
    let Some(state) = dir.read_state().unwrap_or_else(|e| panic!("{context}: {e:#}")) else {
        return (None, reached);
    };
    let (model, optimizer) = dir.checkpoint_paths(&state);
    for path in [model, optimizer] {
        candle_core::safetensors::load(&path, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{context}: {}: {e}", path.display()));
    }
    (Some(state.step), reached)
}

#[test]
#[ignore = "a kill/resume soak that trains the run twice over; .ci/run runs it"]
fn killed_and_resumed_training_ends_with_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_copy(dir.path());
    let interval = checkpoint_interval(&data);
    let log = |name: &str| -> PathBuf { dir.path().join(format!("{name}.log")) };
    let tail = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();

    let straight = dir.path().join("straight");
    let started = Instant::now();
    let status = start(&data, &straight, &log("straight")).wait().unwrap();
    assert!(
        status.success(),
        "uninterrupted run: {status}\n{}",
        tail(&log("straight"))
    );
    let max_delay = started.elapsed().mul_f64(MAX_DELAY_SHARE);

    let soaked = dir.path().join("soaked");
    let mut moments = Moments(SEED);
    let (mut last_step, mut kills) = (0u64, 0usize);
    // The checkpoint step after each session, printed with --nocapture and in failures.
    let mut trajectory = Vec::new();
    for session in 0..KILLS {
        let context = format!("seed {SEED:#x}, session {session}");
        let session_log = log(&format!("session-{session}"));
        let mut child = start(&data, &soaked, &session_log);
        std::thread::sleep(moments.next_delay(max_delay));
        match child.try_wait().unwrap() {
            Some(status) => assert!(status.success(), "{context}: {status}\n{}", tail(&session_log)),
            None => {
                child.kill().unwrap(); // SIGKILL on Unix
                child.wait().unwrap();
                kills += 1;
            }
        }
        let (step, reached) = inspect(&soaked, &context);
        let step = step.unwrap_or(0);
        assert!(
            step >= last_step,
            "{context}: the checkpoint went back from step {last_step} to {step}"
        );
        assert!(
            step + interval >= reached,
            "{context}: checkpoint at step {step}, but an evaluation at step {reached} was recorded: \
             more than one checkpoint interval ({interval} steps) lost"
        );
        last_step = step;
        trajectory.push(step);
    }
    println!("seed {SEED:#x}: {kills} kills; checkpoint step after each session: {trajectory:?}");
    assert!(
        kills >= 20,
        "only {kills} sessions were killed; the rest ended by themselves"
    );
    assert!(
        last_step < EPOCHS * interval,
        "the run finished during the kills ({trajectory:?}): nothing left to resume"
    );

    let status = start(&data, &soaked, &log("last")).wait().unwrap();
    assert!(status.success(), "last session: {status}\n{}", tail(&log("last")));
    let (state_a, a) = checkpoint(&straight);
    let (state_b, b) = checkpoint(&soaked);
    assert!(state_b.finished);
    assert_eq!((state_a.step, state_a.epoch), (state_b.step, state_b.epoch));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let same = t
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "seed {SEED:#x}: tensor {name} differs from the uninterrupted run's"
        );
    }
}
