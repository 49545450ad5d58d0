//! `film-train`: generate the embedded dataset, train, evaluate and question FiLM models.
//! With no arguments it runs the default job: make (or find) the embedded dataset, train
//! the `mini` preset within a time budget (resuming an unfinished run), evaluate, and say
//! what to do next.

use std::process::ExitCode;

use clap::Parser;
use film_train::cli;

fn main() -> ExitCode {
    film_train::runtime::tune_for_training();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
