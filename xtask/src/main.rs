//! Developer tasks for film-rs, run as `cargo xtask <task>`.
//!
//! `bench [--quick] [FILTER]`: runs the criterion benchmarks of the FiLM hot path, then
//! prints a table (time, GB/s, fraction of copy bandwidth, speed-up over the naive
//! composition) and writes it to `target/xtask/bench.json`.

mod bench;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  bench [--quick] [FILTER]   run the FiLM benchmarks, print the table and write
                             target/xtask/bench.json; --quick takes under 2 minutes;
                             FILTER is a criterion regex over benchmark ids such as
                             film/fwd/fused/f32/channels-first/64x128x14x14";

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
