//! Measures the streaming questions loader on a CLEVR-sized file.
//!
//! ```text
//! cargo run --release -p clevr --example stream_memory -- generate /tmp/q700k 700000
//! cargo run --release -p clevr --example stream_memory -- load /tmp/q700k
//! ```
//! `generate` writes `questions/CLEVR_train_questions.json` under the folder, with
//! records shaped like the release (program, family, answer, file names).
//! `load` builds the vocabularies (one streaming pass) and loads the split (a
//! second pass), then prints the final in-memory size of the question set and
//! the process's peak resident memory (VmHWM) — run it in a fresh process.

use clevr::dataset::{build_vocabulary, LoadOptions, QuestionSet};
use clevr::layout::{Release, SplitFiles};
use clevr::question::{ProgramNode, Question};
use clevr::vocab::TokenizerConfig;
use rand::prelude::*;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const COLORS: [&str; 8] = [
    "gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow",
];
const SHAPES: [&str; 3] = ["cube", "sphere", "cylinder"];
const SIZES: [&str; 2] = ["large", "small"];
const MATERIALS: [&str; 2] = ["rubber", "metal"];
const RELATIONS: [&str; 4] = ["left", "right", "front", "behind"];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// A random object description and the filter chain that finds it, appended to `program`.
fn describe(rng: &mut StdRng, program: &mut Vec<ProgramNode>, input: usize) -> (String, usize) {
    let (size, color, material, shape) = (
        pick(rng, &SIZES),
        pick(rng, &COLORS),
        pick(rng, &MATERIALS),
        pick(rng, &SHAPES),
    );
    let mut last = input;
    for (f, value) in [
        ("filter_size", size),
        ("filter_color", color),
        ("filter_material", material),
        ("filter_shape", shape),
    ] {
        program.push(ProgramNode::with_value(f, &[last], value));
        last = program.len() - 1;
    }
    (format!("{size} {color} {material} {shape}"), last)
}

fn question(rng: &mut StdRng, index: usize) -> Question {
    let mut program = vec![ProgramNode::new("scene", &[])];
    let (first, a) = describe(rng, &mut program, 0);
    program.push(ProgramNode::new("unique", &[a]));
    let relation = pick(rng, &RELATIONS);
    program.push(ProgramNode::with_value("relate", &[program.len() - 1], relation));
    let related = program.len() - 1;
    let (second, b) = describe(rng, &mut program, related);
    let (text, answer) = match rng.random_range(0..3) {
        0 => {
            program.push(ProgramNode::new("count", &[b]));
            (
                format!("How many {second}s are {relation} of the {first}?"),
                rng.random_range(0..10).to_string(),
            )
        }
        1 => {
            program.push(ProgramNode::new("exist", &[b]));
            (
                format!("Are there any {second}s {relation} of the {first}?"),
                pick(rng, &["yes", "no"]).to_string(),
            )
        }
        _ => {
            program.push(ProgramNode::new("unique", &[b]));
            program.push(ProgramNode::new("query_color", &[program.len() - 1]));
            (
                format!("There is a {second} {relation} of the {first}; what color is it?"),
                pick(rng, &COLORS).to_string(),
            )
        }
    };
    let image_index = index / 10;
    Question {
        image_index,
        program: Some(program),
        question_index: Some(index),
        image_filename: format!("CLEVR_train_{image_index:06}.png"),
        question_family_index: Some(rng.random_range(0..90)),
        split: "train".to_string(),
        answer: Some(answer),
        question: text,
    }
}

fn generate(root: &Path, count: usize) {
    let dir = root.join("questions");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("CLEVR_train_questions.json");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    write!(
        out,
        "{{\"info\": {{\"split\": \"train\", \"version\": \"1.0\"}}, \"questions\": ["
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..count {
        if i > 0 {
            out.write_all(b", ").unwrap();
        }
        serde_json::to_writer(&mut out, &question(&mut rng, i)).unwrap();
    }
    out.write_all(b"]}").unwrap();
    out.flush().unwrap();
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!(
        "wrote {count} questions, {:.1} MB, to {}",
        bytes as f64 / 1e6,
        path.display()
    );
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn load(root: &Path) {
    let files = SplitFiles::clevr(root, Release::V1, "train").unwrap();
    let start = Instant::now();
    let vocab = build_vocabulary(&files, TokenizerConfig::default()).unwrap();
    let vocab_time = start.elapsed();
    let after_vocab = peak_rss_kib();
    let start = Instant::now();
    let (set, report) = QuestionSet::load(&files, &vocab, LoadOptions::default()).unwrap();
    let load_time = start.elapsed();
    println!("{report}");
    println!(
        "vocabulary: {} question tokens, {} answers, pass took {:.2} s",
        vocab.questions.len(),
        vocab.answers.len(),
        vocab_time.as_secs_f64()
    );
    println!("load pass took {:.2} s", load_time.as_secs_f64());
    println!(
        "question set: {} questions, {:.1} MiB on the heap",
        set.len(),
        set.heap_bytes() as f64 / 1048576.0
    );
    if let (Some(before), Some(peak)) = (after_vocab, peak_rss_kib()) {
        println!(
            "peak RSS after vocabulary pass: {:.1} MiB; peak RSS overall: {:.1} MiB",
            before as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("generate") => generate(Path::new(&args[2]), args[3].parse().unwrap()),
        Some("load") => load(Path::new(&args[2])),
        _ => eprintln!("usage: stream_memory generate DIR COUNT | stream_memory load DIR"),
    }
}
