//! Process-wide settings that training speed depends on, applied first thing in `main`
//! (and by the training-step benchmark, so that it measures what the binary runs).

/// Applies [`keep_freed_memory`], [`single_thread_candle_pool`], [`fix_thread_count`] and
/// [`flush_denormals`].
pub fn tune_for_training() {
    keep_freed_memory();
    single_thread_candle_pool();
    fix_thread_count();
    flush_denormals();
}

/// Sets `RAYON_NUM_THREADS` to candle's default thread count (the physical cores) unless
/// the user set it. Left unset, candle counts the cores again, by parsing `/proc/cpuinfo`,
/// on every matrix product: file reads on the training step's serial path (measured in
/// docs/benchmarks.md, "The training step"). Rayon's pool then has the same count as
/// candle's kernels. `--threads` still overrides it afterwards, before any pool starts.
/// Call it first thing in `main`, before any thread starts.
pub fn fix_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// Makes the CPU treat subnormal f32 values (below about 1.2e-38 in magnitude) as zero, in
/// its inputs and its results, on this thread and on every thread started from it later
/// (a new thread inherits its creator's floating-point environment).
///
/// As training goes on, some activations and gradients (those behind confident sigmoids
/// and softmaxes, for instance) fall that low, and x86 cores handle every arithmetic
/// operation on a subnormal value through a slow microcode assist: without this, a run's
/// steps get slower as it learns (measured in docs/benchmarks.md). Treating them as zero
/// changes results only below 1.2e-38, where a float has lost most of its precision
/// anyway; PyTorch offers the same switch as `torch.set_flush_denormal(True)`. Call it
/// first thing in `main`, before any thread starts. Does nothing on other architectures.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    {
        // MXCSR bit 15: flush results to zero (FTZ); bit 6: read inputs as zero (DAZ).
        const FLUSH_TO_ZERO_AND_DENORMALS_ARE_ZERO: u32 = (1 << 15) | (1 << 6);
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register; setting
        // FTZ and DAZ changes only how subnormal values are rounded.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= FLUSH_TO_ZERO_AND_DENORMALS_ARE_ZERO;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
        }
    }
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use std::hint::black_box;

    #[test]
    fn subnormal_values_become_zero_here_and_in_threads_started_later() {
        let subnormal = 1e-39f32;
        assert!(subnormal.is_subnormal());
        std::thread::spawn(move || {
            // A thread of its own, so that no other test's arithmetic changes.
            assert_eq!(black_box(subnormal) * black_box(1.0f32), subnormal, "before");
            flush_denormals();
            assert_eq!(
                black_box(subnormal) * black_box(1.0f32),
                0.0,
                "an input read as zero"
            );
            assert_eq!(black_box(1e-30f32) * black_box(1e-9f32), 0.0, "a result flushed");
            assert!(
                (black_box(1e-30f32) * black_box(1e-5f32)).is_normal(),
                "normal values kept"
            );
            let child = std::thread::spawn(move || black_box(subnormal) * black_box(1.0f32));
            assert_eq!(child.join().unwrap(), 0.0, "inherited by a new thread");
        })
        .join()
        .unwrap();
    }
}
