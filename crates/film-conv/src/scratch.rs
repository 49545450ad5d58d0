//! A small process-wide pool of f32 buffers for the unfolded-input (im2col)
//! matrices and the per-thread weight-gradient partial sums.
//!
//! Why a pool: on the machines we train on, writing into freshly allocated
//! multi-megabyte memory costs several times more than writing into memory
//! that was touched before (page faults on every new mapping). The kernels
//! need the same few buffer sizes on every call, so they are kept here and
//! handed out again. The pool is bounded; buffers beyond the bound are freed.

use std::sync::Mutex;

/// More buffers than (threads x buffers per task) are never in flight at once
/// on the machines we target; a bound keeps a burst from pinning memory.
const MAX_POOLED_BUFFERS: usize = 16;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer borrowed from the pool; it goes back when dropped.
pub struct ScratchBuf {
    /// Always fully initialised (`len == capacity` after growth), so handing
    /// out a shorter prefix never re-fills memory.
    buf: Vec<f32>,
    len: usize,
}

impl ScratchBuf {
    /// Borrows a buffer of exactly `len` elements. Its contents are
    /// unspecified (left from an earlier use, or zero): callers overwrite it.
    pub fn take(len: usize) -> Self {
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            // Best fit: the smallest pooled buffer that is large enough, so a
            // small request does not claim the large one another thread needs.
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= len)
                .min_by_key(|(_, b)| b.len())
                .map(|(i, _)| i);
            match best {
                Some(i) => Some(pool.swap_remove(i)),
                // Otherwise grow the largest one rather than keep two copies.
                None => pool
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, b)| b.len())
                    .map(|(i, _)| i)
                    .map(|i| pool.swap_remove(i)),
            }
        };
        let mut buf = reused.unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        Self { buf, len }
    }
}

impl std::ops::Deref for ScratchBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl std::ops::DerefMut for ScratchBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

impl Drop for ScratchBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < MAX_POOLED_BUFFERS {
            pool.push(buf);
        }
    }
}
