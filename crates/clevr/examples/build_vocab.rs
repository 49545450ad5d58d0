//! Builds the vocabularies of a CLEVR-layout folder's train split and saves them:
//! `cargo run -p clevr --example build_vocab -- DATA_DIR OUT_DIR`
//!
//! Writes `OUT_DIR/tokenizer.json` and `OUT_DIR/answers.json`, plus
//! `OUT_DIR/val_ids.json` (each val question with the ids Rust gives it), which
//! `scripts/check_tokenizer.py` compares with the Python `tokenizers` package.

use clevr::dataset::build_vocabulary;
use clevr::layout::{Release, SplitFiles};
use clevr::stream::for_each_question;
use clevr::vocab::TokenizerConfig;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, out] = args.as_slice() else {
        return Err("usage: build_vocab DATA_DIR OUT_DIR".into());
    };
    let (data, out) = (PathBuf::from(data), PathBuf::from(out));
    let train = SplitFiles::clevr(&data, Release::V1, "train")?;
    let vocab = build_vocabulary(&train, TokenizerConfig::default())?;
    vocab.save(&out)?;
    let val = SplitFiles::clevr(&data, Release::V1, "val")?;
    let mut encoded = Vec::new();
    let mut failure = None;
    for_each_question(&val.questions, |q| {
        match vocab.questions.encode(&q.question) {
            Ok(ids) => encoded.push(serde_json::json!({ "question": q.question, "ids": ids })),
            Err(e) => failure = Some(e),
        }
        Ok(())
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    // Human-style probes: unseen words, glued punctuation, odd spacing, case.
    for probe in [
        "what IS the giraffe,made of;really?  ",
        "Is there a cube.. or\ta sphere ?",
        "",
        "Ünïcödé cube;;,,",
    ] {
        let ids = vocab.questions.encode(probe)?;
        encoded.push(serde_json::json!({ "question": probe, "ids": ids }));
    }
    std::fs::write(out.join("val_ids.json"), serde_json::to_string(&encoded)?)?;
    println!(
        "{} question tokens, {} answers, {} questions encoded into {}",
        vocab.questions.len(),
        vocab.answers.len(),
        encoded.len(),
        out.display()
    );
    Ok(())
}
