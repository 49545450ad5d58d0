//! What `film-train verify --data DIR --split SPLIT` does, as a stand-alone example:
//! `cargo run -p clevr --example verify -- DIR SPLIT`
//!
//! Runs every question's program on its scene, prints the report (mismatches
//! listed), and exits 1 on any mismatch, 2 on an error, 0 when all agree.
//! CoGenT splits (trainA, valA, valB, testA, testB) are recognised by name.

use clevr::layout::{Release, SplitFiles};
use clevr::verify::verify;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, split] = args.as_slice() else {
        eprintln!("usage: verify DATA_DIR SPLIT");
        return ExitCode::from(2);
    };
    let release = if Release::CoGenT.splits().contains(&split.as_str()) {
        Release::CoGenT
    } else {
        Release::V1
    };
    let outcome = SplitFiles::clevr(&PathBuf::from(data), release, split)
        .map_err(|e| e.to_string())
        .and_then(|files| verify(&files).map_err(|e| e.to_string()));
    match outcome {
        Ok(report) => {
            print!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
