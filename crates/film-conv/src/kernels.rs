//! The three f32 convolution kernels on plain slices: forward, input
//! gradient and parameter (weight and bias) gradients, each a loop of GEMMs
//! over images and bands of output rows.
//!
//! Threading: with at least two images, images are spread over rayon's
//! threads and each GEMM runs single-threaded (no synchronisation inside a
//! GEMM, and every thread streams its own image); with one image the GEMMs
//! themselves are parallel.

use gemm::Parallelism;
use kernel_launch::cpu::{gemm_f32, Strided};
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
#[derive(Clone, Copy)]
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

impl<'a> MatRef<'a> {
    /// A row-major matrix whose rows start `row_stride` apart.
    fn rows(data: &'a [f32], row_stride: usize) -> Self {
        MatRef {
            data,
            rs: row_stride,
            cs: 1,
        }
    }

    /// The transpose of [`MatRef::rows`]: the same memory read column by column.
    fn transposed(data: &'a [f32], row_stride: usize) -> Self {
        MatRef {
            data,
            rs: 1,
            cs: row_stride,
        }
    }
}

impl<'a> MatMut<'a> {
    /// A row-major matrix whose rows start `row_stride` apart.
    fn rows(data: &'a mut [f32], row_stride: usize) -> Self {
        MatMut {
            data,
            rs: row_stride,
            cs: 1,
        }
    }
}

/// Calls `f(rows, cols)` for each band of [`band_rows`] output rows, `rows` the band's
/// output rows and `cols` a scratch buffer of K x (the band's output pixels), where the
/// patches of an im2col go.
fn for_each_band(g: &ConvGeometry, mut f: impl FnMut(std::ops::Range<usize>, &mut [f32])) {
    let (k, rows) = (g.patch_len(), band_rows(g));
    let mut cols = ScratchBuf::take(k * rows * g.out_w);
    for oy0 in (0..g.out_h).step_by(rows) {
        let oy1 = (oy0 + rows).min(g.out_h);
        f(oy0..oy1, &mut cols[..k * (oy1 - oy0) * g.out_w]);
    }
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
    let view = |m: &MatRef<'_>| Strided {
        ptr: m.data.as_ptr(),
        row_stride: m.rs as isize,
        col_stride: m.cs as isize,
    };
    // SAFETY: the three views are in bounds (asserted above), `dst` is a
    // unique borrow that does not alias the shared `lhs`/`rhs` borrows, and
    // the strides fit in isize because they index into live slices.
    unsafe {
        gemm_f32(
            (m, n, k),
            dst.data.as_mut_ptr(),
            (dst.rs as isize, dst.cs as isize),
            accumulate,
            view(&lhs),
            view(&rhs),
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
    forward_with(g, x, w, bias, out, |out| {
        if relu {
            for v in out.iter_mut() {
                *v = v.max(0.0);
            }
        }
    });
}

/// `out = conv(x, w) + bias` as [`forward`], then `epilogue` on each image's output
/// (C_out x OH x OW) right after its products, while it is in cache; the epilogue's
/// results come back in image order. A caller that reduces over the output (BatchNorm's
/// statistics) saves a pass over the whole batch's output in memory.
pub fn forward_with<T: Send>(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    epilogue: impl Fn(&mut [f32]) -> T + Sync,
) -> Vec<T> {
    let (in_len, out_len) = (g.in_image_len(), g.out_image_len());
    let one = |image: &[f32], out: &mut [f32], par| {
        forward_image(g, image, w, bias, out, par);
        epilogue(out)
    };
    if split_images(g) {
        x.par_chunks_exact(in_len)
            .zip(out.par_chunks_exact_mut(out_len))
            .map(|(image, out)| one(image, out, Parallelism::None))
            .collect()
    } else {
        x.chunks_exact(in_len)
            .zip(out.chunks_exact_mut(out_len))
            .map(|(image, out)| one(image, out, Parallelism::Rayon(0)))
            .collect()
    }
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
    let weight = MatRef::rows(w, k);
    if g.is_pointwise() {
        let out = MatMut::rows(out, plane);
        let image = MatRef::rows(image, plane);
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
    for_each_band(g, |rows, cols| {
        let band = cols.len() / k;
        im2col(g, image, rows.start, rows.end, cols);
        let out = MatMut::rows(&mut out[rows.start * g.out_w..], plane);
        let cols = MatRef::rows(cols, band);
        matmul((g.out_channels, band, k), out, bias.is_some(), weight, cols, par);
    });
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
    let weight = InputGradWeight::new(g, w);
    for_each_image(g, dy, g.out_image_len(), dx, g.in_image_len(), |dy, dx, par| {
        input_grad_image(g, dy, &weight, dx, par)
    });
}

/// The weight as the input gradient reads it: as is, or flipped and transposed for the
/// adjoint convolution.
enum InputGradWeight<'a> {
    /// With stride 1 the input gradient is itself a forward convolution ([`adjoint_geometry`]),
    /// whose unfolding is a gather (im2col) instead of a scatter-add (col2im) and whose GEMM
    /// has the forward's better shape (long reduction over C_out x KH x KW).
    Adjoint(ConvGeometry, ScratchBuf),
    /// Otherwise: Wᵀ · dy into a patch matrix, folded back with col2im.
    Transposed(&'a [f32]),
}

impl<'a> InputGradWeight<'a> {
    fn new(g: &ConvGeometry, w: &'a [f32]) -> Self {
        match adjoint_geometry(g).filter(|_| !g.is_pointwise()) {
            Some(adjoint) => {
                let mut flipped = ScratchBuf::take(w.len());
                flip_transpose(g, w, &mut flipped);
                Self::Adjoint(adjoint, flipped)
            }
            None => Self::Transposed(w),
        }
    }
}

/// One image of [`input_grad`]: `dy` (C_out x OH x OW) to `dx` (C_in x H x W).
fn input_grad_image(
    g: &ConvGeometry,
    dy: &[f32],
    weight: &InputGradWeight<'_>,
    dx: &mut [f32],
    par: Parallelism,
) {
    let w = match weight {
        InputGradWeight::Adjoint(adjoint, flipped) => {
            forward_image(adjoint, dy, flipped, None, dx, par);
            return;
        }
        InputGradWeight::Transposed(w) => w,
    };
    let (k, plane) = (g.patch_len(), g.out_plane());
    // W read transposed: (K x C_out).
    let weight_t = MatRef::transposed(w, k);
    if g.is_pointwise() {
        let dx = MatMut::rows(dx, plane);
        let dy = MatRef::rows(dy, plane);
        matmul((k, plane, g.out_channels), dx, false, weight_t, dy, par);
        return;
    }
    dx.fill(0.0);
    for_each_band(g, |rows, cols| {
        let band = cols.len() / k;
        let dcols = MatMut::rows(&mut *cols, band);
        let dy = MatRef::rows(&dy[rows.start * g.out_w..], plane);
        matmul(
            (k, band, g.out_channels),
            dcols,
            false,
            MatRef::transposed(w, k),
            dy,
            par,
        );
        col2im_add(g, cols, rows.start, rows.end, dx);
    });
}

/// Whether [`accumulate_param_grad`] keeps the weight gradient transposed, K x C_out (row
/// `kk` holds patch element `kk` of every output channel), instead of C_out x K.
///
/// Why: the product is dy (C_out x plane) · colsᵀ, whose right operand is read across its
/// rows, and gemm runs it fastest when the destination's rows are the longer side (measured
/// per layer in docs/benchmarks.md, "The training step", change 20).
fn weight_grad_transposed(g: &ConvGeometry) -> bool {
    g.patch_len() > g.out_channels
}

/// The weight gradient inside an accumulator, in the layout [`weight_grad_transposed`] picks.
fn weight_grad_view<'a>(g: &ConvGeometry, data: &'a mut [f32]) -> MatMut<'a> {
    let (rs, cs) = match weight_grad_transposed(g) {
        true => (1, g.out_channels),
        false => (g.patch_len(), 1),
    };
    MatMut { data, rs, cs }
}

/// Adds one image's weight gradient (and bias gradient) onto `acc`: the weight gradient
/// (C_out x K, stored as [`weight_grad_view`] says), then C_out bias entries when
/// `with_bias`.
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
        let dy = MatRef::rows(dy, plane);
        let image_t = MatRef::transposed(image, plane);
        matmul(
            (g.out_channels, k, plane),
            weight_grad_view(g, dw),
            true,
            dy,
            image_t,
            par,
        );
        return;
    }
    for_each_band(g, |rows, cols| {
        let band = cols.len() / k;
        im2col(g, image, rows.start, rows.end, cols);
        let dy = MatRef::rows(&dy[rows.start * g.out_w..], plane);
        let cols_t = MatRef::transposed(cols, band);
        matmul(
            (g.out_channels, k, band),
            weight_grad_view(g, &mut *dw),
            true,
            dy,
            cols_t,
            par,
        );
    });
}

/// Adds `partial` (an accumulator of [`accumulate_param_grad`]) onto `out` (C_out x K
/// row-major, then the bias entries).
fn add_partial(g: &ConvGeometry, partial: &[f32], out: &mut [f32]) {
    let (k, weight_len) = (g.patch_len(), g.out_channels * g.patch_len());
    let (out_w, out_b) = out.split_at_mut(weight_len);
    if weight_grad_transposed(g) {
        for (co, row) in out_w.chunks_exact_mut(k).enumerate() {
            for (kk, o) in row.iter_mut().enumerate() {
                *o += partial[kk * g.out_channels + co];
            }
        }
    } else {
        for (o, p) in out_w.iter_mut().zip(&partial[..weight_len]) {
            *o += *p;
        }
    }
    for (o, p) in out_b.iter_mut().zip(&partial[weight_len..]) {
        *o += *p;
    }
}

/// The weight gradient (C_out x C_in x KH x KW, flattened) followed, when
/// `with_bias`, by the bias gradient (C_out), summed over the batch, into
/// `out` (which the caller zeroes).
pub fn param_grad(g: &ConvGeometry, x: &[f32], dy: &[f32], with_bias: bool, out: &mut [f32]) {
    let out_len = g.out_image_len();
    sum_over_image_chunks(g, x, None, out, |first, images, _, acc, par| {
        let dys = dy[first * out_len..].chunks_exact(out_len);
        for (image, dy) in images.chunks_exact(g.in_image_len()).zip(dys) {
            accumulate_param_grad(g, image, dy, acc, with_bias, par);
        }
    });
}

/// The backward of a convolution whose output gradient is made one image at a time:
/// `fill_dy(n, dy)` writes image `n`'s output gradient (C_out x OH x OW) into a scratch
/// buffer just before that image's products read it, so the whole batch's output gradient
/// never goes through memory. Then, as [`input_grad`] and [`param_grad`], the input gradient
/// into `dx` (N x C_in x H x W, every element written) when given, and the weight and
/// (when `with_bias`) bias gradients into `params_out` (which the caller zeroes).
pub fn backward_with(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    dx: Option<&mut [f32]>,
    with_bias: bool,
    params_out: &mut [f32],
    fill_dy: impl Fn(usize, &mut [f32]) + Sync,
) {
    let in_len = g.in_image_len();
    let weight = dx.is_some().then(|| InputGradWeight::new(g, w));
    sum_over_image_chunks(g, x, dx, params_out, |first, images, mut dx, acc, par| {
        let mut dy = ScratchBuf::take(g.out_image_len());
        for (i, image) in images.chunks_exact(in_len).enumerate() {
            fill_dy(first + i, &mut dy);
            if let (Some(dx), Some(weight)) = (dx.as_deref_mut(), &weight) {
                input_grad_image(g, &dy, weight, &mut dx[i * in_len..][..in_len], par);
            }
            accumulate_param_grad(g, image, &dy, acc, with_bias, par);
        }
    });
}

/// The batch loop of the parameter gradients: `chunk(first, images, dx, partial, par)`
/// adds the gradients of a run of images (the first being image `first`; `dx` their part
/// of the input gradient, when there is one) onto a zeroed partial sum laid out as
/// [`accumulate_param_grad`] leaves it; the partials are then added onto `out`.
///
/// With images spread over threads, one partial per chunk of images, reduced at the end:
/// summing into one shared buffer would serialise the threads. Two chunks per thread let
/// rayon rebalance when a thread is slowed (shared machines) at the cost of one more
/// zeroing and reduction of a weight-sized buffer. Otherwise one chunk, whose GEMMs are
/// parallel.
fn sum_over_image_chunks<F>(g: &ConvGeometry, x: &[f32], dx: Option<&mut [f32]>, out: &mut [f32], chunk: F)
where
    F: Fn(usize, &[f32], Option<&mut [f32]>, &mut [f32], Parallelism) + Sync,
{
    let in_len = g.in_image_len();
    let parallel = split_images(g);
    let chunks = match parallel {
        true => (2 * rayon::current_num_threads()).min(g.batch),
        false => 1,
    };
    let per_chunk = g.batch.div_ceil(chunks.max(1)).max(1);
    let dx_chunks: Vec<Option<&mut [f32]>> = match dx {
        Some(dx) => dx.chunks_mut(per_chunk * in_len).map(Some).collect(),
        None => x.chunks(per_chunk * in_len).map(|_| None).collect(),
    };
    let partial = |(index, (images, dx)): (usize, (&[f32], Option<&mut [f32]>)), par| {
        let mut acc = ScratchBuf::take(out.len());
        acc.fill(0.0);
        chunk(index * per_chunk, images, dx, &mut acc, par);
        acc
    };
    let partials: Vec<ScratchBuf> = match parallel {
        true => x
            .par_chunks(per_chunk * in_len)
            .zip(dx_chunks)
            .enumerate()
            .map(|item| partial(item, Parallelism::None))
            .collect(),
        false => x
            .chunks(per_chunk * in_len)
            .zip(dx_chunks)
            .enumerate()
            .map(|item| partial(item, Parallelism::Rayon(0)))
            .collect(),
    };
    for partial in &partials {
        add_partial(g, partial, out);
    }
}
