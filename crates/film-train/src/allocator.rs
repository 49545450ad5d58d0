//! Allocator settings for training.

/// A training step frees and re-allocates the same few hundred megabytes of tensors every
/// step. glibc's defaults hand large blocks straight back to the kernel (mmap above an
/// adaptive threshold, heap trimming above 128 KiB), so every step pays page faults and TLB
/// shootdowns on fresh memory: about 40% of the `mini` step on a 2-core machine. Serving
/// blocks up to 32 MiB from the heap and never trimming it makes the step 1.7x faster
/// (docs/benchmarks.md, "The training step"); memory stays at the step's peak instead.
/// Call it first thing in `main`, before any thread starts. Does nothing off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
