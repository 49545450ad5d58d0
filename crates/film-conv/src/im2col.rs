//! Unfolding one image into the patch matrix the GEMMs read (im2col), and
//! folding a patch-matrix gradient back onto the image (col2im).
//!
//! The patch matrix of a band of output rows `oy0..oy1` has one row per
//! (input channel, ky, kx) — the order of the weight's flattened trailing
//! dimensions — and one column per output position of the band, so
//! `out[:, band] = W (C_out x K) · cols (K x band)`.

use crate::geometry::ConvGeometry;

/// The output columns `ox` whose input column `ox * stride + kx - padding`
/// lies inside the image; the others read zero padding.
fn valid_columns(g: &ConvGeometry, kx: usize) -> (usize, usize) {
    // ox * s + kx >= p  <=>  ox >= ceil((p - kx) / s)
    let lo = if g.padding > kx {
        (g.padding - kx).div_ceil(g.stride)
    } else {
        0
    };
    // ox * s + kx - p <= w - 1  <=>  ox <= (w - 1 + p - kx) / s
    let hi = if g.in_w + g.padding > kx {
        ((g.in_w - 1 + g.padding - kx) / g.stride + 1).min(g.out_w)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// The input row read by output row `oy` at kernel row `ky`, if inside.
fn input_row(g: &ConvGeometry, oy: usize, ky: usize) -> Option<usize> {
    (oy * g.stride + ky)
        .checked_sub(g.padding)
        .filter(|&iy| iy < g.in_h)
}

/// Writes the patch matrix of output rows `oy0..oy1` of one image
/// (`image`: C_in x H x W) into `cols` (K x band, band = (oy1-oy0) * out_w).
pub fn im2col(g: &ConvGeometry, image: &[f32], oy0: usize, oy1: usize, cols: &mut [f32]) {
    let band = (oy1 - oy0) * g.out_w;
    debug_assert_eq!(cols.len(), g.patch_len() * band);
    let mut rows = cols.chunks_exact_mut(band);
    for plane in image.chunks_exact(g.in_plane()) {
        for ky in 0..g.kernel_h {
            for kx in 0..g.kernel_w {
                let row = rows.next().expect("patch matrix has K rows");
                let (lo, hi) = valid_columns(g, kx);
                for (oy, dst) in (oy0..oy1).zip(row.chunks_exact_mut(g.out_w)) {
                    let Some(iy) = input_row(g, oy, ky) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &plane[iy * g.in_w..(iy + 1) * g.in_w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if hi == lo {
                        continue;
                    }
                    let first = lo * g.stride + kx - g.padding;
                    if g.stride == 1 {
                        dst[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        for (d, s) in dst[lo..hi].iter_mut().zip(src[first..].iter().step_by(g.stride)) {
                            *d = *s;
                        }
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
    let mut rows = cols.chunks_exact(band);
    for plane in image.chunks_exact_mut(g.in_plane()) {
        for ky in 0..g.kernel_h {
            for kx in 0..g.kernel_w {
                let row = rows.next().expect("patch matrix has K rows");
                let (lo, hi) = valid_columns(g, kx);
                for (oy, src) in (oy0..oy1).zip(row.chunks_exact(g.out_w)) {
                    let Some(iy) = input_row(g, oy, ky) else {
                        continue;
                    };
                    if hi == lo {
                        continue;
                    }
                    let dst = &mut plane[iy * g.in_w..(iy + 1) * g.in_w];
                    let first = lo * g.stride + kx - g.padding;
                    if g.stride == 1 {
                        for (d, s) in dst[first..first + (hi - lo)].iter_mut().zip(&src[lo..hi]) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst[first..].iter_mut().step_by(g.stride).zip(&src[lo..hi]) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}
