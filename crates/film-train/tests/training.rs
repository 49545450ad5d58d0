//! End-to-end training on the tiny CLEVR-format fixture: the model learns, and a resumed
//! run ends with exactly the weights of an uninterrupted one.

use std::path::Path;

use candle_core::Device;
use film_train::fresh_questions::{FirstStages, FreshQuestions};
use film_train::presets;
use film_train::train::{train, TrainRequest};

mod support;
use support::{fixture, fixture_copy};

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
        features_dir: None,
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
    assert_resume_is_exact(request);
}

/// Fresh questions each epoch, asked in groups of two per image.
fn fresh_request(out: &Path, cache: &Path, epochs: usize) -> TrainRequest {
    let mut r = request(out, cache, epochs);
    r.preset.training.fresh_questions = Some(6);
    r.preset.training.questions_per_image = 2;
    r
}

#[test]
fn fresh_questions_change_every_epoch_and_resume_exactly() {
    assert_resume_is_exact(fresh_request);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train(&fresh_request(&run, &dir.path().join("cache"), 2), &Device::Cpu).unwrap();
    let files = clevr::layout::SplitFiles::clevr(&fixture(), clevr::layout::Release::V1, "train").unwrap();
    let fresh = FreshQuestions::new(
        film_train::data::read_scenes(&files, "the test").unwrap(),
        &(0..3)
            .map(|i| format!("CLEVR_train_{i:06}.png"))
            .collect::<Vec<_>>(),
        6,
        FirstStages::default(),
        7,
    )
    .unwrap();
    assert_eq!(fresh.scene_count(), 3);
    let (a, b) = (fresh.questions(0), fresh.questions(1));
    assert!(!a.is_empty() && a.len() <= 18, "{} questions", a.len());
    assert_eq!(
        a,
        fresh.questions(0),
        "an epoch's questions depend on the seed and epoch only"
    );
    assert_ne!(a, b, "the next epoch asks other questions");
    // The fixture's train file has 39 questions, the fresh epochs at most 18 each: the
    // run's steps are those of the fresh epochs.
    let vocab = clevr::vocab::Vocabulary::load(&run).unwrap();
    let batch = presets::by_name("tiny").unwrap().training.batch_size;
    let expected: usize = (0..2)
        .map(|e| fresh.question_set(e, &vocab).unwrap().len().div_ceil(batch))
        .sum();
    let m = metrics(&run);
    assert_eq!(m[m.len() - 1]["step"].as_u64().unwrap(), expected as u64);
}

/// Fresh questions whose first epoch asks lookups alone, whose second asks lookups
/// directly or across one relation, and whose third asks questions without relations.
fn stages_first_request(out: &Path, cache: &Path, epochs: usize) -> TrainRequest {
    let mut r = fresh_request(out, cache, epochs);
    r.preset.training.lookups_first = 1;
    r.preset.training.relations_first = 1;
    r.preset.training.zero_hop_first = 1;
    r
}

#[test]
fn lookups_then_relations_then_zero_hop_first_then_everything_and_resume_exactly() {
    assert_resume_is_exact(stages_first_request);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train(
        &stages_first_request(&run, &dir.path().join("cache"), 4),
        &Device::Cpu,
    )
    .unwrap();
    // Evaluations are marked with the stage the model has been trained in so far, and
    // not after the stages. An epoch here is a step or two, so the evaluations come at the
    // epochs' ends, each recorded with the number of epochs done.
    let m = metrics(&run);
    let marked = |r: &serde_json::Value, key: &str| r.get(key) == Some(&serde_json::Value::Bool(true));
    let done: Vec<u64> = m.iter().map(|r| r["epoch"].as_u64().unwrap()).collect();
    assert_eq!(done, [1, 2, 3, 4], "{m:?}");
    let marks: Vec<[bool; 3]> = m
        .iter()
        .map(|r| ["lookups_only", "relation_lookups_only", "zero_hop_only"].map(|key| marked(r, key)))
        .collect();
    let expected = [
        [true, false, false],
        [false, true, false],
        [false, false, true],
        [false, false, false],
    ];
    assert_eq!(marks, expected, "{m:?}");
    let files = clevr::layout::SplitFiles::clevr(&fixture(), clevr::layout::Release::V1, "train").unwrap();
    let images: Vec<String> = (0..3).map(|i| format!("CLEVR_train_{i:06}.png")).collect();
    let scenes = film_train::data::read_scenes(&files, "the test").unwrap();
    let stages = FirstStages {
        lookups: 1,
        relations: 1,
        zero_hop: 1,
    };
    let fresh = FreshQuestions::new(scenes.clone(), &images, 6, stages, 7).unwrap();
    let plain = FreshQuestions::new(scenes, &images, 6, FirstStages::default(), 7).unwrap();
    let functions = |q: &clevr::Question| -> Vec<String> {
        q.program
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.function.clone())
            .collect()
    };
    let is_lookup = |q: &clevr::Question| {
        let f = functions(q);
        f.last().unwrap().starts_with("query_")
            && f.iter().all(|f| {
                ["scene", "unique", "filter_", "query_"]
                    .iter()
                    .any(|p| f.starts_with(p))
            })
    };
    let relations = |q: &clevr::Question| functions(q).iter().filter(|f| *f == "relate").count();
    let is_relation_lookup = |q: &clevr::Question| {
        let f = functions(q);
        f.last().unwrap().starts_with("query_")
            && relations(q) <= 1
            && f.iter().all(|f| {
                ["scene", "unique", "filter_", "query_", "relate"]
                    .iter()
                    .any(|p| f.starts_with(p))
            })
    };
    let is_zero_hop = |q: &clevr::Question| {
        functions(q)
            .iter()
            .all(|f| f != "relate" && !f.starts_with("same_") && f != "union" && f != "intersect")
    };
    let first = fresh.questions(0);
    assert!(first.len() > 3, "{} lookups about 3 scenes", first.len());
    assert!(first.iter().all(is_lookup), "epoch 0 asks lookups alone");
    let second = fresh.questions(1);
    assert!(
        second.len() > 3,
        "{} relation lookups about 3 scenes",
        second.len()
    );
    assert!(
        second.iter().all(is_relation_lookup),
        "epoch 1 asks relation lookups alone"
    );
    assert!(
        second.iter().any(|q| relations(q) == 1),
        "epoch 1 asks across a relation"
    );
    assert!(
        second.iter().any(|q| relations(q) == 0),
        "epoch 1 asks plain lookups too"
    );
    let third = fresh.questions(2);
    assert!(
        third.len() > 3,
        "{} zero-hop questions about 3 scenes",
        third.len()
    );
    assert!(third.iter().all(is_zero_hop), "epoch 2 asks no relation");
    assert!(!third.iter().all(is_lookup), "epoch 2 asks more than lookups");
    let fourth = fresh.questions(3);
    assert_eq!(
        fourth,
        plain.questions(3),
        "from epoch 3 on, the questions of a run without stages"
    );
    assert!(!fourth.iter().all(is_zero_hop));
    assert_eq!(
        fresh.every_kind(),
        plain.questions(0),
        "the vocabulary sees every kind"
    );
}

/// A warmup over the first steps and a weight average evaluated in place of the weights.
fn averaged_request(out: &Path, cache: &Path, epochs: usize) -> TrainRequest {
    let mut r = request(out, cache, epochs);
    r.preset.training.warmup_steps = 5;
    r.preset.training.weight_average = Some(0.9);
    r.preset.training.score_trained_weights = true;
    r
}

#[test]
fn warmup_and_weight_average_resume_exactly_and_leave_training_alone() {
    assert_resume_is_exact(averaged_request);

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (averaged, plain) = (dir.path().join("averaged"), dir.path().join("plain"));
    train(&averaged_request(&averaged, &cache, 4), &Device::Cpu).unwrap();
    let mut without = averaged_request(&plain, &cache, 4);
    without.preset.training.weight_average = None;
    train(&without, &Device::Cpu).unwrap();
    // The average is only evaluated: the trained weights are those of the run without it.
    assert_eq!(last_checkpoint(&averaged), last_checkpoint(&plain));
    let (m, n) = (metrics(&averaged), metrics(&plain));
    assert_eq!(m.len(), n.len());
    for (a, p) in m.iter().zip(&n) {
        // Each evaluation also scores the trained weights, which the plain run scored.
        assert_eq!(a["trained_weights"]["overall"], p["overall"]);
        assert_eq!(a["train_loss"], p["train_loss"]);
    }
    // And the score recorded is the average's, which is not the trained weights'.
    assert!(
        m.iter().any(|r| r["overall"] != r["trained_weights"]["overall"]),
        "every evaluation scored the trained weights"
    );
    let optimizer = std::fs::read_dir(&averaged)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("optimizer-"))
        .unwrap();
    let saved = candle_core::safetensors::load(optimizer, &Device::Cpu).unwrap();
    assert!(saved.contains_key("average.updates"));
    let trained = last_checkpoint(&averaged);
    let differs = trained.iter().any(|(name, weights)| {
        let average = saved[&format!("average.{name}")].flatten_all().unwrap();
        average.to_vec1::<f32>().unwrap() != *weights
    });
    assert!(differs, "the saved average equals the trained weights");
}

/// The stem frozen from epoch 2 on.
fn frozen_stem_request(out: &Path, cache: &Path, epochs: usize) -> TrainRequest {
    let mut r = request(out, cache, epochs);
    r.preset.training.freeze_stem_after = Some(2);
    r
}

#[test]
fn a_frozen_stem_stays_as_it_was_when_frozen_and_the_run_resumes_exactly() {
    assert_resume_is_exact(frozen_stem_request);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (at_freeze, after) = (dir.path().join("at_freeze"), dir.path().join("after"));
    train(&frozen_stem_request(&at_freeze, &cache, 2), &Device::Cpu).unwrap();
    train(&frozen_stem_request(&after, &cache, 5), &Device::Cpu).unwrap();
    let (frozen, later) = (last_checkpoint(&at_freeze), last_checkpoint(&after));
    let stem: Vec<&String> = frozen.keys().filter(|n| n.starts_with("network.stem.")).collect();
    assert!(stem.iter().any(|n| n.ends_with("running_var")), "{stem:?}");
    for name in stem {
        assert_eq!(frozen[name], later[name], "{name} changed after the freeze");
    }
    let trained = frozen
        .keys()
        .filter(|n| n.starts_with("network.blocks."))
        .filter(|n| frozen[*n] != later[*n])
        .count();
    assert!(trained > 0, "the blocks did not train after the freeze");
}

/// The learning rate decaying to zero over the second half of the epochs.
fn decaying_request(out: &Path, cache: &Path, epochs: usize) -> TrainRequest {
    let mut r = request(out, cache, epochs);
    r.preset.training.lr_decay_from = Some(0.5);
    r
}

#[test]
fn a_decaying_learning_rate_changes_training_and_resumes_exactly_mid_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (straight, resumed, plain) = (
        dir.path().join("straight"),
        dir.path().join("resumed"),
        dir.path().join("plain"),
    );
    train(&decaying_request(&straight, &cache, 4), &Device::Cpu).unwrap();
    // A budget of no time stops the first session after its first step, inside the
    // first epoch; the second session resumes under the straight run's budget.
    let mut interrupted = decaying_request(&resumed, &cache, 4);
    interrupted.minutes = Some(1e-9);
    let first = train(&interrupted, &Device::Cpu).unwrap();
    assert_eq!((first.state.step, first.state.epoch), (1, 0));
    let outcome = train(&decaying_request(&resumed, &cache, 4), &Device::Cpu).unwrap();
    assert_eq!(outcome.state.epoch, 4);
    assert_eq!(last_checkpoint(&straight), last_checkpoint(&resumed));

    let mut without = decaying_request(&plain, &cache, 4);
    without.preset.training.lr_decay_from = None;
    train(&without, &Device::Cpu).unwrap();
    assert_ne!(last_checkpoint(&straight), last_checkpoint(&plain));
    let config = std::fs::read_to_string(straight.join("config.json")).unwrap();
    assert!(config.contains("\"lr_decay_from\": 0.5"), "{config}");
    let config = std::fs::read_to_string(plain.join("config.json")).unwrap();
    assert!(!config.contains("lr_decay_from"), "{config}");
}

/// About half of the images mirrored every epoch.
fn mirrored_request(out: &Path, cache: &Path, epochs: usize) -> TrainRequest {
    let mut r = request(out, cache, epochs);
    r.preset.training.mirror = true;
    r
}

#[test]
fn mirrored_training_resumes_exactly_and_adds_the_word_it_swaps_in() {
    assert_resume_is_exact(mirrored_request);

    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (mirrored, plain) = (dir.path().join("mirrored"), dir.path().join("plain"));
    train(&mirrored_request(&mirrored, &cache, 1), &Device::Cpu).unwrap();
    let mut without = mirrored_request(&plain, &cache, 1);
    without.preset.training.mirror = false;
    train(&without, &Device::Cpu).unwrap();
    // The fixture's training questions say "left" but never "right".
    let has_right = |run: &Path| {
        let vocab = clevr::vocab::Vocabulary::load(run).unwrap();
        vocab.questions.id("right").is_some()
    };
    assert!(has_right(&mirrored));
    assert!(!has_right(&plain));
}

#[test]
fn feature_maps_cannot_be_mirrored() {
    let dir = tempfile::tempdir().unwrap();
    let features = dir.path().join("features");
    write_features(&features);
    let mut request = features_request(&dir.path().join("run"), &features, 8);
    request.preset.training.mirror = true;
    let err = format!(
        "{:#}",
        train(&request, &Device::Cpu).err().expect("features mirrored")
    );
    assert!(err.contains("mirroring needs pixels"), "{err}");
}

/// A dataset the embedded generator renders: 4 training and 2 validation scenes at 96x64,
/// whose `pixel_coords` match their images (the hand-drawn fixture's do not).
fn generated_dataset(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("generated");
    let config = clevr_synth::dataset::GenerateConfig {
        out: out.clone(),
        train_images: 4,
        val_images: 2,
        width: 96,
        height: 64,
        ..clevr_synth::dataset::GenerateConfig::default()
    };
    clevr_synth::dataset::generate(&config, &indicatif::ProgressBar::hidden()).unwrap();
    out
}

/// `tiny` on the generated dataset with every scene-graph switch: the perception head,
/// the answer-attention head, the intermediate-answer, referent and relation-set heads,
/// mirrored images; fresh questions or the file's.
fn scene_request(data: &Path, fresh: bool) -> impl Fn(&Path, &Path, usize) -> TrainRequest + '_ {
    move |out, cache, epochs| {
        let mut r = request(out, cache, epochs);
        r.data = data.to_path_buf();
        let (model, training) = (&mut r.preset.model, &mut r.preset.training);
        model.perception_head = true;
        training.perception_weight = 1.0;
        model.attention_head = true;
        training.attention_weight = 1.0;
        model.intermediate_heads = true;
        training.intermediate_weight = 1.0;
        model.referent_heads = true;
        training.referent_weight = 1.0;
        model.relation_set_heads = true;
        training.relation_set_weight = 1.0;
        training.mirror = true;
        training.questions_per_image = 2;
        training.fresh_questions = fresh.then_some(6);
        r
    }
}

#[test]
fn attention_intermediate_referent_and_perception_targets_train_and_resume_exactly_with_mirrored_images() {
    let dir = tempfile::tempdir().unwrap();
    let data = generated_dataset(dir.path());
    for fresh in [true, false] {
        assert_resume_is_exact(scene_request(&data, fresh));
    }
    // The heads are trained: their weights move from their initial values.
    let run = dir.path().join("run");
    let cache = dir.path().join("cache");
    train(&scene_request(&data, false)(&run, &cache, 1), &Device::Cpu).unwrap();
    let heads = [
        "attention.weight",
        "intermediate.first.weight",
        "intermediate.second.weight",
        "referents.first_color.weight",
        "referents.second_size.weight",
        // The second relation-set head needs a question with two relations, which
        // this dataset's 40 questions need not have.
        "relation_sets.first.weight",
    ];
    let first = last_checkpoint(&run);
    train(&scene_request(&data, false)(&run, &cache, 3), &Device::Cpu).unwrap();
    let later = last_checkpoint(&run);
    for head in heads {
        assert_ne!(later[head], first[head], "{head}");
    }
}

/// The last checkpoint's weights, flattened, by name.
fn last_checkpoint(run: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    let step = state["step"].as_u64().unwrap();
    candle_core::safetensors::load(run.join(format!("model-{step:08}.safetensors")), &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

fn assert_resume_is_exact(request: impl Fn(&Path, &Path, usize) -> TrainRequest) {
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

/// `tiny` reading pre-extracted feature maps of `channels` x 4 x 4 instead of pixels.
fn features_request(out: &Path, features: &Path, channels: usize) -> TrainRequest {
    let mut preset = presets::by_name("tiny").unwrap();
    preset.model.vision.stem = film_vision::Stem::Features {
        in_channels: channels,
    };
    TrainRequest {
        features_dir: Some(features.to_path_buf()),
        preset,
        ..request(out, &out.with_extension("cache"), 40)
    }
}

/// Feature files for the fixture's train (3 images) and val (2 images) splits, 8 x 4 x 4
/// maps of distinct values per image.
fn write_features(dir: &Path) {
    use clevr::features::{write_npy, FeatureDType};
    std::fs::create_dir_all(dir).unwrap();
    for (split, rows) in [("train", 3), ("val", 2)] {
        let values: Vec<f32> = (0..rows * 8 * 16)
            .map(|i| ((i * 7919) % 113) as f32 / 56.0 - 1.0)
            .collect();
        let path = dir.join(format!("{split}_features.npy"));
        write_npy(&path, &[rows, 8, 4, 4], FeatureDType::F16, &values).unwrap();
    }
}

#[test]
fn features_model_overfits_the_fixture_from_npy_files() {
    let dir = tempfile::tempdir().unwrap();
    let features = dir.path().join("features");
    write_features(&features);
    let run = dir.path().join("run");
    let outcome = train(&features_request(&run, &features, 8), &Device::Cpu).unwrap();
    assert!(outcome.state.finished);
    let m = metrics(&run);
    let loss = |r: &serde_json::Value| r["train_loss"].as_f64().unwrap();
    let (first, last) = (loss(&m[0]), loss(&m[m.len() - 1]));
    assert!(last < 0.3 * first, "loss {first} -> {last}");
    assert!(
        m[m.len() - 1]["overall"].as_f64().is_some(),
        "validation ran on val_features.npy"
    );
}

#[test]
fn features_of_the_wrong_shape_or_missing_are_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let features = dir.path().join("features");
    write_features(&features);
    let err = train(
        &features_request(&dir.path().join("a"), &features, 16),
        &Device::Cpu,
    )
    .err()
    .expect("16 channels asked, 8 stored");
    let err = format!("{err:#}");
    assert!(
        err.contains("train_features.npy: header field 'shape': feature maps of 8 x 4 x 4, but the model's features stem reads 16 channels"),
        "{err}"
    );
    let missing = dir.path().join("nowhere");
    let err = train(
        &features_request(&dir.path().join("b"), &missing, 8),
        &Device::Cpu,
    )
    .err()
    .expect("no feature files");
    let err = format!("{err:#}");
    assert!(
        err.contains("nowhere/train_features.npy: cannot open the feature file"),
        "{err}"
    );
}

/// Keeps the first `keep` questions of the copy's training questions file.
fn keep_train_questions(data: &Path, keep: usize) {
    let path = data.join("questions/CLEVR_train_questions.json");
    let mut file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    file["questions"].as_array_mut().unwrap().truncate(keep);
    std::fs::write(&path, file.to_string()).unwrap();
}

/// Runs `f` on a thread of its own and fails the test if it has not returned after
/// `seconds`, so that a training loop that never ends is a failure, not a hung test.
fn within<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(f()).unwrap());
    receive
        .recv_timeout(std::time::Duration::from_secs(seconds))
        .unwrap_or_else(|_| panic!("still running after {seconds} s: the training loop does not end"))
}

#[test]
fn an_epoch_without_batches_is_an_error_not_an_endless_loop() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_copy(dir.path());
    let run = dir.path().join("run");
    let cache = dir.path().join("cache");
    let mut first = request(&run, &cache, 1);
    first.data = data.clone();
    train(&first, &Device::Cpu).unwrap();
    // As if the run had been killed after two of its three batches of epoch 1.
    let state_path = run.join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["batches_done_in_epoch"] = 2.into();
    std::fs::write(&state_path, state.to_string()).unwrap();

    // Under a time budget: the clock only moves while batches train.
    let resume = |run: &Path, cache: &Path, data: &Path| {
        let mut r = request(run, cache, 1);
        r.data = data.to_path_buf();
        r.epochs = None;
        r.minutes = Some(0.5);
        within(120, move || {
            train(&r, &Device::Cpu).err().map(|e| format!("{e:#}"))
        })
    };
    // The dataset shrank to one batch of 16 questions.
    keep_train_questions(&data, 10);
    let err = resume(&run, &cache, &data).expect("a shrunk dataset is an error");
    assert!(
        err.contains("stopped after batch 2 of epoch 1, but split \"train\" now makes only 1 batches of 16 from 10 questions"),
        "{err}"
    );
    keep_train_questions(&data, 0);
    let err = resume(&run, &cache, &data).expect("an empty split is an error");
    assert!(
        err.contains("epoch 1 of split \"train\" has no batches: the questions file holds no questions"),
        "{err}"
    );
}

/// `eval --questions`: another questions file about the validation images, in the official
/// generator's raw form, is scored, and its words outside the run's vocabulary counted.
#[test]
fn eval_scores_another_questions_file_about_the_split_images() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_copy(dir.path());
    let run = dir.path().join("run");
    let mut trained = request(&run, &dir.path().join("cache"), 1);
    trained.data = data.clone();
    train(&trained, &Device::Cpu).unwrap();

    let mut file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("questions/CLEVR_val_questions.json")).unwrap(),
    )
    .unwrap();
    let questions = file["questions"].as_array_mut().unwrap();
    let kept = questions.len() - 1;
    questions.truncate(kept);
    for q in questions.iter_mut() {
        // The raw output's spelling: no split, `type` / `side_inputs` in programs, answers
        // as JSON values.
        q.as_object_mut().unwrap().remove("split");
        let answer = q["answer"].as_str().unwrap().to_string();
        q["answer"] = match answer.as_str() {
            "yes" => true.into(),
            "no" => false.into(),
            other => other.parse::<u64>().map_or(other.into(), Into::into),
        };
    }
    let text = questions[0]["question"]
        .as_str()
        .unwrap()
        .replace("How many", "How zorbly many");
    questions[0]["question"] = text.into();
    let other = dir.path().join("other_questions.json");
    std::fs::write(&other, serde_json::to_string(&file).unwrap()).unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_film-train"))
        .args([
            "eval",
            "--run",
            run.to_str().unwrap(),
            "--questions",
            other.to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "1 of {kept} questions have words outside the run's vocabulary"
        )),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["n"].as_u64(), Some(kept as u64), "{summary}");
}
