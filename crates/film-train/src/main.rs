//! `film-train`: generate the embedded dataset, train, evaluate and question FiLM models.
//! With no arguments it runs the default job: make (or find) the embedded dataset, train
//! the `mini` preset within a time budget (resuming an unfinished run), evaluate, and say
//! what to do next.

use std::process::ExitCode;

use clap::Parser;
use film_train::cli;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A training step frees and re-allocates the same few hundred megabytes of tensors every
/// step. glibc's defaults hand large blocks straight back to the kernel (mmap above an
/// adaptive threshold, heap trimming above 128 KiB), so every step pays page faults and TLB
/// shootdowns on fresh memory: about 40% of the `mini` step on a 2-core machine. Serving
/// blocks up to 32 MiB from the heap and never trimming it makes the step 1.7x faster
/// (docs/benchmarks.md, "training step"); memory stays at the step's peak instead.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator tunables; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
