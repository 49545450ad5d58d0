//! Prints the question-type and answer distributions of one split of a
//! CLEVR-layout dataset, the share of each of CLEVR's template constructions and of
//! "There is …;" questions, and the longest relate chain of each question (the figures
//! in docs/embedded-dataset.md).
//!
//! cargo run --release -p clevr-synth --example dataset_stats -- DIR SPLIT

use clevr::stream::for_each_question;
use clevr::QuestionType;
use clevr_synth::templates::construction;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn shares(counts: &BTreeMap<String, usize>) -> String {
    let total: usize = counts.values().sum();
    let mut sorted: Vec<_> = counts.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    sorted
        .iter()
        .map(|(a, c)| format!("{a} {:.1}", 100.0 * **c as f64 / total as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, split] = args.as_slice() else {
        return Err("usage: dataset_stats DIR SPLIT".into());
    };
    let path = PathBuf::from(dir)
        .join("questions")
        .join(format!("CLEVR_{split}_questions.json"));
    let mut by_type: BTreeMap<QuestionType, BTreeMap<String, usize>> = BTreeMap::new();
    let mut by_construction: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    let mut there_is = 0usize;
    let mut hops: BTreeMap<usize, usize> = BTreeMap::new();
    let mut total = 0usize;
    for_each_question(&path, |q| {
        let (Some(program), Some(answer)) = (q.program, q.answer) else {
            return Ok(());
        };
        total += 1;
        if let Some(t) = QuestionType::of_program(&program) {
            *by_type.entry(t).or_default().entry(answer.clone()).or_default() += 1;
        }
        *by_construction
            .entry(construction(&program))
            .or_default()
            .entry(answer)
            .or_default() += 1;
        there_is += usize::from(q.question.starts_with("There is") && q.question.contains(';'));
        let mut depth = vec![0usize; program.len()];
        for (i, node) in program.iter().enumerate() {
            let below = node.inputs.iter().map(|&j| depth[j]).max().unwrap_or(0);
            depth[i] = below + usize::from(node.function == "relate");
        }
        *hops.entry(depth.into_iter().max().unwrap_or(0)).or_default() += 1;
        Ok(())
    })?;
    let pct = |n: usize| 100.0 * n as f64 / total.max(1) as f64;
    println!("{split}: {total} questions");
    println!("\n| type | share | answers (share within the type, %) |\n|---|---|---|");
    for (t, answers) in &by_type {
        let n: usize = answers.values().sum();
        println!("| {} | {:.1} % | {} |", t.name(), pct(n), shares(answers));
    }
    println!("\n| construction | share | most frequent answer | answers seen |\n|---|---|---|---|");
    for (name, answers) in &by_construction {
        let n: usize = answers.values().sum();
        let (top, c) = answers.iter().max_by_key(|(_, c)| **c).expect("non-empty");
        let share = 100.0 * *c as f64 / n as f64;
        println!(
            "| {name} | {:.1} % | {top} ({share:.1} %) | {} |",
            pct(n),
            answers.len()
        );
    }
    println!("\n\"There is …; …\" questions: {:.1} %", pct(there_is));
    let chains: Vec<String> = hops
        .iter()
        .map(|(h, n)| format!("{h} hops {:.1} %", pct(*n)))
        .collect();
    println!("\nlongest relate chain: {}", chains.join(", "));
    Ok(())
}
