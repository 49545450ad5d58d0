//! The three f32 convolution kernels on plain slices: forward, input
//! gradient and parameter (weight and bias) gradients, each a loop of GEMMs
//! over images and bands of output rows.
//!
//! Threading: with at least two images, images are spread over rayon's
//! threads and each GEMM runs single-threaded (no synchronisation inside a
//! GEMM, and every thread streams its own image); with one image the GEMMs
//! themselves are parallel.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::geometry::ConvGeometry;
use crate::im2col::{col2im_add, im2col};
use crate::scratch::ScratchBuf;

/// Largest patch matrix of one band, in f32 elements (16 MiB). Large enough
/// that every trunk layer up to 3x3 from 1024 channels at 14x14 unfolds a
/// whole image at once (long GEMMs), small enough that the raw-pixel stem's
/// 4x4 layers at 112x112 and below keep the scratch memory bounded.
const MAX_BAND_ELEMS: usize = 4 << 20;

/// Output rows per band.
fn band_rows(g: &ConvGeometry) -> usize {
    (MAX_BAND_ELEMS / (g.patch_len() * g.out_w).max(1)).clamp(1, g.out_h)
}

/// A strided view of a matrix inside a slice: element (i, j) lives at
/// `data[i * rs + j * cs]`.
struct MatRef<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

struct MatMut<'a> {
    data: &'a mut [f32],
    rs: usize,
    cs: usize,
}

fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// `dst (m x n) = [dst +] lhs (m x k) · rhs (k x n)`.
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: MatMut<'_>,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    parallelism: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return;
    }
    // The bounds gemm relies on, checked once per call (cheap next to the
    // m*n*k multiply-adds).
    assert!(last_index(m, n, dst.rs, dst.cs) < dst.data.len());
    assert!(last_index(m, k, lhs.rs, lhs.cs) < lhs.data.len());
    assert!(last_index(k, n, rhs.rs, rhs.cs) < rhs.data.len());
    // SAFETY: the three views are in bounds (asserted above), `dst` is a
    // unique borrow that does not alias the shared `lhs`/`rhs` borrows, and
    // the strides fit in isize because they index into live slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Whether to spread images over threads (and run each GEMM serially), or
/// to run one image at a time with parallel GEMMs.
fn split_images(g: &ConvGeometry) -> bool {
    g.batch >= 2 && rayon::current_num_threads() >= 2
}

fn for_each_image<F>(g: &ConvGeometry, src: &[f32], src_len: usize, dst: &mut [f32], dst_len: usize, f: F)
where
    F: Fn(&[f32], &mut [f32], Parallelism) + Sync,
{
    if split_images(g) {
        src.par_chunks_exact(src_len)
            .zip(dst.par_chunks_exact_mut(dst_len))
            .for_each(|(s, d)| f(s, d, Parallelism::None));
    } else {
        src.chunks_exact(src_len)
            .zip(dst.chunks_exact_mut(dst_len))
            .for_each(|(s, d)| f(s, d, Parallelism::Rayon(0)));
    }
}

/// `out = conv(x, w) + bias`, then `max(out, 0)` when `relu`; `x` is N x C_in x H x W,
/// `w` is C_out x C_in x KH x KW, `out` is N x C_out x OH x OW, all contiguous. The ReLU
/// runs on each image's output right after its products, while it is in cache.
pub fn forward(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, relu: bool, out: &mut [f32]) {
    for_each_image(
        g,
        x,
        g.in_image_len(),
        out,
        g.out_image_len(),
        |image, out, par| {
            forward_image(g, image, w, bias, out, par);
            if relu {
                for v in out.iter_mut() {
                    *v = v.max(0.0);
                }
            }
        },
    );
}

/// One image of [`forward`], without the ReLU.
fn forward_image(
    g: &ConvGeometry,
    image: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    par: Parallelism,
) {
    let (k, plane) = (g.patch_len(), g.out_plane());
    if let Some(bias) = bias {
        for (row, &b) in out.chunks_exact_mut(plane).zip(bias) {
            row.fill(b);
        }
    }
    let weight = MatRef {
        data: w,
        rs: k,
        cs: 1,
    };
    if g.is_pointwise() {
        let out = MatMut {
            data: out,
            rs: plane,
            cs: 1,
        };
        let image = MatRef {
            data: image,
            rs: plane,
            cs: 1,
        };
        matmul(
            (g.out_channels, plane, k),
            out,
            bias.is_some(),
            weight,
            image,
            par,
        );
        return;
    }
    let rows = band_rows(g);
    let mut cols = ScratchBuf::take(k * rows * g.out_w);
    for oy0 in (0..g.out_h).step_by(rows) {
        let oy1 = (oy0 + rows).min(g.out_h);
        let band = (oy1 - oy0) * g.out_w;
        let cols = &mut cols[..k * band];
        im2col(g, image, oy0, oy1, cols);
        let out = MatMut {
            data: &mut out[oy0 * g.out_w..],
            rs: plane,
            cs: 1,
        };
        let cols = MatRef {
            data: cols,
            rs: band,
            cs: 1,
        };
        let weight = MatRef {
            data: w,
            rs: k,
            cs: 1,
        };
        matmul((g.out_channels, band, k), out, bias.is_some(), weight, cols, par);
    }
}

/// With stride 1 the input gradient is itself a forward convolution: of
/// `dy`, padded by `kernel - 1 - padding`, with the weight flipped in space
/// and its channel axes swapped. This is that convolution's geometry, when
/// it exists (square kernel, padding below the kernel size).
fn adjoint_geometry(g: &ConvGeometry) -> Option<ConvGeometry> {
    let square = g.kernel_h == g.kernel_w;
    (g.stride == 1 && square && g.padding < g.kernel_h).then(|| ConvGeometry {
        batch: g.batch,
        in_channels: g.out_channels,
        in_h: g.out_h,
        in_w: g.out_w,
        out_channels: g.in_channels,
        kernel_h: g.kernel_h,
        kernel_w: g.kernel_w,
        stride: 1,
        padding: g.kernel_h - 1 - g.padding,
        out_h: g.in_h,
        out_w: g.in_w,
    })
}

/// `w` (C_out x C_in x KH x KW) flipped in space, channel axes swapped:
/// the weight of [`adjoint_geometry`]'s convolution.
fn flip_transpose(g: &ConvGeometry, w: &[f32], flipped: &mut [f32]) {
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    for co in 0..g.out_channels {
        for ci in 0..g.in_channels {
            let src = &w[(co * g.in_channels + ci) * kh * kw..][..kh * kw];
            let dst = &mut flipped[(ci * g.out_channels + co) * kh * kw..][..kh * kw];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
}

/// `dx = ∂(sum(dy ⊙ conv(x, w))) / ∂x`: the transposed convolution of `dy`
/// (N x C_out x OH x OW) with `w`, written into `dx` (N x C_in x H x W), every element
/// (`dx` may hold anything before).
pub fn input_grad(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    // As a forward convolution the unfolding is a gather (im2col) instead of
    // a scatter-add (col2im), and the GEMM has the forward's better shape
    // (long reduction over C_out x KH x KW).
    if let Some(adjoint) = adjoint_geometry(g).filter(|_| !g.is_pointwise()) {
        let mut flipped = ScratchBuf::take(w.len());
        flip_transpose(g, w, &mut flipped);
        forward(&adjoint, dy, &flipped, None, false, dx);
        return;
    }
    let (k, plane) = (g.patch_len(), g.out_plane());
    for_each_image(g, dy, g.out_image_len(), dx, g.in_image_len(), |dy, dx, par| {
        // W read transposed: (K x C_out).
        let weight_t = MatRef {
            data: w,
            rs: 1,
            cs: k,
        };
        if g.is_pointwise() {
            let dx = MatMut {
                data: dx,
                rs: plane,
                cs: 1,
            };
            let dy = MatRef {
                data: dy,
                rs: plane,
                cs: 1,
            };
            matmul((k, plane, g.out_channels), dx, false, weight_t, dy, par);
            return;
        }
        dx.fill(0.0);
        let rows = band_rows(g);
        let mut cols = ScratchBuf::take(k * rows * g.out_w);
        for oy0 in (0..g.out_h).step_by(rows) {
            let oy1 = (oy0 + rows).min(g.out_h);
            let band = (oy1 - oy0) * g.out_w;
            let cols = &mut cols[..k * band];
            let dcols = MatMut {
                data: &mut *cols,
                rs: band,
                cs: 1,
            };
            let dy = MatRef {
                data: &dy[oy0 * g.out_w..],
                rs: plane,
                cs: 1,
            };
            let weight_t = MatRef {
                data: w,
                rs: 1,
                cs: k,
            };
            matmul((k, band, g.out_channels), dcols, false, weight_t, dy, par);
            col2im_add(g, cols, oy0, oy1, dx);
        }
    });
}

/// Adds one image's weight gradient (and bias gradient) onto `acc`
/// (C_out x K, then C_out bias entries when `with_bias`).
fn accumulate_param_grad(
    g: &ConvGeometry,
    image: &[f32],
    dy: &[f32],
    acc: &mut [f32],
    with_bias: bool,
    par: Parallelism,
) {
    let (k, plane) = (g.patch_len(), g.out_plane());
    let (dw, db) = acc.split_at_mut(g.out_channels * k);
    if with_bias {
        for (b, row) in db.iter_mut().zip(dy.chunks_exact(plane)) {
            *b += row.iter().sum::<f32>();
        }
    }
    if g.is_pointwise() {
        let dw = MatMut {
            data: dw,
            rs: k,
            cs: 1,
        };
        let dy = MatRef {
            data: dy,
            rs: plane,
            cs: 1,
        };
        let image_t = MatRef {
            data: image,
            rs: 1,
            cs: plane,
        };
        matmul((g.out_channels, k, plane), dw, true, dy, image_t, par);
        return;
    }
    let rows = band_rows(g);
    let mut cols = ScratchBuf::take(k * rows * g.out_w);
    for oy0 in (0..g.out_h).step_by(rows) {
        let oy1 = (oy0 + rows).min(g.out_h);
        let band = (oy1 - oy0) * g.out_w;
        let cols = &mut cols[..k * band];
        im2col(g, image, oy0, oy1, cols);
        let dw = MatMut {
            data: &mut *dw,
            rs: k,
            cs: 1,
        };
        let dy = MatRef {
            data: &dy[oy0 * g.out_w..],
            rs: plane,
            cs: 1,
        };
        let cols_t = MatRef {
            data: cols,
            rs: 1,
            cs: band,
        };
        matmul((g.out_channels, k, band), dw, true, dy, cols_t, par);
    }
}

/// The weight gradient (C_out x C_in x KH x KW, flattened) followed, when
/// `with_bias`, by the bias gradient (C_out), summed over the batch, into
/// `out` (which the caller zeroes).
pub fn param_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], with_bias: bool, out: &mut [f32]) {
    let (in_len, out_len) = (g.in_image_len(), g.out_image_len());
    if !split_images(g) {
        for (image, dy) in x.chunks_exact(in_len).zip(dy.chunks_exact(out_len)) {
            accumulate_param_grad(g, image, dy, out, with_bias, Parallelism::Rayon(0));
        }
        return;
    }
    // One partial sum per chunk of images, reduced at the end: summing into
    // one shared buffer would serialise the threads. Two chunks per thread
    // let rayon rebalance when a thread is slowed (shared machines) at the
    // cost of one more zeroing and reduction of a weight-sized buffer.
    let chunks = (2 * rayon::current_num_threads()).min(g.batch);
    let per_chunk = g.batch.div_ceil(chunks);
    let partials: Vec<ScratchBuf> = x
        .par_chunks(per_chunk * in_len)
        .zip(dy.par_chunks(per_chunk * out_len))
        .map(|(images, dys)| {
            let mut acc = ScratchBuf::take(out.len());
            acc.fill(0.0);
            for (image, dy) in images.chunks_exact(in_len).zip(dys.chunks_exact(out_len)) {
                accumulate_param_grad(g, image, dy, &mut acc, with_bias, Parallelism::None);
            }
            acc
        })
        .collect();
    for partial in &partials {
        for (o, p) in out.iter_mut().zip(partial.iter()) {
            *o += *p;
        }
    }
}
