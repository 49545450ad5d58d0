//! Multi-threaded CPU kernels for the fused FiLM forward and backward passes.
//!
//! Every kernel makes exactly one pass over the large tensors: the forward reads x (and
//! the residual) and writes y; the backward reads x and dy and writes dx while it sums
//! dγ and dβ. The feature map is processed as rows (see [`Geometry`]), split into one
//! contiguous run of rows per thread.

use std::mem::MaybeUninit;
use std::ops::{Add, AddAssign, Mul, Range};

use candle_core::WithDType;

use crate::layout::{ChannelLayout, Geometry};

/// Below this many elements per thread, starting a thread costs more than it saves.
const MIN_ELEMENTS_PER_THREAD: usize = 1 << 15;

/// Independent partial sums per row in the channels-first backward: a single running sum
/// would serialise on the add latency and cannot be vectorised without reassociation.
const LANES: usize = 16;

/// The type the kernels compute in: f32 for f32, f16 and bf16 storage; f64 for f64.
pub(crate) trait Compute:
    Copy + Send + Sync + PartialOrd + Add<Output = Self> + Mul<Output = Self> + AddAssign
{
    const ZERO: Self;
    fn from_f64(v: f64) -> Self;
}

impl Compute for f32 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Compute for f64 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
}

// For f32 storage the f32 -> f64 -> f32 round trip is exact and the optimiser removes it.
#[inline(always)]
fn load<T: WithDType, A: Compute>(v: T) -> A {
    A::from_f64(v.to_f64())
}

#[inline(always)]
fn store<T: WithDType, A: Compute + Into<f64>>(v: A) -> T {
    T::from_f64(v.into())
}

/// Whether the ReLU passes the gradient at `z`. At exactly 0 it does, as candle's own
/// `relu` backward does, so that the fused and reference paths agree bit for bit on
/// inputs (frequent in bf16) where γx + β cancels exactly. NaN passes nothing.
#[inline(always)]
fn passes_relu<A: Compute>(z: A) -> bool {
    z >= A::ZERO
}

#[inline(always)]
fn relu<A: Compute>(z: A) -> A {
    if z > A::ZERO {
        z
    } else {
        A::ZERO
    }
}

/// γ and β for the values of one row.
trait RowParams<A>: Copy {
    /// Number of values the parameters cover, `None` when one pair serves the whole row.
    fn len(&self) -> Option<usize>;
    fn at(&self, i: usize) -> (A, A);
}

/// Channels-first: the whole row is one channel of one example.
#[derive(Clone, Copy)]
struct PerRow<A> {
    gamma: A,
    beta: A,
}

impl<A: Compute> RowParams<A> for PerRow<A> {
    fn len(&self) -> Option<usize> {
        None
    }
    #[inline(always)]
    fn at(&self, _: usize) -> (A, A) {
        (self.gamma, self.beta)
    }
}

/// Channels-last: value `i` of the row belongs to channel `i`.
#[derive(Clone, Copy)]
struct PerValue<'a, T> {
    gamma: &'a [T],
    beta: &'a [T],
}

impl<'a, T> PerValue<'a, T> {
    fn new(gamma: &'a [T], beta: &'a [T]) -> Self {
        assert_eq!(gamma.len(), beta.len());
        PerValue { gamma, beta }
    }
}

impl<T: WithDType, A: Compute> RowParams<A> for PerValue<'_, T> {
    fn len(&self) -> Option<usize> {
        Some(self.gamma.len())
    }
    #[inline(always)]
    fn at(&self, i: usize) -> (A, A) {
        // SAFETY: `affine_row` asserts that the row is no longer than `len()`, which
        // `PerValue::new` made the length of both slices. A checked index here would
        // keep the row loop from being vectorised.
        unsafe {
            (
                load(*self.gamma.get_unchecked(i)),
                load(*self.beta.get_unchecked(i)),
            )
        }
    }
}

/// y = γ ⊙ x + β for one row, then the optional ReLU and residual.
#[inline(always)]
fn affine_row<T, A, P>(x: &[T], residual: Option<&[T]>, relu_on: bool, p: P, out: &mut [MaybeUninit<T>])
where
    T: WithDType,
    A: Compute + Into<f64>,
    P: RowParams<A>,
{
    let n = x.len();
    let out = &mut out[..n];
    if let Some(len) = p.len() {
        assert!(n <= len, "row of {n} values for {len} parameters");
    }
    // One loop per epilogue keeps each loop branch-free and vectorisable.
    match (residual, relu_on) {
        (None, false) => {
            for i in 0..n {
                let (g, b) = p.at(i);
                out[i].write(store(g * load(x[i]) + b));
            }
        }
        (None, true) => {
            for i in 0..n {
                let (g, b) = p.at(i);
                out[i].write(store(relu(g * load(x[i]) + b)));
            }
        }
        (Some(r), false) => {
            let r = &r[..n];
            for i in 0..n {
                let (g, b) = p.at(i);
                out[i].write(store(g * load(x[i]) + b + load(r[i])));
            }
        }
        (Some(r), true) => {
            let r = &r[..n];
            for i in 0..n {
                let (g, b) = p.at(i);
                out[i].write(store(relu(g * load(x[i]) + b) + load(r[i])));
            }
        }
    }
}

/// Splits `rows` rows of `row_len` values into contiguous runs, one per thread, and
/// calls `work(rows, out_rows)` for each run, the first on the calling thread.
/// Returns each run's result in row order.
fn for_each_run<T, R, F>(rows: usize, row_len: usize, out: &mut [MaybeUninit<T>], work: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(Range<usize>, &mut [MaybeUninit<T>]) -> R + Sync,
{
    let elements = rows * row_len;
    let threads = kernel_launch::cpu::num_threads()
        .min(elements / MIN_ELEMENTS_PER_THREAD)
        .min(rows)
        .max(1);
    if threads == 1 {
        return vec![work(0..rows, out)];
    }
    let rows_per_run = rows.div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let mut runs = out.chunks_mut(rows_per_run * row_len).enumerate();
        let (_, first) = runs.next().expect("at least one run");
        let handles: Vec<_> = runs
            .map(|(i, chunk)| {
                let start = i * rows_per_run;
                let end = (start + rows_per_run).min(rows);
                scope.spawn(move || work(start..end, chunk))
            })
            .collect();
        let mut results = vec![work(0..rows_per_run.min(rows), first)];
        results.extend(
            handles
                .into_iter()
                .map(|h| h.join().expect("FiLM worker thread panicked")),
        );
        results
    })
}

/// A vector of `len` values, each written by the kernel before it is read.
fn uninit_vec<T>(len: usize) -> Vec<MaybeUninit<T>> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialisation; capacity is `len`.
    unsafe { v.set_len(len) };
    v
}

/// # Safety
/// Every element of `v` must have been written.
unsafe fn assume_init<T>(v: Vec<MaybeUninit<T>>) -> Vec<T> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: MaybeUninit<T> has T's layout; the caller guarantees initialisation.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) }
}

/// Forward pass. `params` is the packed (N, 2C) matrix: row n holds γ_n then β_n.
pub(crate) fn forward<T, A>(
    geo: Geometry,
    x: &[T],
    params: &[T],
    residual: Option<&[T]>,
    relu_on: bool,
) -> Vec<T>
where
    T: WithDType,
    A: Compute + Into<f64>,
{
    assert_eq!(x.len(), geo.numel());
    assert_eq!(params.len(), geo.param_len());
    let (c, row_len) = (geo.channels, geo.row_len());
    let mut out = uninit_vec::<T>(geo.numel());
    for_each_run(geo.rows(), row_len, &mut out, |rows, out| {
        for (row, out_row) in rows.zip(out.chunks_exact_mut(row_len)) {
            let span = row * row_len..(row + 1) * row_len;
            let res_row = residual.map(|r| &r[span.clone()]);
            let x_row = &x[span];
            match geo.layout {
                ChannelLayout::ChannelsFirst => {
                    let (n, ch) = (row / c, row % c);
                    let p = PerRow::<A> {
                        gamma: load(params[2 * c * n + ch]),
                        beta: load(params[2 * c * n + c + ch]),
                    };
                    affine_row(x_row, res_row, relu_on, p, out_row);
                }
                ChannelLayout::ChannelsLast => {
                    let n = row / geo.spatial;
                    let p = PerValue::new(
                        &params[2 * c * n..2 * c * n + c],
                        &params[2 * c * n + c..2 * c * (n + 1)],
                    );
                    affine_row::<T, A, _>(x_row, res_row, relu_on, p, out_row);
                }
            }
        }
    });
    // SAFETY: the runs cover every row and `affine_row` writes every value of its row.
    unsafe { assume_init(out) }
}

/// Backward of one channels-first row: writes dx and returns (dγ, dβ) for the row's channel.
#[inline(always)]
fn backward_row_per_row<T, A>(
    x: &[T],
    dy: &[T],
    gamma: A,
    beta: A,
    relu_on: bool,
    dx: &mut [MaybeUninit<T>],
) -> (A, A)
where
    T: WithDType,
    A: Compute + Into<f64>,
{
    let n = x.len();
    let (dy, dx) = (&dy[..n], &mut dx[..n]);
    let mut dg = [A::ZERO; LANES];
    let mut db = [A::ZERO; LANES];
    let step =
        |i: usize, lane: usize, dg: &mut [A; LANES], db: &mut [A; LANES], dx: &mut [MaybeUninit<T>]| {
            let xv: A = load(x[i]);
            let mut d: A = load(dy[i]);
            if relu_on && !passes_relu(gamma * xv + beta) {
                d = A::ZERO;
            }
            dg[lane] += d * xv;
            db[lane] += d;
            dx[i].write(store(gamma * d));
        };
    let full = n - n % LANES;
    for base in (0..full).step_by(LANES) {
        for lane in 0..LANES {
            step(base + lane, lane, &mut dg, &mut db, dx);
        }
    }
    for i in full..n {
        step(i, 0, &mut dg, &mut db, dx);
    }
    let sum = |acc: [A; LANES]| acc.into_iter().fold(A::ZERO, |s, v| s + v);
    (sum(dg), sum(db))
}

/// Backward of one channels-last row: writes dx and adds into the example's dγ and dβ.
#[inline(always)]
fn backward_row_per_value<T, A>(
    x: &[T],
    dy: &[T],
    p: PerValue<'_, T>,
    relu_on: bool,
    dx: &mut [MaybeUninit<T>],
    dg: &mut [A],
    db: &mut [A],
) where
    T: WithDType,
    A: Compute + Into<f64>,
{
    let n = x.len();
    assert!(n <= p.gamma.len());
    let (dy, dx, dg, db) = (&dy[..n], &mut dx[..n], &mut dg[..n], &mut db[..n]);
    for i in 0..n {
        let (g, b): (A, A) = p.at(i);
        let xv: A = load(x[i]);
        let mut d: A = load(dy[i]);
        if relu_on && !passes_relu(g * xv + b) {
            d = A::ZERO;
        }
        dg[i] += d * xv;
        db[i] += d;
        dx[i].write(store(g * d));
    }
}

/// Backward pass. Returns one vector: dx (x's length) followed by the packed (N, 2C)
/// gradient of `params`, so the caller gets both from one candle op.
///
/// The residual needs no kernel: its gradient is dy itself.
pub(crate) fn backward<T, A>(geo: Geometry, x: &[T], dy: &[T], params: &[T], relu_on: bool) -> Vec<T>
where
    T: WithDType,
    A: Compute + Into<f64>,
{
    assert_eq!(x.len(), geo.numel());
    assert_eq!(dy.len(), geo.numel());
    assert_eq!(params.len(), geo.param_len());
    let (c, row_len, numel) = (geo.channels, geo.row_len(), geo.numel());
    let mut out = uninit_vec::<T>(numel + geo.param_len());
    let (dx, dparams) = out.split_at_mut(numel);
    // Each run sums into its own dense (N, 2C) buffer; adding the runs afterwards avoids
    // sharing accumulators between threads. The buffers are small next to the feature map.
    let partials = for_each_run(geo.rows(), row_len, dx, |rows, dx| {
        let mut acc = vec![A::ZERO; geo.param_len()];
        for (row, dx_row) in rows.zip(dx.chunks_exact_mut(row_len)) {
            let span = row * row_len..(row + 1) * row_len;
            let (x_row, dy_row) = (&x[span.clone()], &dy[span]);
            match geo.layout {
                ChannelLayout::ChannelsFirst => {
                    let (n, ch) = (row / c, row % c);
                    let (gi, bi) = (2 * c * n + ch, 2 * c * n + c + ch);
                    let (dg, db) = backward_row_per_row::<T, A>(
                        x_row,
                        dy_row,
                        load(params[gi]),
                        load(params[bi]),
                        relu_on,
                        dx_row,
                    );
                    acc[gi] += dg;
                    acc[bi] += db;
                }
                ChannelLayout::ChannelsLast => {
                    let n = row / geo.spatial;
                    let p = PerValue::new(
                        &params[2 * c * n..2 * c * n + c],
                        &params[2 * c * n + c..2 * c * (n + 1)],
                    );
                    let (dg, db) = acc[2 * c * n..2 * c * (n + 1)].split_at_mut(c);
                    backward_row_per_value(x_row, dy_row, p, relu_on, dx_row, dg, db);
                }
            }
        }
        acc
    });
    for (i, slot) in dparams.iter_mut().enumerate() {
        let total = partials.iter().fold(A::ZERO, |s, p| s + p[i]);
        slot.write(store(total));
    }
    // SAFETY: the runs write every value of dx, and the loop above every value of dparams.
    unsafe { assume_init(out) }
}
