//! The order of work of the GRU recurrence on a GPU (`cuda/mod.rs`): which product or gate
//! kernel reads and writes which rows at which step.
//!
//! It is written against the small [`Machine`] trait so that the same schedule also runs on
//! a CPU emulator in the tests below, in every build: offsets, strides and transposes are
//! where such code goes wrong, and a GPU is not always at hand to tell. The emulator
//! executes each product with cuBLAS's column-major semantics and each gate step either
//! with the CPU op's own per-question gate functions or with gru.cu's kernels themselves,
//! compiled for the CPU by the `cuda-emulator` crate; it leaves every buffer that the GPU
//! would leave unwritten full of NaN, so that reading a value before writing it shows.

use candle_core::Result;
use kernel_launch::kernel_call::{KernelArg, KernelCall};

use crate::recurrence::{gates::KEPT, Dims};

/// Threads per block of gru.cu's kernels, and the resident blocks per multiprocessor their
/// grid-stride loops aim for.
const GATE_GRID: (u32, u32) = (256, 8);

/// The buffers of one call: the op's operands, then what the forward and the backward
/// allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Buffer {
    Inputs,
    WeightHh,
    Packed,
    GradStates,
    Projected,
    States,
    Kept,
    Hh,
    GradX,
    GradHh,
    Next,
    GradWeightHh,
    Ones,
    GradPacked,
    GradInputs,
}

/// One element of a buffer, by its index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct At {
    pub buffer: Buffer,
    pub offset: usize,
}

impl At {
    fn plus(self, elements: usize) -> At {
        At {
            buffer: self.buffer,
            offset: self.offset + elements,
        }
    }
}

fn start(buffer: Buffer) -> At {
    At { buffer, offset: 0 }
}

/// A stored row-major matrix as an operand of a product, read transposed or not.
#[derive(Clone, Copy, Debug)]
struct Matrix {
    at: At,
    row_stride: usize,
    transposed: bool,
}

fn matrix(at: At, row_stride: usize) -> Matrix {
    Matrix {
        at,
        row_stride,
        transposed: false,
    }
}

fn transposed(at: At, row_stride: usize) -> Matrix {
    Matrix {
        at,
        row_stride,
        transposed: true,
    }
}

/// One column-major GEMM call as cuBLAS takes it, α = 1:
/// C (m × n, leading dimension `ldc`) = op(A) (m × k) · op(B) (k × n) + beta · C.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ColumnMajorGemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: At,
    pub lda: usize,
    pub b: At,
    pub ldb: usize,
    pub beta: f32,
    pub c: At,
    pub ldc: usize,
}

/// The column-major call for the row-major product C (m × n, row stride `c_row_stride`) =
/// op(A) (m × k) · op(B) (k × n) + beta · C.
///
/// A row-major matrix read column-major is its transpose, so row-major C = A·B is
/// column-major Cᵀ = Bᵀ·Aᵀ: B goes first, m and n swap, and every transpose flag and row
/// stride carries over unchanged.
fn column_major(
    (m, n, k): (usize, usize, usize),
    a: Matrix,
    b: Matrix,
    beta: f32,
    c: At,
    c_row_stride: usize,
) -> ColumnMajorGemm {
    ColumnMajorGemm {
        trans_a: b.transposed,
        trans_b: a.transposed,
        m: n,
        n: m,
        k,
        a: b.at,
        lda: b.row_stride,
        b: a.at,
        ldb: a.row_stride,
        beta,
        c,
        ldc: c_row_stride,
    }
}

/// The addresses of one forward gate step (`gru_step_fwd_f32` in gru.cu).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForwardStep {
    /// (N, 3H) input projections of the step, without bias.
    pub x: At,
    /// (N, 3H) hidden projections W_hh·h, without bias; not read at the first step.
    pub hh: At,
    pub bias_ih: At,
    pub bias_hh: At,
    /// (N, H) previous states; not read at the first step.
    pub previous: At,
    pub state: At,
    /// (N, 4H) kept gates.
    pub kept: At,
}

/// The addresses of one backward gate step (`gru_step_bwd_f32` in gru.cu).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackwardStep {
    pub kept: At,
    pub grad_state: At,
    /// Not read at the first step.
    pub previous: At,
    pub grad_x: At,
    pub grad_hh: At,
    /// (N, H) gradient carried between steps, updated in place.
    pub next: At,
}

impl ForwardStep {
    /// The launch of `gru_step_fwd_f32` for this step, on a device with `sm_count`
    /// multiprocessors. The sizes must fit 32 bits (the CUDA path checks it first).
    pub fn kernel_call(self, d: Dims, first: bool, sm_count: u32) -> KernelCall<At> {
        let args = [
            self.x,
            self.hh,
            self.bias_ih,
            self.bias_hh,
            self.previous,
            self.state,
            self.kept,
        ];
        gate_call("gru_step_fwd_f32", &args, d, first, sm_count)
    }
}

impl BackwardStep {
    /// The launch of `gru_step_bwd_f32` for this step; as [`ForwardStep::kernel_call`].
    pub fn kernel_call(self, d: Dims, first: bool, sm_count: u32) -> KernelCall<At> {
        let args = [
            self.kept,
            self.grad_state,
            self.previous,
            self.grad_x,
            self.grad_hh,
            self.next,
        ];
        gate_call("gru_step_bwd_f32", &args, d, first, sm_count)
    }
}

/// A gate kernel's launch: its buffers, then batch, hidden size and the first-step flag;
/// one thread per (example, unit) in a grid-stride loop.
fn gate_call(kernel: &str, buffers: &[At], d: Dims, first: bool, sm_count: u32) -> KernelCall<At> {
    let mut args: Vec<KernelArg<At>> = buffers.iter().map(|&at| KernelArg::Buffer(at)).collect();
    args.extend([
        KernelArg::U32(d.batch as u32),
        KernelArg::U32(d.hidden as u32),
        KernelArg::I32(first as i32),
    ]);
    KernelCall::grid_stride(kernel, d.batch * d.hidden, GATE_GRID, sm_count, args)
}

/// The launch of `gru_fill_f32` writing `len` ones from `at`.
pub(crate) fn fill_ones_call(at: At, len: usize, sm_count: u32) -> KernelCall<At> {
    let args = vec![
        KernelArg::Buffer(at),
        KernelArg::U32(len as u32),
        KernelArg::F32(1.0),
    ];
    KernelCall::grid_stride("gru_fill_f32", len, GATE_GRID, sm_count, args)
}

/// What the schedule needs from a device.
pub(crate) trait Machine {
    fn gemm(&mut self, call: ColumnMajorGemm) -> Result<()>;
    fn forward_step(&mut self, step: ForwardStep, first: bool) -> Result<()>;
    fn backward_step(&mut self, step: BackwardStep, first: bool) -> Result<()>;
    /// Writes `len` ones from `at`.
    fn fill_ones(&mut self, at: At, len: usize) -> Result<()>;
}

fn product(
    machine: &mut impl Machine,
    mnk: (usize, usize, usize),
    a: Matrix,
    b: Matrix,
    beta: f32,
    c: At,
    c_row_stride: usize,
) -> Result<()> {
    if mnk.0 == 0 || mnk.1 == 0 {
        return Ok(());
    }
    machine.gemm(column_major(mnk, a, b, beta, c, c_row_stride))
}

/// The forward: fills `Projected` (T·N, 3H), `States` (T·N, H) and `Kept` (T·N, 4H), using
/// `Hh` (N, 3H) as scratch, from `Inputs` (T·N, E), `WeightHh` (3H, H) and `Packed`
/// (W_ih (3H, E), b_ih, b_hh).
pub(crate) fn forward(d: Dims, machine: &mut impl Machine) -> Result<()> {
    let Dims {
        batch,
        steps,
        hidden: h,
        input,
    } = d;
    use Buffer::*;
    let bias_ih = start(Packed).plus(3 * h * input);
    // projected (T·N × 3H) = inputs (T·N × E) · W_ihᵀ
    product(
        machine,
        (steps * batch, 3 * h, input),
        matrix(start(Inputs), input),
        transposed(start(Packed), input),
        0.0,
        start(Projected),
        3 * h,
    )?;
    for t in 0..steps {
        let previous = start(States).plus(t.saturating_sub(1) * batch * h);
        if t > 0 {
            // hh (N × 3H) = h_{t-1} (N × H) · W_hhᵀ
            product(
                machine,
                (batch, 3 * h, h),
                matrix(previous, h),
                transposed(start(WeightHh), h),
                0.0,
                start(Hh),
                3 * h,
            )?;
        }
        machine.forward_step(
            ForwardStep {
                x: start(Projected).plus(t * batch * 3 * h),
                hh: start(Hh),
                bias_ih,
                bias_hh: bias_ih.plus(3 * h),
                previous,
                state: start(States).plus(t * batch * h),
                kept: start(Kept).plus(t * batch * KEPT * h),
            },
            t == 0,
        )?;
    }
    Ok(())
}

/// The backward: from the forward's buffers and `GradStates` (T·N, H), fills
/// `GradWeightHh` (3H, H; must start at zero, as a single step writes no product into it),
/// `GradPacked` (d W_ih, d b_ih, d b_hh) and, when `want_inputs`, `GradInputs` (T·N, E),
/// using `GradX`, `GradHh` (T·N, 3H each), `Next` (N, H; must start at zero) and `Ones`
/// (T·N) as scratch.
pub(crate) fn backward(d: Dims, want_inputs: bool, machine: &mut impl Machine) -> Result<()> {
    let Dims {
        batch,
        steps,
        hidden: h,
        input,
    } = d;
    use Buffer::*;
    let rows = steps * batch;
    for t in (0..steps).rev() {
        let grad_hh_t = start(GradHh).plus(t * batch * 3 * h);
        machine.backward_step(
            BackwardStep {
                kept: start(Kept).plus(t * batch * KEPT * h),
                grad_state: start(GradStates).plus(t * batch * h),
                previous: start(States).plus(t.saturating_sub(1) * batch * h),
                grad_x: start(GradX).plus(t * batch * 3 * h),
                grad_hh: grad_hh_t,
                next: start(Next),
            },
            t == 0,
        )?;
        if t > 0 {
            // next (N × H) += d hh_t (N × 3H) · W_hh (3H × H): the path through W_hh.
            product(
                machine,
                (batch, h, 3 * h),
                matrix(grad_hh_t, 3 * h),
                matrix(start(WeightHh), h),
                1.0,
                start(Next),
                h,
            )?;
        }
    }
    if steps > 1 {
        // d W_hh (3H × H) = Σ_{t≥1} d hh_tᵀ · h_{t-1}: one product over (T-1)·N rows.
        product(
            machine,
            (3 * h, h, (steps - 1) * batch),
            transposed(start(GradHh).plus(batch * 3 * h), 3 * h),
            matrix(start(States), h),
            0.0,
            start(GradWeightHh),
            h,
        )?;
    }
    // d W_ih (3H × E) = d xᵀ · inputs, at the start of the packed gradient.
    product(
        machine,
        (3 * h, input, rows),
        transposed(start(GradX), 3 * h),
        matrix(start(Inputs), input),
        0.0,
        start(GradPacked),
        input,
    )?;
    // The bias gradients are the column sums of the projection gradients: a row of ones
    // times each.
    machine.fill_ones(start(Ones), rows)?;
    let grad_bias_ih = start(GradPacked).plus(3 * h * input);
    for (gradient, bias) in [(GradX, grad_bias_ih), (GradHh, grad_bias_ih.plus(3 * h))] {
        product(
            machine,
            (1, 3 * h, rows),
            matrix(start(Ones), rows),
            matrix(start(gradient), 3 * h),
            0.0,
            bias,
            3 * h,
        )?;
    }
    if want_inputs {
        // d inputs (T·N × E) = d x (T·N × 3H) · W_ih (3H × E)
        product(
            machine,
            (rows, input, 3 * h),
            matrix(start(GradX), 3 * h),
            matrix(start(Packed), input),
            0.0,
            start(GradInputs),
            input,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use kernel_launch::emulator::{self, Arg, DeviceBuffer, Module};

    use super::*;
    use crate::recurrence::{cpu, gates};

    /// The schedule's device, emulated on the CPU; the gate steps run `gate_kernels` (gru.cu
    /// compiled for the CPU) when given, the CPU op's gate functions otherwise.
    struct Emulator {
        d: Dims,
        buffers: HashMap<Buffer, Vec<f32>>,
        gate_kernels: Option<&'static Module>,
    }

    /// gru.cu, compiled once for the CPU.
    fn gru_kernels() -> &'static Module {
        kernel_launch::emulated_kernels!("gru.cu", include_str!("cuda/gru.cu"))
    }

    /// A small device, so that the gate kernels' capped grids loop over the larger shapes.
    const SM_COUNT: u32 = 1;

    impl Emulator {
        fn slice(&self, at: At, len: usize) -> Vec<f32> {
            self.buffers[&at.buffer][at.offset..at.offset + len].to_vec()
        }

        fn write(&mut self, at: At, values: &[f32]) {
            let buffer = self.buffers.get_mut(&at.buffer).expect("an allocated buffer");
            buffer[at.offset..at.offset + values.len()].copy_from_slice(values);
        }

        /// Runs `call` (of gru.cu's kernels) on the emulated device. Every buffer it
        /// addresses is copied in whole and copied back.
        fn launch(&mut self, module: &Module, call: KernelCall<At>) -> Result<()> {
            let mut device: HashMap<Buffer, DeviceBuffer> = HashMap::new();
            for at in call.buffers() {
                device.entry(at.buffer).or_insert_with(|| {
                    DeviceBuffer::from_slice(&format!("{:?}", at.buffer), &self.buffers[&at.buffer])
                });
            }
            emulator::launch(module, &call, |at| Arg::at(&device[&at.buffer], at.offset))
                .map_err(candle_core::Error::wrap)?;
            for (buffer, values) in device {
                assert_eq!(values.guard_report(), None, "{}", call.kernel);
                self.buffers.insert(buffer, values.values());
            }
            Ok(())
        }
    }

    impl Machine for Emulator {
        /// cuBLAS's column-major GEMM, element by element; with beta = 0, C is not read
        /// (as in cuBLAS, so NaN there does not leak).
        fn gemm(&mut self, g: ColumnMajorGemm) -> Result<()> {
            // cuBLAS refuses leading dimensions shorter than the stored columns.
            let (a_rows, b_rows) = (
                if g.trans_a { g.k } else { g.m },
                if g.trans_b { g.n } else { g.k },
            );
            assert!(
                g.lda >= a_rows.max(1) && g.ldb >= b_rows.max(1) && g.ldc >= g.m.max(1),
                "leading dimensions cuBLAS would refuse: {g:?}"
            );
            let a = &self.buffers[&g.a.buffer];
            let b = &self.buffers[&g.b.buffer];
            let a_at = |i: usize, p: usize| match g.trans_a {
                false => a[g.a.offset + i + p * g.lda],
                true => a[g.a.offset + p + i * g.lda],
            };
            let b_at = |p: usize, j: usize| match g.trans_b {
                false => b[g.b.offset + p + j * g.ldb],
                true => b[g.b.offset + j + p * g.ldb],
            };
            let mut out = Vec::with_capacity(g.m * g.n);
            for j in 0..g.n {
                for i in 0..g.m {
                    let sum: f64 = (0..g.k).map(|p| a_at(i, p) as f64 * b_at(p, j) as f64).sum();
                    out.push((i, j, sum as f32));
                }
            }
            let c = self.buffers.get_mut(&g.c.buffer).expect("an allocated buffer");
            for (i, j, v) in out {
                let slot = &mut c[g.c.offset + i + j * g.ldc];
                *slot = if g.beta == 0.0 { v } else { v + g.beta * *slot };
            }
            Ok(())
        }

        fn forward_step(&mut self, s: ForwardStep, first: bool) -> Result<()> {
            let Dims { batch, hidden: h, .. } = self.d;
            if let Some(module) = self.gate_kernels {
                return self.launch(module, s.kernel_call(self.d, first, SM_COUNT));
            }
            let zeros = vec![0f32; 3 * h];
            for i in 0..batch {
                let x = self.slice(s.x.plus(i * 3 * h), 3 * h);
                let (hh, previous) = match first {
                    true => (zeros.clone(), zeros[..h].to_vec()),
                    false => (
                        self.slice(s.hh.plus(i * 3 * h), 3 * h),
                        self.slice(s.previous.plus(i * h), h),
                    ),
                };
                let (bias_ih, bias_hh) = (self.slice(s.bias_ih, 3 * h), self.slice(s.bias_hh, 3 * h));
                let (mut state, mut kept) = (vec![0f32; h], vec![0f32; KEPT * h]);
                gates::forward_gates(h, &x, &hh, (&bias_ih, &bias_hh), &previous, &mut state, &mut kept);
                self.write(s.state.plus(i * h), &state);
                self.write(s.kept.plus(i * KEPT * h), &kept);
            }
            Ok(())
        }

        fn backward_step(&mut self, s: BackwardStep, first: bool) -> Result<()> {
            let Dims { batch, hidden: h, .. } = self.d;
            if let Some(module) = self.gate_kernels {
                return self.launch(module, s.kernel_call(self.d, first, SM_COUNT));
            }
            for i in 0..batch {
                let kept = self.slice(s.kept.plus(i * KEPT * h), KEPT * h);
                let grad_state = self.slice(s.grad_state.plus(i * h), h);
                let previous = match first {
                    true => vec![0f32; h],
                    false => self.slice(s.previous.plus(i * h), h),
                };
                let mut next = self.slice(s.next.plus(i * h), h);
                let (mut gp, mut ghh) = (vec![0f32; 3 * h], vec![0f32; 3 * h]);
                gates::backward_gates(h, &kept, &grad_state, &previous, &mut gp, &mut ghh, &mut next);
                self.write(s.grad_x.plus(i * 3 * h), &gp);
                self.write(s.grad_hh.plus(i * 3 * h), &ghh);
                self.write(s.next.plus(i * h), &next);
            }
            Ok(())
        }

        fn fill_ones(&mut self, at: At, len: usize) -> Result<()> {
            if let Some(module) = self.gate_kernels {
                return self.launch(module, fill_ones_call(at, len, SM_COUNT));
            }
            self.write(at, &vec![1.0; len]);
            Ok(())
        }
    }

    /// Deterministic values in [-scale, scale).
    fn values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
        kernel_launch::test_values::unit_values(seed, len)
            .into_iter()
            .map(|unit| (unit as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-20);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * scale,
                "{what}[{i}]: schedule {g}, CPU op {w} (largest value {scale})"
            );
        }
    }

    /// The schedule, run on the emulator with the CPU op's gate functions, against the CPU
    /// op: states, kept gates and every gradient.
    #[test]
    fn gpu_schedule_matches_the_cpu_recurrence() {
        check_schedule(None);
    }

    /// The same with gru.cu's gate kernels, compiled for the CPU: what the GPU runs, but for
    /// cuBLAS and the launch plumbing.
    #[test]
    fn gru_kernels_in_the_schedule_match_the_cpu_recurrence() {
        check_schedule(Some(gru_kernels()));
    }

    /// At sizes where each dimension differs from the others.
    fn check_schedule(gate_kernels: Option<&'static Module>) {
        for (batch, steps, input, hidden, want_inputs) in [
            (3, 5, 7, 9, true),
            (2, 1, 4, 6, true),
            (4, 3, 5, 8, false),
            // More (example, unit) pairs than the capped grid has threads: the gate kernels
            // loop.
            (3, 2, 3, 700, true),
        ] {
            let d = Dims {
                batch,
                steps,
                hidden,
                input,
            };
            let (h, rows) = (hidden, steps * batch);
            let bound = 1.0 / (h as f32).sqrt();
            let inputs = values(1, rows * input, 1.0);
            let weight_hh = values(2, 3 * h * h, bound);
            let packed = values(3, 3 * h * input + 6 * h, bound);
            let grad_states = values(4, rows * h, 1.0);

            // Every sequence full length: the GPU passes run through padding, so only then
            // are all states comparable.
            let lengths = vec![steps; batch];
            let (states, kept) = cpu::forward(d, &lengths, &inputs, &weight_hh, &packed).unwrap();
            let (grad_projected, grad_weight_hh, grad_biases) =
                cpu::backward(d, &lengths, &weight_hh, &states, &kept, &grad_states).unwrap();
            let (grad_inputs, grad_weight_ih) =
                cpu::projection_grads(d, &grad_projected, &inputs, &packed[..3 * h * input], true).unwrap();

            use Buffer::*;
            let unwritten = |len: usize| vec![f32::NAN; len];
            let mut emulator = Emulator {
                d,
                gate_kernels,
                buffers: HashMap::from([
                    (Inputs, inputs.clone()),
                    (WeightHh, weight_hh.clone()),
                    (Packed, packed.clone()),
                    (GradStates, grad_states.clone()),
                    (Projected, unwritten(rows * 3 * h)),
                    (States, unwritten(rows * h)),
                    (Kept, unwritten(rows * KEPT * h)),
                    (Hh, unwritten(batch * 3 * h)),
                    (GradX, unwritten(rows * 3 * h)),
                    (GradHh, unwritten(rows * 3 * h)),
                    (Next, vec![0.0; batch * h]),
                    (GradWeightHh, vec![0.0; 3 * h * h]),
                    (Ones, unwritten(rows)),
                    (GradPacked, unwritten(3 * h * input + 6 * h)),
                    (GradInputs, unwritten(rows * input)),
                ]),
            };
            forward(d, &mut emulator).unwrap();
            assert_close("states", &emulator.buffers[&States], &states);
            assert_close("kept gates", &emulator.buffers[&Kept], &kept);
            backward(d, want_inputs, &mut emulator).unwrap();
            assert_close("d W_hh", &emulator.buffers[&GradWeightHh], &grad_weight_hh);
            let mut grad_packed = grad_weight_ih;
            grad_packed.extend_from_slice(&grad_biases);
            assert_close("d packed", &emulator.buffers[&GradPacked], &grad_packed);
            let emulated_inputs = &emulator.buffers[&GradInputs];
            match want_inputs {
                true => assert_close("d inputs", emulated_inputs, &grad_inputs.unwrap()),
                false => assert!(
                    emulated_inputs.iter().all(|v| v.is_nan()),
                    "d inputs written though not wanted"
                ),
            }
        }
    }
}
