//! End-to-end: a tiny generated dataset has the CLEVR layout, passes the
//! clevr crate's verification on every question, is identical for the same
//! seed, and is written atomically.

use clevr::layout::{Release, SplitFiles};
use clevr::verify::verify;
use clevr_synth::attributes::Cogent;
use clevr_synth::dataset::{generate, GenerateConfig, GenerateError};
use indicatif::ProgressBar;
use std::path::Path;

fn tiny(out: &Path, seed: u64) -> GenerateConfig {
    GenerateConfig {
        out: out.to_path_buf(),
        train_images: 12,
        val_images: 4,
        questions_per_image: 8,
        width: 96,
        height: 64,
        seed,
        cogent: None,
        scenes: None,
        templates: None,
    }
}

fn read_all(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn generated_dataset_verifies_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let summary = generate(&tiny(&a, 5), &ProgressBar::hidden()).unwrap();
    assert_eq!(summary.splits.len(), 2);
    assert!(a.join("images/train/CLEVR_train_000011.png").is_file());
    assert!(a.join("images/val/CLEVR_val_000003.png").is_file());
    assert!(!tmp.path().join("a.partial").exists());
    for split in ["train", "val"] {
        let files = SplitFiles::clevr(&a, Release::V1, split).unwrap();
        let report = verify(&files).unwrap();
        assert!(report.passed(), "{split}: {:?}", report.mismatches.first());
        assert_eq!(report.matched, report.questions);
        assert!(
            report.questions >= 4 * 4,
            "{split}: only {} questions",
            report.questions
        );
    }

    let b = tmp.path().join("b");
    generate(&tiny(&b, 5), &ProgressBar::hidden()).unwrap();
    assert!(read_all(&a) == read_all(&b), "same seed, different files");

    let c = tmp.path().join("c");
    generate(&tiny(&c, 6), &ProgressBar::hidden()).unwrap();
    assert!(
        read_all(&a) != read_all(&c),
        "another seed should give another dataset"
    );
}

#[test]
fn refuses_to_overwrite_and_writes_cogent_split_names() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("d");
    let mut config = tiny(&out, 1);
    config.train_images = 3;
    config.val_images = 2;
    config.cogent = Some(Cogent::B);
    let refused = generate(&config, &ProgressBar::hidden());
    assert!(
        matches!(refused, Err(GenerateError::CogentBTrain)),
        "condition B has no train split"
    );
    config.train_images = 0;
    generate(&config, &ProgressBar::hidden()).unwrap();
    let files = SplitFiles::clevr(&out, Release::CoGenT, "valB").unwrap();
    assert!(verify(&files).unwrap().passed());
    let again = generate(&config, &ProgressBar::hidden());
    assert!(matches!(again, Err(GenerateError::OutputExists { .. })));
}

#[test]
fn renders_and_asks_about_an_existing_scenes_file() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clevr-mini/scenes/CLEVR_val_scenes.json");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("e");
    let mut config = tiny(&out, 2);
    config.scenes = Some((fixture.clone(), "val".to_string()));
    let summary = generate(&config, &ProgressBar::hidden()).unwrap();
    let scenes = clevr::ScenesFile::read(&fixture).unwrap().scenes;
    assert_eq!(summary.splits[0].1, scenes.len());
    for scene in &scenes {
        assert!(out.join("images/val").join(&scene.image_filename).is_file());
    }
    let files = SplitFiles::clevr(&out, Release::V1, "val").unwrap();
    assert!(verify(&files).unwrap().passed());
}

#[test]
fn an_image_size_beyond_the_renderer_limit_is_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = tiny(&tmp.path().join("d"), 1);
    (config.width, config.height) = (70_000, 70_000);
    let err = generate(&config, &ProgressBar::hidden()).unwrap_err();
    assert!(matches!(err, GenerateError::BadSize { .. }), "{err}");
    assert!(
        err.to_string().contains("--size 70000x70000: both sides must be at least 16 pixels, and the image at most 67108864 pixels"),
        "{err}"
    );
}

#[test]
fn a_template_folder_asks_the_questions_and_bad_folders_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let builtin = tmp.path().join("builtin");
    generate(&tiny(&builtin, 3), &ProgressBar::hidden()).unwrap();
    // The built-in templates read from their folder (metadata and synonyms in its parent,
    // the official generator's layout) give the built-in dataset.
    let from_folder = tmp.path().join("folder");
    let mut config = tiny(&from_folder, 3);
    config.templates = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/families"));
    generate(&config, &ProgressBar::hidden()).unwrap();
    assert!(
        read_all(&builtin) == read_all(&from_folder),
        "the folder's questions differ"
    );

    let mut config = tiny(&tmp.path().join("missing"), 3);
    config.templates = Some(tmp.path().join("no-such-folder"));
    let shown = generate(&config, &ProgressBar::hidden()).unwrap_err().to_string();
    assert!(
        shown.contains("no metadata.json in") && shown.contains("no-such-folder"),
        "{shown}"
    );
    assert!(!tmp.path().join("missing").exists() && !tmp.path().join("missing.partial").exists());
}
