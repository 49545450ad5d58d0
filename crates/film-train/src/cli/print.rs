//! What `eval` and `ask` print.

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use clevr::QuestionType;

use crate::evaluate::Evaluation;

pub(super) fn print_evaluation(eval: &Evaluation, vocab: &clevr::vocab::Vocabulary, split: &str) {
    let pct = |t: &crate::evaluate::Tally| t.accuracy().map_or("-".into(), |a| format!("{:.1}%", 100.0 * a));
    println!(
        "{split}: {} questions, overall accuracy {}",
        eval.overall.total,
        pct(&eval.overall)
    );
    println!("\n{:<20} {:>9} {:>8}", "question type", "accuracy", "n");
    for t in QuestionType::ALL {
        if let Some(tally) = eval.by_type.get(&t.index()) {
            println!("{:<20} {:>9} {:>8}", t.name(), pct(tally), tally.total);
        }
    }
    println!("\n{:<20} {:>9} {:>8}", "question family", "accuracy", "n");
    for (family, tally) in &eval.by_family {
        let name = if *family == u16::MAX {
            "unknown".to_string()
        } else {
            family.to_string()
        };
        println!("{:<20} {:>9} {:>8}", name, pct(tally), tally.total);
    }
    let mut confusions: Vec<_> = eval.confusions.iter().collect();
    confusions.sort_by(|a, b| b.1.cmp(a.1));
    println!("\nmost confused answers (expected → predicted):");
    for ((expected, predicted), count) in confusions.into_iter().take(10) {
        let name = |id: u32| vocab.answers.answer(id).unwrap_or("?").to_string();
        println!("  {:>10} → {:<10} {count}", name(*expected), name(*predicted));
    }
}

pub(super) fn ask(
    run: &Path,
    image: &Path,
    question: &str,
    explain: Option<&Path>,
    dev: &Device,
) -> Result<()> {
    let asker = crate::ask::Asker::load(run, dev)?;
    let unknown: Vec<String> = asker
        .words(question)
        .into_iter()
        .filter(|w| !w.known)
        .map(|w| w.word)
        .collect();
    if !unknown.is_empty() {
        eprintln!(
            "note: words not in the training vocabulary (read as <UNK>): {}",
            unknown.join(", ")
        );
    }
    let picture = clevr::image::decode_png(image)?;
    let reply = asker.ask(&picture, question)?;
    println!("{question}");
    for candidate in &reply.answers {
        println!("  {:>6.1}%  {}", 100.0 * candidate.probability, candidate.answer);
    }
    if let Some(out) = explain {
        let png = asker.explain_png(&picture, question, &reply)?;
        crate::run_dir::write_atomic(out, &png)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
