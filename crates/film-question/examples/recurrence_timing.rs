//! Times the fused GRU layer alone (input projection and recurrence) at the `mini`
//! preset's size (batch 64, 46 steps, 64-wide embeddings, 256 units): forward and backward
//! apart, median of N calls.
//!
//!     cargo run --release -p film-question --example recurrence_timing -- [iterations]
//!
//! `film-train` keeps freed memory in the heap (its `runtime` module); without that the
//! large per-call buffers are fresh pages every call and page faults dominate. To time what
//! the binary runs, give glibc the same settings:
//!
//!     GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483647 \
//!     CANDLE_NUM_THREADS=1 target/release/examples/recurrence_timing

use std::time::Instant;

use candle_core::{Device, Result, Var};
use film_question::recurrence::gru_layer;

fn main() -> Result<()> {
    let iterations: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let (steps, batch, input, hidden) = (46, 64, 64, 256);
    let dev = Device::Cpu;
    // Every sequence full length: the recurrence's whole work, whatever the padding.
    let lengths = vec![steps; batch];
    let inputs = Var::randn(0f32, 1.0, (steps, batch, input), &dev)?;
    let weight_hh = Var::randn(0f32, 0.06, (3 * hidden, hidden), &dev)?;
    // W_ih (3H x E) flattened, then both biases.
    let packed = Var::randn(0f32, 0.06, 3 * hidden * (input + 2), &dev)?;
    let (mut forward, mut backward) = (vec![], vec![]);
    for i in 0..iterations + 3 {
        let start = Instant::now();
        let states = gru_layer(&inputs, &weight_hh, &packed, &lengths)?;
        let forward_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        states.sum_all()?.backward()?;
        if i >= 3 {
            forward.push(forward_ms);
            backward.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    forward.sort_by(f64::total_cmp);
    backward.sort_by(f64::total_cmp);
    println!(
        "GRU layer {steps}x{batch}x{input}->{hidden}, {} threads: forward {:.2} ms, backward {:.2} ms",
        rayon::current_num_threads(),
        forward[iterations / 2],
        backward[iterations / 2]
    );
    Ok(())
}
