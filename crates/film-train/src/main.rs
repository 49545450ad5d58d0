//! `film-train`: generate the embedded dataset, train, evaluate and question FiLM models.
//! With no arguments it runs the default job: make (or find) the embedded dataset, train
//! the `default` preset within a time budget (resuming an unfinished run), evaluate, and say
//! what to do next.
//!
//! Exit codes (docs/training.md, "Error contract and limits"): 0 success, 1 bad input or a
//! failed run, 2 a usage error (clap's own code). Never 101: a panic, which is a bug, is
//! caught here and reported as a failed run.

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use clap::Parser;
use film_train::cli;

fn main() -> ExitCode {
    film_train::runtime::tune_for_training();
    // Usage errors exit with 2 inside `parse`, before anything can panic.
    let cli = cli::Cli::parse();
    // The default hook has already printed the panic's message and place (and a backtrace
    // if RUST_BACKTRACE asks for one) when the unwind reaches us; we only add what it means.
    match panic::catch_unwind(AssertUnwindSafe(|| cli::run(cli))) {
        Ok(Ok(code)) => code,
        Ok(Err(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "error: film-train stopped on the internal error above (a panic). If it is not \
                 a closed output pipe, it is a bug: please report it with the command line."
            );
            ExitCode::FAILURE
        }
    }
}
