//! Process-wide settings that training speed depends on, applied first thing in `main`
//! (and by the training-step benchmark, so that it measures what the binary runs).

/// Applies [`keep_freed_memory`] and [`single_thread_candle_pool`].
pub fn tune_for_training() {
    keep_freed_memory();
    single_thread_candle_pool();
}

/// candle 0.11 runs its own element-wise ops on a pool of worker threads whose caller
/// busy-waits for them. Every heavy op of the model (convolutions, BatchNorm, the GRU,
/// FiLM, matrix products) already spreads over the cores through rayon or its own threads,
/// so on a small machine candle's pool only competes with them, and its busy-wait costs
/// CPU time the heavy ops need (measured in docs/benchmarks.md, "The training step"). One
/// candle thread (its ops run on the caller) unless the user set `CANDLE_NUM_THREADS`
/// themselves.
pub fn single_thread_candle_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Before any other thread starts: changing the environment is not thread-safe.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// A training step frees and re-allocates the same few hundred megabytes of tensors every
/// step. glibc's defaults hand large blocks straight back to the kernel (mmap above an
/// adaptive threshold, heap trimming above 128 KiB), so every step pays page faults and TLB
/// shootdowns on fresh memory. Serving blocks up to 32 MiB from the heap and never
/// trimming it avoids that (what it buys: docs/benchmarks.md, "The training step");
/// memory stays at the step's peak instead.
/// Call it first thing in `main`, before any thread starts. Does nothing off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
