//! End to end over the tiny CLEVR-format sample in `fixtures/clevr-mini`:
//! vocabulary → question set → image cache → batches, and verification.

use clevr::batch::{BatchConfig, Batcher};
use clevr::cache::{CacheConfig, CacheStatus, ImageCache};
use clevr::dataset::{build_vocabulary, LoadOptions, QuestionSet, SkipReason, NO_ANSWER, NO_TYPE};
use clevr::image::{Filter, ImageConfig, Normalization};
use clevr::layout::{Release, SplitFiles};
use clevr::verify::{verify, Problem};
use clevr::vocab::{AnswerIndex, TokenizerConfig, Vocabulary};
use clevr::QuestionType;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clevr-mini")
}

fn split(name: &str) -> SplitFiles {
    SplitFiles::clevr(&fixture_root(), Release::V1, name).unwrap()
}

#[test]
fn train_vocabulary_loads_val_and_batches_it() {
    let vocab = build_vocabulary(&split("train"), TokenizerConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    vocab.save(dir.path()).unwrap();
    let vocab = Vocabulary::load(dir.path()).unwrap();
    assert_eq!(vocab.questions.id("<NULL>"), Some(0));
    assert!(vocab.answers.id("yes").is_some());

    let val = split("val");
    let (set, report) = QuestionSet::load(&val, &vocab, LoadOptions::default()).unwrap();
    assert_eq!(report.read, 26);
    assert_eq!(report.kept, set.len());
    assert!(report.skipped.is_empty(), "{report}");
    assert!(set.programs.is_none());
    let types: std::collections::BTreeSet<_> = (0..set.len()).filter_map(|i| set.question_type(i)).collect();
    assert_eq!(
        types.len(),
        5,
        "the fixture covers all five question types: {types:?}"
    );
    assert_eq!(set.images, ["CLEVR_val_000000.png", "CLEVR_val_000001.png"]);
    let first = set.question_tokens(0);
    assert_eq!((first[0], *first.last().unwrap()), (1, 2));

    let image = ImageConfig {
        width: 16,
        height: 12,
        filter: Filter::Bicubic,
        normalization: Normalization::IMAGENET,
    };
    let cache = CacheConfig {
        progress: false,
        ..CacheConfig::new(dir.path().join("cache"))
    };
    let (images, status) = ImageCache::open_or_build(&val, &set.images, &image, &cache).unwrap();
    assert!(matches!(status, CacheStatus::Built { .. }));
    let config = BatchConfig {
        batch_size: 8,
        seed: 3,
        ..BatchConfig::default()
    };
    let batcher = Batcher::new(Arc::new(set), Arc::new(images), image.normalization, config).unwrap();
    let batches: Vec<_> = batcher.epoch(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.len(), 4);
    // Two val images: each batch holds them once, whatever its number of questions.
    assert_eq!(batches[0].images.dims(), [2, 3, 12, 16]);
    assert_eq!(batches[0].question_images().unwrap().dims(), [8, 3, 12, 16]);
    assert_eq!(batches[3].questions.dims()[0], 2);
    assert!(batches.iter().all(|b| b.answers.is_some()));
}

#[test]
fn answers_outside_the_index_are_skipped_and_reported() {
    let mut vocab = build_vocabulary(&split("train"), TokenizerConfig::default()).unwrap();
    vocab.answers = AnswerIndex::build(["yes", "no"]);
    let (set, report) = QuestionSet::load(&split("val"), &vocab, LoadOptions::default()).unwrap();
    assert_eq!(report.read, report.kept + report.skipped.len());
    assert!(!report.skipped.is_empty());
    assert!(report.skipped.iter().all(
        |s| matches!(&s.reason, SkipReason::UnknownAnswer { answer } if answer != "yes" && answer != "no")
    ));
    assert!(set.answers.iter().all(|&a| a < 2));
    assert!(
        report.to_string().contains("is not in the answer index"),
        "{report}"
    );
}

#[test]
fn test_split_has_no_answers_programs_or_types() {
    let vocab = build_vocabulary(&split("train"), TokenizerConfig::default()).unwrap();
    let options = LoadOptions { keep_programs: true };
    let (set, _) = QuestionSet::load(&split("test"), &vocab, options).unwrap();
    assert_eq!(set.len(), 12);
    assert!(set.answers.iter().all(|&a| a == NO_ANSWER));
    assert!(set.types.iter().all(|&t| t == NO_TYPE));
    assert!(set.programs.as_ref().unwrap().iter().all(Vec::is_empty));
}

#[test]
fn kept_programs_give_the_question_types() {
    let vocab = build_vocabulary(&split("train"), TokenizerConfig::default()).unwrap();
    let options = LoadOptions { keep_programs: true };
    let (set, _) = QuestionSet::load(&split("train"), &vocab, options).unwrap();
    let programs = set.programs.as_ref().unwrap();
    for (i, program) in programs.iter().enumerate() {
        assert_eq!(set.question_type(i), QuestionType::of_program(program));
    }
}

#[test]
fn verify_agrees_on_the_fixture_and_catches_a_wrong_answer() {
    for name in ["train", "val"] {
        let report = verify(&split(name)).unwrap();
        assert!(report.passed(), "{report}");
        assert_eq!(report.matched, report.questions);
    }
    let test = verify(&SplitFiles {
        scenes: split("val").scenes,
        ..split("test")
    })
    .unwrap();
    assert!(!test.passed(), "nothing checked is not a pass");
    assert_eq!(test.unverifiable, 12);

    // Copy val and change one answer.
    let dir = tempfile::tempdir().unwrap();
    let val = split("val");
    std::fs::create_dir_all(dir.path().join("questions")).unwrap();
    std::fs::create_dir_all(dir.path().join("scenes")).unwrap();
    let text = std::fs::read_to_string(&val.questions).unwrap();
    let changed = text.replacen("\"answer\":\"1\"", "\"answer\":\"7\"", 1);
    assert_ne!(text, changed);
    let copy = SplitFiles::clevr(dir.path(), Release::V1, "val").unwrap();
    std::fs::write(&copy.questions, changed).unwrap();
    std::fs::copy(val.scenes.as_ref().unwrap(), copy.scenes.as_ref().unwrap()).unwrap();
    let report = verify(&copy).unwrap();
    assert!(!report.passed());
    assert_eq!(report.mismatches.len(), 1);
    assert!(matches!(
        &report.mismatches[0].problem,
        Problem::WrongAnswer { expected, executed } if expected == "7" && executed == "1"
    ));
    assert!(report.to_string().contains("program gives \"1\""), "{report}");
}

#[test]
fn missing_files_say_what_was_expected_where() {
    let files = SplitFiles::clevr(Path::new("/nonexistent/clevr"), Release::V1, "val").unwrap();
    let vocab = build_vocabulary(&split("train"), TokenizerConfig::default()).unwrap();
    let err = QuestionSet::load(&files, &vocab, LoadOptions::default()).unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("/nonexistent/clevr/questions/CLEVR_val_questions.json"),
        "{shown}"
    );
    assert!(shown.contains("CLEVR questions JSON"), "{shown}");
    let err = verify(&files).unwrap_err().to_string();
    assert!(
        err.contains("CLEVR_val_scenes.json") && err.contains("scenes JSON"),
        "{err}"
    );
}

#[test]
fn humans_questions_load_against_clevr_images_with_an_expanded_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let humans = r#"{"questions": [
        {"image_index": 0, "image_filename": "CLEVR_val_000000.png", "split": "val",
         "question": "What colour is the ball closest to the cube?", "answer": "red"},
        {"image_index": 1, "image_filename": "CLEVR_val_000001.png", "split": "val",
         "question": "are there two yellow things", "answer": "yes"}]}"#;
    std::fs::write(dir.path().join("CLEVR-Humans-val.json"), humans).unwrap();
    let files = SplitFiles::humans(dir.path(), &fixture_root(), "val").unwrap();
    assert!(verify(&files).is_err(), "Humans has no scenes to verify against");

    let mut vocab = build_vocabulary(&split("train"), TokenizerConfig::default()).unwrap();
    vocab.answers = AnswerIndex::build(["red", "yes", "no"]);
    let before = vocab.questions.len();
    let (set, _) = QuestionSet::load(&files, &vocab, LoadOptions::default()).unwrap();
    let unk = |set: &QuestionSet| set.tokens.iter().filter(|&&t| t == clevr::vocab::UNK_ID).count();
    assert!(unk(&set) > 0, "unseen Humans words are <UNK> before expansion");
    let texts = [
        "What colour is the ball closest to the cube?",
        "are there two yellow things",
    ];
    let added = vocab.questions.expand(texts).unwrap();
    assert_eq!(vocab.questions.len(), before + added);
    let (set, report) = QuestionSet::load(&files, &vocab, LoadOptions::default()).unwrap();
    assert_eq!((report.kept, unk(&set)), (2, 0));
    assert!(set.types.iter().all(|&t| t == NO_TYPE), "no programs, no types");
    assert_eq!(
        files.image_path(&set.images[1]).unwrap(),
        fixture_root().join("images/val/CLEVR_val_000001.png")
    );
}

#[test]
fn verify_lists_questions_whose_scene_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let val = split("val");
    let copy = SplitFiles::clevr(dir.path(), Release::V1, "val").unwrap();
    std::fs::create_dir_all(copy.questions.parent().unwrap()).unwrap();
    std::fs::create_dir_all(copy.scenes.as_ref().unwrap().parent().unwrap()).unwrap();
    let text = std::fs::read_to_string(&val.questions).unwrap();
    std::fs::write(
        &copy.questions,
        text.replacen("\"image_index\":1", "\"image_index\":5", 1),
    )
    .unwrap();
    std::fs::copy(val.scenes.as_ref().unwrap(), copy.scenes.as_ref().unwrap()).unwrap();
    let report = verify(&copy).unwrap();
    assert_eq!(report.mismatches.len(), 1);
    assert_eq!(report.mismatches[0].problem, Problem::NoScene);
    assert_eq!(report.mismatches[0].image_index, 5);
}

#[test]
fn questions_in_memory_encode_as_the_file_does_and_keep_the_image_slots() {
    let vocab = build_vocabulary(&split("train"), TokenizerConfig::default()).unwrap();
    let train = split("train");
    let (from_file, _) = QuestionSet::load(&train, &vocab, LoadOptions::default()).unwrap();
    let text = std::fs::read_to_string(&train.questions).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut questions: Vec<clevr::Question> = serde_json::from_value(file["questions"].clone()).unwrap();
    // Reversed, so that the slots must come from the given image list, not first use.
    questions.reverse();
    let (set, report) = QuestionSet::from_questions(questions.clone(), &vocab, &from_file.images).unwrap();
    assert_eq!(report.kept, from_file.len());
    assert_eq!(set.images, from_file.images);
    let n = set.len();
    for i in 0..n {
        let j = n - 1 - i;
        assert_eq!(
            set.question_tokens(i),
            from_file.question_tokens(j),
            "question {i}"
        );
        assert_eq!(set.image_slot[i], from_file.image_slot[j]);
        assert_eq!(set.answers[i], from_file.answers[j]);
        assert_eq!(set.types[i], from_file.types[j]);
    }
    let programs: Vec<_> = questions.iter().map(|q| q.program.clone().unwrap()).collect();
    assert_eq!(set.programs.as_ref(), Some(&programs), "the programs are kept");

    let mut stranger = questions[0].clone();
    stranger.image_filename = "CLEVR_train_000999.png".into();
    questions.push(stranger);
    let err = QuestionSet::from_questions(questions, &vocab, &from_file.images)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "question 39 is about image \"CLEVR_train_000999.png\", which is not among the 3 images"
        ),
        "{err}"
    );
}

#[test]
fn a_question_longer_than_the_limit_is_an_error_naming_it() {
    let vocab = build_vocabulary(&split("train"), TokenizerConfig::default()).unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("questions")).unwrap();
    let name = "questions/CLEVR_val_questions.json";
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_root().join(name)).unwrap()).unwrap();
    file["questions"][3]["question"] = format!("What{}?", " cube".repeat(100_000)).into();
    std::fs::write(root.path().join(name), file.to_string()).unwrap();
    let files = SplitFiles::clevr(root.path(), Release::V1, "val").unwrap();
    let err = QuestionSet::load(&files, &vocab, LoadOptions::default())
        .expect_err("a question of 100 000 words is refused")
        .to_string();
    assert!(
        err.contains("CLEVR_val_questions.json: questions[3] has 100003 tokens, more than the limit of 256"),
        "{err}"
    );
}

#[test]
fn the_official_generators_raw_output_loads_as_a_release_file() {
    // As `generate_questions.py` writes it: answers as JSON booleans and numbers, program
    // nodes with `type` and `_output`, family indices counting within each template file,
    // no `split`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("questions")).unwrap();
    let node = |t: &str, inputs: &str, values: &str| {
        format!(r#"{{"type": "{t}", "inputs": [{inputs}], "value_inputs": [{values}], "_output": [0]}}"#)
    };
    let record = |image: usize, text: &str, answer: &str, file: &str, family: usize, last: &str| {
        format!(
            r#"{{"image_index": {image}, "image_filename": "CLEVR_val_00000{image}.png", "image": "CLEVR_val_00000{image}",
            "question": "{text}", "answer": {answer}, "template_filename": "{file}", "question_family_index": {family},
            "question_index": 0, "program": [{}, {}, {}]}}"#,
            node("scene", "", ""),
            node("filter_shape", "0", r#""cube""#),
            node(last, "1", ""),
        )
    };
    let raw = format!(
        r#"{{"info": {{"split": "val", "version": "1.0"}}, "questions": [{}, {}, {}, {}]}}"#,
        record(0, "Are there any cubes?", "true", "zero_hop.json", 1, "exist"),
        record(1, "How many cubes are there?", "3", "zero_hop.json", 0, "count"),
        record(
            1,
            "Are there any cubes?",
            "false",
            "compare_integer.json",
            5,
            "exist"
        ),
        record(0, "Are there any cubes?", "true", "zero_hop.json", 1, "exist"),
    )
    // A release-format record in the same file keeps its own family index.
    .replace(
        r#""template_filename": "zero_hop.json", "question_family_index": 0"#,
        r#""question_family_index": 39"#,
    );
    std::fs::write(dir.path().join("questions/CLEVR_val_questions.json"), raw).unwrap();
    let files = SplitFiles::clevr(dir.path(), Release::V1, "val").unwrap();
    let mut vocab = build_vocabulary(&split("train"), TokenizerConfig::default()).unwrap();
    vocab.answers = AnswerIndex::build(["yes", "no", "3"]);
    let options = LoadOptions { keep_programs: true };
    let (set, report) = QuestionSet::load(&files, &vocab, options).unwrap();
    assert_eq!((report.read, report.kept), (4, 4), "{report}");
    let answer = |a: &str| vocab.answers.id(a).unwrap();
    assert_eq!(
        set.answers,
        [answer("yes"), answer("3"), answer("no"), answer("yes")]
    );
    // (compare_integer.json, 5) < (zero_hop.json, 1); the second record has no file.
    assert_eq!(set.families, [1, 39, 0, 1]);
    assert_eq!(set.question_type(1), Some(QuestionType::Count));
    assert_eq!(set.programs.as_ref().unwrap()[0][1].value_inputs, ["cube"]);
}
