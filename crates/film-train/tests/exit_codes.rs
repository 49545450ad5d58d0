//! The binary's exit-code contract (docs/training.md, "Error contract and limits"): 1 for
//! bad input or a failed run, with a message naming the file and field; 2 for a usage
//! error; never 101, the code of an uncaught panic.

use std::process::{Command, Output, Stdio};

use film_train::presets;
use film_train::run_dir::{RunConfig, RunDir};

mod support;
use support::{fixture, fixture_copy};

fn film_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_film-train"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the film-train binary runs")
}

fn code_and_stderr(output: &Output) -> (Option<i32>, String) {
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_malformed_questions_file_exits_1_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture_copy(dir.path());
    let questions = data.join("questions/CLEVR_train_questions.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&questions).unwrap()).unwrap();
    value["questions"][2]["answer"] = serde_json::json!([7]);
    std::fs::write(&questions, serde_json::to_string(&value).unwrap()).unwrap();

    let run = dir.path().join("run");
    let output = film_train(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--quiet",
    ]);
    let (code, stderr) = code_and_stderr(&output);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("CLEVR_train_questions.json:1:"), "{stderr}");
    assert!(stderr.contains("questions[2].answer: invalid type"), "{stderr}");
}

#[test]
fn a_missing_file_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("nowhere");
    let output = film_train(&["eval", "--run", nowhere.to_str().unwrap()]);
    let (code, stderr) = code_and_stderr(&output);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{} is missing", nowhere.join("config.json").display())),
        "{stderr}"
    );

    let output = film_train(&["verify", "--data", nowhere.to_str().unwrap()]);
    let (code, stderr) = code_and_stderr(&output);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(nowhere.to_str().unwrap()), "{stderr}");
}

#[test]
fn a_hand_edited_run_config_exits_1_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let preset = presets::by_name("tiny").unwrap();
    let run = RunDir::create(dir.path()).unwrap();
    run.write_config(&RunConfig {
        preset: preset.name,
        model: preset.model,
        training: preset.training,
        data: fixture(),
        seed: 0,
        epochs: Some(1),
        minutes: None,
    })
    .unwrap();
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("\"eval_every\": 50", "\"eval_every\": \"often\"", 1);
    assert_ne!(text, edited, "the tiny preset evaluates every 50 steps");
    std::fs::write(&path, edited).unwrap();

    let output = film_train(&["eval", "--run", dir.path().to_str().unwrap()]);
    let (code, stderr) = code_and_stderr(&output);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("config.json:"), "{stderr}");
    assert!(stderr.contains("training.eval_every: invalid type"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["train", "--no-such-flag"][..],
        &["train", "--preset", "tiny"][..],
        &["generate", "--out", "x", "--train-images", "many"][..],
        &["no-such-command"][..],
    ] {
        let output = film_train(args);
        let (code, stderr) = code_and_stderr(&output);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    }
}

/// Writing to a closed pipe (`film-train presets | head -0`) makes `println!` panic: the
/// panic is caught and the run ends with 1 and a message instead of 101.
#[test]
fn a_panic_exits_1_not_101() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_film-train"))
        .arg("presets")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let (code, stderr) = code_and_stderr(&output);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("failed printing to stdout"), "{stderr}");
    assert!(
        stderr.contains("error: film-train stopped on the internal error above"),
        "{stderr}"
    );
}
