//! Prints the question-type and answer distributions of one split of a
//! CLEVR-layout dataset, per question type and per family, and the longest
//! relate chain of each question (the figures in docs/embedded-dataset.md).
//!
//! cargo run --release -p clevr-synth --example dataset_stats -- DIR SPLIT

use clevr::stream::for_each_question;
use clevr::QuestionType;
use clevr_synth::questions::families::FAMILIES;
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
    let mut by_family: BTreeMap<usize, BTreeMap<String, usize>> = BTreeMap::new();
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
        if let Some(f) = q.question_family_index {
            *by_family.entry(f).or_default().entry(answer).or_default() += 1;
        }
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
    println!("\n| family | questions | most frequent answer | answers seen |\n|---|---|---|---|");
    for (f, answers) in &by_family {
        let n: usize = answers.values().sum();
        let (top, c) = answers.iter().max_by_key(|(_, c)| **c).expect("non-empty");
        let name = FAMILIES.get(*f).copied().unwrap_or("?");
        let share = 100.0 * *c as f64 / n as f64;
        println!("| {f} {name} | {n} | {top} ({share:.1} %) | {} |", answers.len());
    }
    let chains: Vec<String> = hops
        .iter()
        .map(|(h, n)| format!("{h} hops {:.1} %", pct(*n)))
        .collect();
    println!("\nlongest relate chain: {}", chains.join(", "));
    Ok(())
}
