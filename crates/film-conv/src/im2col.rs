//! Unfolding one image into the patch matrix the GEMMs read (im2col), and
//! folding a patch-matrix gradient back onto the image (col2im).
//!
//! The patch matrix of a band of output rows `oy0..oy1` has one row per
//! (input channel, ky, kx) — the order of the weight's flattened trailing
//! dimensions — and one column per output position of the band, so
//! `out[:, band] = W (C_out x K) · cols (K x band)`.
//!
//! Both directions go through a [`PhasedPlane`]: one channel, zero-padded and
//! split into `stride` column phases, in which every output row of every
//! patch-matrix row is one contiguous run. The trunk's output rows are short
//! (8 to 32 columns), so per-run bookkeeping, boundary tests and strided
//! gathers, not bytes moved, were what unfolding cost; with the phased plane
//! each run is a branch-free copy in 8-lane chunks.

use crate::geometry::ConvGeometry;

/// Width of the fixed-size chunks runs are copied and added in: one AVX
/// register of f32, so each chunk is a single load and store.
const LANES: usize = 8;

/// One input channel, zero-padded by `padding` on every side and stored as
/// `stride` column phases: phase `r` holds the padded columns `r, r + s,
/// r + 2s, …`. The input column read by output column `ox` at kernel column
/// `kx` is padded column `ox * s + kx`, which is entry `ox + kx / s` of
/// phase `kx % s`: consecutive output columns read consecutive entries.
struct PhasedPlane {
    data: Vec<f32>,
    stride: usize,
    padding: usize,
    /// Rows of the padded plane, `in_h + 2 * padding`.
    rows: usize,
    /// Entries per row of one phase, `ceil((in_w + 2 * padding) / stride)`.
    phase_w: usize,
}

impl PhasedPlane {
    /// An all-zero plane for the geometry's input size.
    fn new(g: &ConvGeometry) -> Self {
        let rows = g.in_h + 2 * g.padding;
        let phase_w = (g.in_w + 2 * g.padding).div_ceil(g.stride);
        Self {
            data: vec![0.0; g.stride * rows * phase_w],
            stride: g.stride,
            padding: g.padding,
            rows,
            phase_w,
        }
    }

    /// Offset of the run read by kernel column `kx` along padded row 0,
    /// starting at output column 0; row `y`'s run is `y * phase_w` further.
    fn column_offset(&self, kx: usize) -> usize {
        (kx % self.stride) * self.rows * self.phase_w + kx / self.stride
    }

    /// For each patch-matrix row of one channel ((ky, kx) in the weight's order), the
    /// offset of its run along padded row 0. Computed once per call: the divisions by the
    /// stride in [`PhasedPlane::column_offset`] were, per channel and kernel position, a
    /// visible part of unfolding the blocks' 8x8 maps.
    fn run_offsets(&self, g: &ConvGeometry) -> Vec<usize> {
        (0..g.kernel_h)
            .flat_map(|ky| (0..g.kernel_w).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| self.column_offset(kx) + ky * self.phase_w)
            .collect()
    }

    /// The input columns that land in phase `r`: the first input column
    /// `ix0` and its entry `j0` in the phase (then every `stride`-th column).
    fn phase_start(&self, r: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.padding);
        // The first padded column x >= p with x % s == r.
        let x0 = p + (r + s - p % s) % s;
        (x0 - p, x0 / s)
    }

    /// With stride 2, the entries of input row `iy` in the plane: those of its even
    /// columns (0, 2, …) and of its odd ones, in order, which lie in the two phases. One
    /// pass over the row then (de)interleaves pairs, instead of a strided walk per phase
    /// (a third of the stem's unfolding time).
    fn stride_two_rows(&mut self, iy: usize, in_w: usize) -> (&mut [f32], &mut [f32]) {
        debug_assert_eq!(self.stride, 2);
        let p = self.padding;
        // Input column ix is padded column ix + p: phase (ix + p) % 2, entry (ix + p) / 2.
        let start = |first: usize| ((first % 2) * self.rows + iy + p) * self.phase_w + first / 2;
        let (even_start, odd_start) = (start(p), start(p + 1));
        let (n_even, n_odd) = (in_w.div_ceil(2), in_w / 2);
        // The two phases are separate blocks of the buffer.
        if even_start < odd_start {
            let (head, tail) = self.data.split_at_mut(odd_start);
            (&mut head[even_start..][..n_even], &mut tail[..n_odd])
        } else {
            let (head, tail) = self.data.split_at_mut(even_start);
            (&mut tail[..n_even], &mut head[odd_start..][..n_odd])
        }
    }

    /// Writes `plane` (`in_h x in_w`) into the interior; the padding entries
    /// are never written, so they stay zero from [`PhasedPlane::new`].
    fn load(&mut self, plane: &[f32], in_w: usize) {
        let (s, p) = (self.stride, self.padding);
        if s == 1 {
            let (rows, phase_w) = (plane.chunks_exact(in_w), self.phase_w);
            for (dst, src) in self.data[p * phase_w + p..].chunks_mut(phase_w).zip(rows) {
                dst[..in_w].copy_from_slice(src);
            }
            return;
        }
        for (iy, src) in plane.chunks_exact(in_w).enumerate() {
            if s == 2 {
                let (even, odd) = self.stride_two_rows(iy, in_w);
                let (pairs, last) = src.as_chunks::<2>();
                for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
                    *e = pair[0];
                    *o = pair[1];
                }
                if let [last] = last {
                    even[in_w / 2] = *last;
                }
                continue;
            }
            for r in 0..s {
                let (ix0, j0) = self.phase_start(r);
                let row = (r * self.rows + iy + p) * self.phase_w;
                let dst = &mut self.data[row + j0..row + self.phase_w];
                for (d, v) in dst.iter_mut().zip(src.iter().skip(ix0).step_by(s)) {
                    *d = *v;
                }
            }
        }
    }

    /// Adds the interior onto `plane` (`in_h x in_w`).
    fn add_interior_to(&mut self, plane: &mut [f32], in_w: usize) {
        let (s, p) = (self.stride, self.padding);
        if s == 1 {
            let (rows, phase_w) = (plane.chunks_exact_mut(in_w), self.phase_w);
            for (src, dst) in self.data[p * phase_w + p..].chunks(phase_w).zip(rows) {
                add_run(dst, src);
            }
            return;
        }
        for (iy, dst) in plane.chunks_exact_mut(in_w).enumerate() {
            if s == 2 {
                let (even, odd) = self.stride_two_rows(iy, in_w);
                let (pairs, last) = dst.as_chunks_mut::<2>();
                for ((e, o), pair) in even.iter().zip(odd.iter()).zip(pairs) {
                    pair[0] += *e;
                    pair[1] += *o;
                }
                if let [last] = last {
                    *last += even[in_w / 2];
                }
                continue;
            }
            for r in 0..s {
                let (ix0, j0) = self.phase_start(r);
                let row = (r * self.rows + iy + p) * self.phase_w;
                let src = &self.data[row + j0..row + self.phase_w];
                if s == 1 {
                    add_run(dst, src);
                    continue;
                }
                for (d, v) in dst.iter_mut().skip(ix0).step_by(s).zip(src) {
                    *d += *v;
                }
            }
        }
    }
}

/// `dst = src[..dst.len()]`, in fixed-size chunks (no call per run).
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    let src = &src[..dst.len()];
    let (dst_chunks, dst_rest) = dst.as_chunks_mut::<LANES>();
    let (src_chunks, src_rest) = src.as_chunks::<LANES>();
    for (d, s) in dst_chunks.iter_mut().zip(src_chunks) {
        *d = *s;
    }
    for (d, s) in dst_rest.iter_mut().zip(src_rest) {
        *d = *s;
    }
}

/// Runs of exactly `N` values: run `i` of `dst` (its `i`-th `N` values) is
/// `src[i * step..][..N]`. The bounds are checked once for all runs, not per run.
#[inline(always)]
fn copy_runs<const N: usize>(dst: &mut [f32], src: &[f32], step: usize) {
    let (runs, rest) = dst.as_chunks_mut::<N>();
    assert!(rest.is_empty());
    let Some(last) = runs.len().checked_sub(1) else {
        return;
    };
    assert!(last * step + N <= src.len());
    for (i, run) in runs.iter_mut().enumerate() {
        // SAFETY: i * step + N <= last * step + N <= src.len(), asserted above, and
        // [f32; N] has no alignment beyond f32's.
        *run = unsafe { src.as_ptr().add(i * step).cast::<[f32; N]>().read_unaligned() };
    }
}

/// The adjoint of [`copy_runs`]: `dst[i * step..][..N] += ` run `i` of `src`.
#[inline(always)]
fn add_runs<const N: usize>(dst: &mut [f32], src: &[f32], step: usize) {
    let (runs, rest) = src.as_chunks::<N>();
    assert!(rest.is_empty());
    let Some(last) = runs.len().checked_sub(1) else {
        return;
    };
    assert!(last * step + N <= dst.len());
    for (i, run) in runs.iter().enumerate() {
        // SAFETY: i * step + N <= last * step + N <= dst.len(), asserted above; the
        // pointer comes from the unique borrow `dst`, and [f32; N] has no alignment
        // beyond f32's.
        unsafe {
            let target = dst.as_mut_ptr().add(i * step).cast::<[f32; N]>();
            let mut sum = target.read_unaligned();
            for (a, b) in sum.iter_mut().zip(run) {
                *a += *b;
            }
            target.write_unaligned(sum);
        }
    }
}

/// `dst += src[..dst.len()]`, in fixed-size chunks.
#[inline(always)]
fn add_run(dst: &mut [f32], src: &[f32]) {
    let src = &src[..dst.len()];
    let (dst_chunks, dst_rest) = dst.as_chunks_mut::<LANES>();
    let (src_chunks, src_rest) = src.as_chunks::<LANES>();
    for (d, s) in dst_chunks.iter_mut().zip(src_chunks) {
        for (a, b) in d.iter_mut().zip(s) {
            *a += *b;
        }
    }
    for (d, s) in dst_rest.iter_mut().zip(src_rest) {
        *d += *s;
    }
}

/// Writes the patch matrix of output rows `oy0..oy1` of one image
/// (`image`: C_in x H x W) into `cols` (K x band, band = (oy1-oy0) * out_w).
pub fn im2col(g: &ConvGeometry, image: &[f32], oy0: usize, oy1: usize, cols: &mut [f32]) {
    let band = (oy1 - oy0) * g.out_w;
    debug_assert_eq!(cols.len(), g.patch_len() * band);
    let mut phased = PhasedPlane::new(g);
    let offsets = phased.run_offsets(g);
    let step = g.stride * phased.phase_w;
    let mut rows = cols.chunks_exact_mut(band);
    for plane in image.chunks_exact(g.in_plane()) {
        phased.load(plane, g.in_w);
        for &base in &offsets {
            let row = rows.next().expect("patch matrix has K rows");
            let src = &phased.data[base + oy0 * step..];
            match g.out_w {
                // The trunk's map widths (`mini`: 32, 16 and 8; the paper's: 14):
                // a run of known length is a few register moves, not a loop.
                8 => copy_runs::<8>(row, src, step),
                14 => copy_runs::<14>(row, src, step),
                16 => copy_runs::<16>(row, src, step),
                32 => copy_runs::<32>(row, src, step),
                _ => {
                    for (i, dst) in row.chunks_exact_mut(g.out_w).enumerate() {
                        copy_run(dst, &src[i * step..]);
                    }
                }
            }
        }
    }
}

/// Adds the patch-matrix gradient `cols` of output rows `oy0..oy1` onto the
/// image gradient `image` (C_in x H x W), the adjoint of [`im2col`].
pub fn col2im_add(g: &ConvGeometry, cols: &[f32], oy0: usize, oy1: usize, image: &mut [f32]) {
    let band = (oy1 - oy0) * g.out_w;
    debug_assert_eq!(cols.len(), g.patch_len() * band);
    let mut phased = PhasedPlane::new(g);
    let offsets = phased.run_offsets(g);
    let step = g.stride * phased.phase_w;
    let mut rows = cols.chunks_exact(band);
    for plane in image.chunks_exact_mut(g.in_plane()) {
        // Gradients that land on the padding are accumulated there and dropped.
        phased.data.fill(0.0);
        for &base in &offsets {
            let row = rows.next().expect("patch matrix has K rows");
            let dst = &mut phased.data[base + oy0 * step..];
            match g.out_w {
                8 => add_runs::<8>(dst, row, step),
                14 => add_runs::<14>(dst, row, step),
                16 => add_runs::<16>(dst, row, step),
                32 => add_runs::<32>(dst, row, step),
                _ => {
                    for (i, src) in row.chunks_exact(g.out_w).enumerate() {
                        add_run(&mut dst[i * step..][..g.out_w], src);
                    }
                }
            }
        }
        phased.add_interior_to(plane, g.in_w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::ConvParams;
    use candle_core::Shape;

    /// The patch matrix by its definition, one entry at a time.
    fn im2col_by_definition(g: &ConvGeometry, image: &[f32], oy0: usize, oy1: usize) -> Vec<f32> {
        let band = (oy1 - oy0) * g.out_w;
        let mut cols = vec![f32::NAN; g.patch_len() * band];
        for c in 0..g.in_channels {
            for ky in 0..g.kernel_h {
                for kx in 0..g.kernel_w {
                    let row = (c * g.kernel_h + ky) * g.kernel_w + kx;
                    for oy in oy0..oy1 {
                        for ox in 0..g.out_w {
                            let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                            let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                            let inside =
                                (0..g.in_h as isize).contains(&iy) && (0..g.in_w as isize).contains(&ix);
                            let v = if inside {
                                image[(c * g.in_h + iy as usize) * g.in_w + ix as usize]
                            } else {
                                0.0
                            };
                            cols[row * band + (oy - oy0) * g.out_w + ox] = v;
                        }
                    }
                }
            }
        }
        cols
    }

    fn geometry(c: usize, h: usize, w: usize, k: usize, stride: usize, padding: usize) -> ConvGeometry {
        ConvGeometry::new(
            &Shape::from((1, c, h, w)),
            &Shape::from((2, c, k, k)),
            ConvParams { stride, padding },
        )
        .unwrap()
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 100.0 - 5.0)
            .collect()
    }

    /// Shapes of the trunk (3x3 same, 4x4 stride 2) plus odd sizes, strides
    /// that do not divide the padded width, and padding wider than 1.
    fn geometries() -> Vec<ConvGeometry> {
        vec![
            geometry(3, 8, 8, 3, 1, 1),
            geometry(2, 16, 16, 4, 2, 1),
            geometry(2, 7, 9, 4, 2, 1),
            geometry(3, 11, 10, 3, 3, 2),
            geometry(1, 5, 13, 2, 1, 0),
            geometry(2, 20, 19, 5, 2, 2),
            geometry(4, 6, 6, 1, 1, 0),
            // Output widths with a fixed-length copy: 14, 16 and 32.
            geometry(2, 14, 14, 3, 1, 1),
            geometry(2, 32, 32, 4, 2, 1),
            geometry(1, 64, 64, 4, 2, 1),
        ]
    }

    #[test]
    fn im2col_matches_its_definition_for_every_band() {
        for g in geometries() {
            let image = values(g.in_image_len(), 7);
            for (oy0, oy1) in [(0, g.out_h), (0, 1), (g.out_h / 2, g.out_h)] {
                let band = (oy1 - oy0) * g.out_w;
                let mut cols = vec![f32::NAN; g.patch_len() * band];
                im2col(&g, &image, oy0, oy1, &mut cols);
                assert_eq!(
                    cols,
                    im2col_by_definition(&g, &image, oy0, oy1),
                    "{g:?} rows {oy0}..{oy1}"
                );
            }
        }
    }

    /// `<im2col(x), c> = <x, col2im(c)>` for all x and c is what makes
    /// col2im the gradient of im2col; checked entry by entry by adding the
    /// definition's scatter onto a non-zero starting image.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for g in geometries() {
            let (oy0, oy1) = (g.out_h / 3, g.out_h);
            let band = (oy1 - oy0) * g.out_w;
            let cols = values(g.patch_len() * band, 3);
            let start = values(g.in_image_len(), 11);
            let mut expected = start.clone();
            // Scatter through the definition: the index of every patch entry.
            let mut probe = vec![0.0; g.in_image_len()];
            for i in 0..probe.len() {
                probe[i] = 1.0;
                let unfolded = im2col_by_definition(&g, &probe, oy0, oy1);
                expected[i] += unfolded.iter().zip(&cols).map(|(u, c)| u * c).sum::<f32>();
                probe[i] = 0.0;
            }
            let mut image = start;
            col2im_add(&g, &cols, oy0, oy1, &mut image);
            for (i, (a, b)) in image.iter().zip(&expected).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "{g:?} entry {i}: {a} vs {b}"
                );
            }
        }
    }
}
