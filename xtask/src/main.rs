//! Developer tasks for film-rs, run as `cargo xtask <task>`.
//!
//! `bench [--quick] [--torch PYTHON] [FILTER]`: runs the criterion benchmarks (the FiLM hot
//! path, the block's convolution, the `mini` training step), optionally the PyTorch
//! reference harness beside them, then prints a table and writes it to
//! `target/xtask/bench.json`.
//!
//! `cuda-build [--compute-cap N]`: the release binaries with the `cuda` feature, built
//! without GPU or CUDA toolkit; see `cuda_build.rs` and docs/gpu.md.

mod bench;
mod cuda_build;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  bench [--quick] [--torch PYTHON --torch-script PATH] [FILTER]
        run the benchmarks (FiLM op, block convolution, mini training step), print
        the table and write target/xtask/bench.json; --quick shortens every
        measurement; FILTER is a criterion regex over benchmark ids such as
        film/fwd/fused/f32/channels-first/64x128x14x14; --torch runs
        the PyTorch reference harness torch_film.py at PATH with that Python, on the
        CPU with as many threads, and adds its conv and train-step figures as
        torch-reference rows
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("cuda-build") => cuda_build::run(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}{}", cuda_build::USAGE);
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!(
            "unknown task {other:?}\n\n{USAGE}{}",
            cuda_build::USAGE
        )),
        None => Err(anyhow::anyhow!("no task given\n\n{USAGE}{}", cuda_build::USAGE)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root, where cargo is run for every task.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
