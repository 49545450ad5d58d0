//! The dense linear algebra of the CPU recurrence: gemm over strided row-major views,
//! a GEMM with its columns split over the threads, a tiled transpose and column sums.

use gemm::Parallelism;
use kernel_launch::cpu::gemm_f32;
use rayon::prelude::*;

pub(super) fn parallelism() -> Parallelism {
    match kernel_launch::cpu::num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// A row-major matrix view: element (i, j) at `ptr + i * row_stride + j * col_stride`.
pub(super) use kernel_launch::cpu::Strided as View;

/// dst (m × n, row-major with `dst_row_stride`) (+)= lhs (m × k) · rhs (k × n).
///
/// # Safety
/// Every element the views address must be inside a live allocation, and `dst` must not
/// overlap `lhs` or `rhs`.
pub(super) unsafe fn matmul(
    mnk: (usize, usize, usize),
    dst: *mut f32,
    dst_row_stride: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    parallelism: Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm_f32(
            mnk,
            dst,
            (dst_row_stride as isize, 1),
            accumulate,
            lhs,
            rhs,
            parallelism,
        )
    }
}

/// `dst` (cols × rows) = `src` (rows × cols)ᵀ, both row-major, in square tiles spread over
/// the threads. Element by element, every store of a row goes to a different cache line,
/// which for a large hidden size costs more than the products that read the result
/// (docs/benchmarks.md, "The training step", change 16).
pub(super) fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 64;
    assert!(src.len() == rows * cols && dst.len() == rows * cols);
    // One task per band of TILE rows of `dst` (TILE columns of `src`).
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, dst)| {
            let c0 = band * TILE;
            let width = dst.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                let height = TILE.min(rows - r0);
                for c in 0..width {
                    let out = &mut dst[c * rows + r0..][..height];
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = src[(r0 + r) * cols + c0 + c];
                    }
                }
            }
        });
}

/// `sums[j] += Σ_i rows[i][j]` over the rows of a dense row-major matrix as wide as `sums`,
/// in column blocks spread over the threads.
pub(super) fn column_sums(rows: &[f32], sums: &mut [f32]) {
    let width = sums.len();
    const BLOCK: usize = 64;
    sums.par_chunks_mut(BLOCK).enumerate().for_each(|(b, sums)| {
        for row in rows.chunks_exact(width) {
            for (s, v) in sums.iter_mut().zip(&row[b * BLOCK..]) {
                *s += v;
            }
        }
    });
}

/// dst (m × n) += lhs (m × k) · rhs (k × n), all dense row-major, the columns split over
/// rayon's threads with one single-threaded GEMM per block.
pub(super) fn column_split_matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    let threads = rayon::current_num_threads().max(1);
    // Blocks of whole 16-lane vectors.
    let block = n.div_ceil(threads).next_multiple_of(16).min(n).max(1);
    let dst_addr = dst.as_mut_ptr() as usize;
    (0..n.div_ceil(block)).into_par_iter().for_each(|b| {
        let first = b * block;
        let width = block.min(n - first);
        // SAFETY: the asserts above bound every view; block b writes only columns
        // first..first + width of dst, disjoint from every other block's, and dst does not
        // overlap lhs or rhs (a unique and two shared borrows).
        unsafe {
            matmul(
                (m, width, k),
                (dst_addr as *mut f32).add(first),
                n,
                true,
                View {
                    ptr: lhs.as_ptr(),
                    row_stride: k as isize,
                    col_stride: 1,
                },
                View {
                    ptr: rhs.as_ptr().add(first),
                    row_stride: n as isize,
                    col_stride: 1,
                },
                Parallelism::None,
            );
        }
    });
}
