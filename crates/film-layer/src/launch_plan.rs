//! How each kernel of `cuda/film.cu` is launched for a given feature map: the kernel's
//! name, its grid, its blocks, its shared memory and its arguments. The CUDA launchers
//! (`cuda/mod.rs`) put device addresses in these calls and launch them; the tests below run
//! the same calls on the CPU through cuda-emulator, in every build, against a plain
//! reference.
//!
//! Packed accesses move 16 bytes when every operand is 16-byte aligned and the rows split
//! evenly into packs; 32-bit indexing is used when the tensor is small enough.

use crate::layout::{ChannelLayout, Geometry};
use kernel_launch::kernel_call::{KernelArg, KernelCall};

/// Bytes moved per packed access; the packed kernels need every operand's address to be a
/// multiple of it.
pub(crate) const PACK_BYTES: usize = 16;
/// Threads per block of the element-wise and channels-last kernels.
pub(crate) const THREADS: u32 = 256;
/// Resident blocks per multiprocessor that the grid-stride forward aims for
/// (8 × 256 threads fill an SM); more blocks would only loop less.
const BLOCKS_PER_SM: u32 = 8;
/// Packs each forward thread handles per turn of its loop: `FWD_UNROLL` in film.cu.
const FORWARD_UNROLL: usize = 4;
/// Blocks per multiprocessor the channels-last backward splits positions into.
const CL_BACKWARD_BLOCKS_PER_SM: u32 = 4;

/// Failures of the CUDA path that candle has no error for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KernelError {
    #[error("{op}: {what} of {value} exceeds what a CUDA grid can address")]
    TooLarge {
        op: &'static str,
        what: &'static str,
        value: usize,
    },
}

/// The buffers film.cu's kernels read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FilmBuffer {
    X,
    /// The packed (N, 2C) rows (γ | β).
    Params,
    Residual,
    Y,
    Dy,
    Dx,
    /// The (N, 2C) rows (dγ | dβ).
    DParams,
    /// The channels-last backward's partial sums: one (N, 2C) block per position chunk, in
    /// the accumulator type.
    Partial,
}

/// One launch of a film.cu kernel.
pub(crate) type Launch = KernelCall<FilmBuffer>;

/// The variant of the kernels a feature map takes: values per packed access (1: the
/// scalar kernels) and 64-bit indices or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    pub pack: usize,
    pub wide_index: bool,
}

impl Variant {
    /// For elements of `element_size` bytes; `aligned`: every operand starts on a 16-byte
    /// boundary.
    pub fn choose(geo: &Geometry, element_size: usize, aligned: bool) -> Variant {
        let pack = PACK_BYTES / element_size;
        let row_splits = match geo.layout {
            ChannelLayout::ChannelsFirst => geo.spatial.is_multiple_of(pack),
            ChannelLayout::ChannelsLast => geo.channels.is_multiple_of(pack),
        };
        Variant {
            pack: if aligned && row_splits { pack } else { 1 },
            wide_index: !fits_u32(geo),
        }
    }

    /// `v` for the packed kernels, `s` for the scalar ones.
    fn access(self) -> &'static str {
        if self.pack > 1 {
            "v"
        } else {
            "s"
        }
    }

    fn index(self) -> &'static str {
        if self.wide_index {
            "i64"
        } else {
            "i32"
        }
    }

    /// A size argument in the kernels' index type `I`.
    fn index_arg(self, v: usize) -> KernelArg<FilmBuffer> {
        match self.wide_index {
            true => KernelArg::U64(v as u64),
            false => KernelArg::U32(v as u32),
        }
    }
}

/// Whether 32-bit indices suffice: every index the kernels form, plus one grid stride of
/// overshoot in the loops, stays below `u32::MAX`.
pub(crate) fn fits_u32(geo: &Geometry) -> bool {
    let headroom = 1usize << 28;
    geo.numel().max(geo.param_len()) < u32::MAX as usize - headroom
}

fn grid_dim(op: &'static str, what: &'static str, blocks: usize) -> candle_core::Result<u32> {
    u32::try_from(blocks)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            candle_core::Error::wrap(KernelError::TooLarge {
                op,
                what,
                value: blocks,
            })
        })
}

fn layout_suffix(geo: &Geometry) -> &'static str {
    match geo.layout {
        ChannelLayout::ChannelsFirst => "cf",
        ChannelLayout::ChannelsLast => "cl",
    }
}

/// The forward `film_fwd_*`, y = relu?(γ ⊙ x + β) + residual?: a grid-stride loop,
/// FORWARD_UNROLL packs per thread and turn, as many blocks as the packs need up to
/// BLOCKS_PER_SM per multiprocessor.
pub(crate) fn forward(
    geo: &Geometry,
    dtype: &str,
    variant: Variant,
    sm_count: u32,
    relu: bool,
    residual: bool,
) -> candle_core::Result<Launch> {
    use FilmBuffer::*;
    let packs = geo.numel() / variant.pack;
    let blocks = packs
        .div_ceil(THREADS as usize * FORWARD_UNROLL)
        .min((sm_count * BLOCKS_PER_SM) as usize);
    Ok(Launch {
        kernel: format!(
            "film_fwd_{dtype}_{}_{}_{}",
            layout_suffix(geo),
            variant.access(),
            variant.index()
        ),
        grid: (grid_dim("film-fused", "blocks", blocks.max(1))?, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
        args: vec![
            KernelArg::Buffer(X),
            KernelArg::Buffer(Params),
            // Without a residual the kernel never reads its residual pointer; x stands in.
            KernelArg::Buffer(if residual { Residual } else { X }),
            KernelArg::Buffer(Y),
            variant.index_arg(geo.numel()),
            variant.index_arg(geo.channels),
            variant.index_arg(geo.spatial),
            KernelArg::I32(relu as i32),
            KernelArg::I32(residual as i32),
        ],
    })
}

/// The channels-first backward `film_bwd_cf_*`: one block per (example, channel) row, as
/// many threads as the row has packs, in whole warps, up to THREADS.
pub(crate) fn backward_channels_first(
    geo: &Geometry,
    dtype: &str,
    variant: Variant,
    relu: bool,
) -> candle_core::Result<Launch> {
    use FilmBuffer::*;
    let row_packs = (geo.spatial / variant.pack).max(1);
    let threads = (row_packs.div_ceil(32) * 32).min(THREADS as usize) as u32;
    Ok(Launch {
        kernel: format!("film_bwd_cf_{dtype}_{}_{}", variant.access(), variant.index()),
        grid: (grid_dim("film-fused-backward", "rows", geo.rows())?, 1, 1),
        block: (threads, 1, 1),
        shared_bytes: 0,
        args: vec![
            KernelArg::Buffer(X),
            KernelArg::Buffer(Dy),
            KernelArg::Buffer(Params),
            KernelArg::Buffer(Dx),
            KernelArg::Buffer(DParams),
            variant.index_arg(geo.channels),
            variant.index_arg(geo.spatial),
            KernelArg::I32(relu as i32),
        ],
    })
}

/// The channels-last backward: `film_bwd_cl_*` writes one partial (dγ | dβ) row per
/// position chunk into `Partial`, `chunks` (N, 2C) blocks, then `film_bwd_cl_finish_*`
/// adds the chunks into `DParams`.
pub(crate) struct ChannelsLastBackward {
    pub partial: Launch,
    pub finish: Launch,
    pub chunks: usize,
}

/// Blocks of (channel packs, positions) threads; the positions split into chunks so that
/// the grid fills the device, but each thread sums at least a few positions.
/// `accumulator_size`: bytes of the type partial sums are kept in.
pub(crate) fn backward_channels_last(
    geo: &Geometry,
    dtype: &str,
    variant: Variant,
    accumulator_size: usize,
    sm_count: u32,
    relu: bool,
) -> candle_core::Result<ChannelsLastBackward> {
    const OP: &str = "film-fused-backward";
    use FilmBuffer::*;
    let pack = variant.pack;
    let cvecs = geo.channels / pack;
    let bx = cvecs.clamp(1, 32);
    let by = THREADS as usize / bx;
    let tiles = cvecs.div_ceil(bx);
    let blocks_xy = geo.batch * tiles;
    let target = (sm_count * CL_BACKWARD_BLOCKS_PER_SM) as usize;
    let max_chunks = geo.spatial.div_ceil(4 * by).max(1);
    let chunks = target.div_ceil(blocks_xy.max(1)).clamp(1, max_chunks.min(65_535));
    let chunk = geo.spatial.div_ceil(chunks).max(1);
    let chunks = geo.spatial.div_ceil(chunk).max(1);
    let partial = Launch {
        kernel: format!("film_bwd_cl_{dtype}_{}_{}", variant.access(), variant.index()),
        grid: (grid_dim(OP, "example tiles", blocks_xy)?, 1, chunks as u32),
        block: (bx as u32, by as u32, 1),
        shared_bytes: (2 * by * bx * pack * accumulator_size) as u32,
        args: vec![
            KernelArg::Buffer(X),
            KernelArg::Buffer(Dy),
            KernelArg::Buffer(Params),
            KernelArg::Buffer(Dx),
            KernelArg::Buffer(Partial),
            variant.index_arg(geo.batch),
            variant.index_arg(geo.channels),
            variant.index_arg(geo.spatial),
            variant.index_arg(chunk),
            KernelArg::I32(relu as i32),
        ],
    };
    let blocks = geo
        .param_len()
        .div_ceil(THREADS as usize)
        .min((sm_count * BLOCKS_PER_SM) as usize);
    let finish = Launch {
        kernel: format!("film_bwd_cl_finish_{dtype}"),
        grid: (grid_dim(OP, "blocks", blocks.max(1))?, 1, 1),
        block: (THREADS, 1, 1),
        shared_bytes: 0,
        args: vec![
            KernelArg::Buffer(Partial),
            KernelArg::Buffer(DParams),
            KernelArg::U64(geo.param_len() as u64),
            KernelArg::U32(chunks as u32),
        ],
    };
    Ok(ChannelsLastBackward {
        partial,
        finish,
        chunks,
    })
}

/// film.cu's kernels run on the CPU (cuda-emulator) with the launches planned above and the
/// arguments `cuda/mod.rs` pushes, against a plain f64 reference: every dtype, both
/// layouts, packed and scalar accesses, 32- and 64-bit indices, ReLU and residual.
#[cfg(test)]
mod tests {
    use half::{bf16, f16};
    use kernel_launch::emulator::{self, Arg, DeviceBuffer, Element, Module};

    use super::*;

    /// A small device, so that the capped grids loop.
    const SM_COUNT: u32 = 1;

    fn film_kernels() -> &'static Module {
        kernel_launch::emulated_kernels!("film.cu", include_str!("cuda/film.cu"))
    }

    /// One dtype of the kernels: its storage on the device and its accumulator.
    trait Kind {
        type Stored: Element;
        type Acc: Element;
        const NAME: &'static str;
        /// Bound on the error relative to the largest value of an output.
        const TOLERANCE: f64;
        fn store(v: f64) -> Self::Stored;
        fn load(v: Self::Stored) -> f64;
        /// `v` rounded as the accumulator rounds it (for the ReLU's sign test).
        fn in_acc(v: f64) -> f64 {
            match std::mem::size_of::<Self::Acc>() {
                4 => v as f32 as f64,
                _ => v,
            }
        }
    }

    struct F32;
    struct F64;
    struct F16;
    struct BF16;

    impl Kind for F32 {
        type Stored = f32;
        type Acc = f32;
        const NAME: &'static str = "f32";
        const TOLERANCE: f64 = 1e-5;
        fn store(v: f64) -> f32 {
            v as f32
        }
        fn load(v: f32) -> f64 {
            v as f64
        }
    }

    impl Kind for F64 {
        type Stored = f64;
        type Acc = f64;
        const NAME: &'static str = "f64";
        const TOLERANCE: f64 = 1e-12;
        fn store(v: f64) -> f64 {
            v
        }
        fn load(v: f64) -> f64 {
            v
        }
    }

    impl Kind for F16 {
        type Stored = u16;
        type Acc = f32;
        const NAME: &'static str = "f16";
        const TOLERANCE: f64 = 2e-3;
        fn store(v: f64) -> u16 {
            f16::from_f64(v).to_bits()
        }
        fn load(v: u16) -> f64 {
            f16::from_bits(v).to_f64()
        }
    }

    impl Kind for BF16 {
        type Stored = u16;
        type Acc = f32;
        const NAME: &'static str = "bf16";
        const TOLERANCE: f64 = 1.6e-2;
        fn store(v: f64) -> u16 {
            bf16::from_f64(v).to_bits()
        }
        fn load(v: u16) -> f64 {
            bf16::from_bits(v).to_f64()
        }
    }

    /// Deterministic values in [lo, hi), rounded to what `K` stores.
    fn values<K: Kind>(seed: u64, len: usize, lo: f64, hi: f64) -> Vec<f64> {
        kernel_launch::test_values::unit_values(seed, len)
            .into_iter()
            .map(|unit| K::load(K::store(lo + (hi - lo) * unit)))
            .collect()
    }

    /// (example, channel) of element `e`.
    fn owner(geo: &Geometry, e: usize) -> (usize, usize) {
        match geo.layout {
            ChannelLayout::ChannelsFirst => {
                let row = e / geo.spatial;
                (row / geo.channels, row % geo.channels)
            }
            ChannelLayout::ChannelsLast => (e / geo.channels / geo.spatial, e % geo.channels),
        }
    }

    fn assert_close(what: &str, tolerance: f64, got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tolerance * scale,
                "{what}[{i}]: kernel {g}, reference {w} (largest {scale})"
            );
        }
    }

    /// Runs `call` on the emulator, each buffer it names given by `buffer`.
    fn run<'a>(call: &Launch, buffer: impl Fn(FilmBuffer) -> Arg<'a>) {
        emulator::launch(film_kernels(), call, |&b| buffer(b)).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Forward and backward of one case against the reference, with `variant` (what
    /// `Variant::choose` picks, or a forced scalar or wide-index variant).
    fn check<K: Kind>(geo: Geometry, variant: Variant, relu: bool, residual: bool) {
        let what = format!("{} {geo:?} {variant:?} relu {relu} residual {residual}", K::NAME);
        let (numel, params_len) = (geo.numel(), geo.param_len());
        let mut x = values::<K>(1, numel, -2.0, 2.0);
        let mut params = values::<K>(2, params_len, -1.5, 1.5);
        // Exact zeros of γx + β, where the ReLU's gradient must still pass: β = 0 for
        // channel 0 of every example and x = 0 at every seventh value.
        for n in 0..geo.batch {
            params[2 * geo.channels * n + geo.channels] = 0.0;
        }
        x.iter_mut().step_by(7).for_each(|v| *v = 0.0);
        let r = values::<K>(3, numel, -1.0, 1.0);
        let dy = values::<K>(4, numel, -1.0, 1.0);
        let store = |name: &str, v: &[f64]| {
            DeviceBuffer::from_slice(name, &v.iter().map(|&v| K::store(v)).collect::<Vec<_>>())
        };
        let load = |b: &DeviceBuffer<K::Stored>| b.values().into_iter().map(K::load).collect::<Vec<f64>>();

        // The reference, in f64 but for the ReLU's sign test, made in the accumulator's
        // precision as the kernels make it.
        let c = geo.channels;
        let (mut y_ref, mut dx_ref, mut dparams_ref) =
            (vec![0.0; numel], vec![0.0; numel], vec![0.0; params_len]);
        for e in 0..numel {
            let (n, ch) = owner(&geo, e);
            let (g, b) = (params[2 * c * n + ch], params[2 * c * n + c + ch]);
            let z = g * x[e] + b;
            let z_acc = K::in_acc(K::in_acc(K::in_acc(g) * K::in_acc(x[e])) + K::in_acc(b));
            y_ref[e] = if relu { z.max(0.0) } else { z } + if residual { r[e] } else { 0.0 };
            let d = if relu && z_acc < 0.0 { 0.0 } else { dy[e] };
            dx_ref[e] = g * d;
            dparams_ref[2 * c * n + ch] += d * x[e];
            dparams_ref[2 * c * n + c + ch] += d;
        }

        let (xs, ps, rs, dys) = (
            store("x", &x),
            store("params", &params),
            store("residual", &r),
            store("dy", &dy),
        );
        let launch = forward(&geo, K::NAME, variant, SM_COUNT, relu, residual).unwrap();
        assert!(
            residual || !launch.buffers().any(|&b| b == FilmBuffer::Residual),
            "a forward without residual must not pass one ({what})"
        );
        let (backward, partial_len) = match geo.layout {
            ChannelLayout::ChannelsFirst => (
                vec![backward_channels_first(&geo, K::NAME, variant, relu).unwrap()],
                0,
            ),
            ChannelLayout::ChannelsLast => {
                let acc_size = std::mem::size_of::<K::Acc>();
                let plan = backward_channels_last(&geo, K::NAME, variant, acc_size, SM_COUNT, relu).unwrap();
                (vec![plan.partial, plan.finish], plan.chunks * params_len)
            }
        };
        let (y, dx, dparams) = (
            DeviceBuffer::<K::Stored>::uninit("y", numel),
            DeviceBuffer::<K::Stored>::uninit("dx", numel),
            DeviceBuffer::<K::Stored>::uninit("dparams", params_len),
        );
        // Empty for the channels-first backward, which must not touch it.
        let partial = DeviceBuffer::<K::Acc>::uninit("partial", partial_len);
        let buffer = |b: FilmBuffer| -> Arg<'_> {
            use FilmBuffer::*;
            match b {
                X => Arg::buffer(&xs),
                Params => Arg::buffer(&ps),
                Residual => Arg::buffer(&rs),
                Y => Arg::buffer(&y),
                Dy => Arg::buffer(&dys),
                Dx => Arg::buffer(&dx),
                DParams => Arg::buffer(&dparams),
                Partial => Arg::buffer(&partial),
            }
        };
        run(&launch, buffer);
        assert_close(&format!("y ({what})"), K::TOLERANCE, &load(&y), &y_ref);
        for launch in &backward {
            run(launch, buffer);
        }
        assert_eq!(partial.guard_report(), None, "{what}");
        for buffer in [&xs, &ps, &rs, &dys, &y, &dx, &dparams] {
            assert_eq!(buffer.guard_report(), None, "{what}");
        }
        assert_close(&format!("dx ({what})"), K::TOLERANCE, &load(&dx), &dx_ref);
        assert_close(
            &format!("d(gamma | beta) ({what})"),
            K::TOLERANCE,
            &load(&dparams),
            &dparams_ref,
        );
    }

    /// Every variant a shape can take: the chosen one (packed where the rows split), the
    /// scalar kernels, and both with 64-bit indices.
    fn check_all<K: Kind>(geo: Geometry) {
        let element = std::mem::size_of::<K::Stored>();
        let chosen = Variant::choose(&geo, element, true);
        let scalar = Variant::choose(&geo, element, false);
        let mut variants = vec![chosen, scalar];
        variants.extend([chosen, scalar].map(|v| Variant {
            wide_index: true,
            ..v
        }));
        variants.dedup();
        for (i, variant) in variants.into_iter().enumerate() {
            // ReLU and residual in all four combinations for the chosen variant, one
            // combination each for the others.
            let flags: &[(bool, bool)] = match i {
                0 => &[(false, false), (true, false), (false, true), (true, true)],
                _ => &[(true, true)],
            };
            for &(relu, residual) in flags {
                check::<K>(geo, variant, relu, residual);
            }
        }
    }

    fn shapes() -> Vec<Geometry> {
        use ChannelLayout::*;
        let geo = |batch, channels, spatial, layout| Geometry {
            batch,
            channels,
            spatial,
            layout,
        };
        vec![
            // Rows of 64 split into packs of every width; rows of 36 only into f32's and
            // f64's; 35 into none.
            geo(3, 5, 64, ChannelsFirst),
            geo(2, 3, 36, ChannelsFirst),
            geo(2, 4, 35, ChannelsFirst),
            geo(2, 16, 9, ChannelsLast),
            geo(3, 12, 10, ChannelsLast),
            geo(2, 7, 6, ChannelsLast),
            // More channels than a block's 32 columns of packs (for the scalar and the
            // packed f64 kernels).
            geo(2, 72, 40, ChannelsLast),
            // Positions enough for several chunks (see the test of the plans).
            geo(1, 128, 100, ChannelsLast),
            // More (γ | β) sums than the finish kernel's capped grid has threads: it loops
            // (see the test of the plans).
            geo(9, 128, 3, ChannelsLast),
        ]
    }

    #[test]
    fn plans_pick_packed_scalar_and_wide_variants() {
        use ChannelLayout::*;
        let geo = |channels, spatial, layout| Geometry {
            batch: 2,
            channels,
            spatial,
            layout,
        };
        assert_eq!(Variant::choose(&geo(3, 64, ChannelsFirst), 4, true).pack, 4);
        assert_eq!(Variant::choose(&geo(3, 64, ChannelsFirst), 4, false).pack, 1);
        assert_eq!(Variant::choose(&geo(3, 36, ChannelsFirst), 2, true).pack, 1);
        assert_eq!(Variant::choose(&geo(16, 5, ChannelsLast), 2, true).pack, 8);
        let huge = Geometry {
            batch: 1 << 12,
            channels: 1 << 10,
            spatial: 1 << 10,
            layout: ChannelsFirst,
        };
        assert!(Variant::choose(&huge, 4, true).wide_index);
        let launch = forward(
            &geo(3, 64, ChannelsFirst),
            "f32",
            Variant::choose(&geo(3, 64, ChannelsFirst), 4, true),
            132,
            false,
            false,
        )
        .unwrap();
        assert_eq!(launch.kernel, "film_fwd_f32_cf_v_i32");
        // The last shape tested has more (γ | β) sums than the finish kernel's grid has
        // threads, so that its grid-stride loop turns.
        let finish_loops = Geometry {
            batch: 9,
            channels: 128,
            spatial: 3,
            layout: ChannelsLast,
        };
        let plan = backward_channels_last(
            &finish_loops,
            "f32",
            Variant::choose(&finish_loops, 4, true),
            4,
            SM_COUNT,
            false,
        )
        .unwrap();
        let finish_threads = plan.finish.grid.0 * plan.finish.block.0;
        assert!(
            (finish_threads as usize) < finish_loops.param_len(),
            "{finish_threads} threads for {} sums",
            finish_loops.param_len()
        );
        // The channels-last backward of the last shape but one splits its positions into
        // chunks, so that the finish kernel has partial sums to add.
        let many_positions = geo(128, 100, ChannelsLast);
        let many_positions = Geometry {
            batch: 1,
            ..many_positions
        };
        for element in [4, 8, 2] {
            let variant = Variant::choose(&many_positions, element, true);
            let plan = backward_channels_last(&many_positions, "f32", variant, 4, SM_COUNT, false).unwrap();
            assert!(
                plan.chunks > 1,
                "{element}-byte elements: {} chunk(s)",
                plan.chunks
            );
        }
    }

    #[test]
    fn f32_kernels_match_the_reference() {
        shapes().into_iter().for_each(check_all::<F32>);
    }

    #[test]
    fn f64_kernels_match_the_reference() {
        shapes().into_iter().for_each(check_all::<F64>);
    }

    #[test]
    fn f16_kernels_match_the_reference() {
        shapes().into_iter().for_each(check_all::<F16>);
    }

    #[test]
    fn bf16_kernels_match_the_reference() {
        shapes().into_iter().for_each(check_all::<BF16>);
    }

    /// A forward whose capped grid loops several times over the packs.
    #[test]
    fn the_forward_grid_stride_loop_covers_large_maps() {
        let geo = Geometry {
            batch: 4,
            channels: 8,
            spatial: 2048,
            layout: ChannelLayout::ChannelsFirst,
        };
        let variant = Variant::choose(&geo, 4, true);
        let launch = forward(&geo, "f32", variant, SM_COUNT, true, true).unwrap();
        assert!(
            (launch.grid.0 as usize) * (THREADS as usize) * FORWARD_UNROLL * variant.pack < geo.numel(),
            "the grid must not cover the map in one turn: {launch:?}"
        );
        check::<F32>(geo, variant, true, true);
    }
}
