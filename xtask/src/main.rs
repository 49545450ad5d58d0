//! Developer tasks for film-rs, run as `cargo xtask <task>`.
//!
//! `bench [--quick] [--torch PYTHON] [FILTER]`: runs the criterion benchmarks (the FiLM hot
//! path, the block's convolution, the `mini` training step), optionally the PyTorch
//! reference harness beside them, then prints a table and writes it to
//! `target/xtask/bench.json`.

mod bench;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  bench [--quick] [--torch PYTHON [--torch-script PATH]] [FILTER]
        run the benchmarks (FiLM op, block convolution, mini training step), print
        the table and write target/xtask/bench.json; --quick shortens every
        measurement; FILTER is a criterion regex over benchmark ids such as
        film/fwd/fused/f32/channels-first/64x128x14x14; --torch runs
        ../shared/reference/torch_film.py (or PATH) with that Python, on the
        CPU with as many threads, and adds its conv and train-step figures as
        torch-reference rows";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
        None => Err(anyhow::anyhow!("no task given\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
