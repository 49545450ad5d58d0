//! The emulator against kernels whose results are known: grid-stride loops, block
//! reductions through shared memory and barriers, threads that return early, and the
//! reports for arguments and writes that are wrong.

use std::sync::OnceLock;

use cuda_emulator::{Arg, DeviceBuffer, EmulatorError, Module};

const SOURCE: &str = r#"
#define THREADS 64

extern "C" __global__ void axpy(float* y, const float* __restrict__ x, float a, unsigned long long n)
{
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        y[i] += a * x[i];
    }
}

// out[b] = the sum of block b's `per_block` values, by a tree reduction in shared memory.
extern "C" __global__ void block_sums(const float* x, float* out, unsigned int per_block)
{
    __shared__ float partial[THREADS];
    float sum = 0.0f;
    for (unsigned int i = threadIdx.x; i < per_block; i += blockDim.x) {
        sum += x[blockIdx.x * per_block + i];
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            partial[threadIdx.x] += partial[threadIdx.x + half];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[blockIdx.x] = partial[0];
    }
}

// Threads past `active` return before the barrier; the rest must still get through it.
extern "C" __global__ void early_exit(float* out, int active)
{
    __shared__ float seen[THREADS];
    if ((int)threadIdx.x >= active) {
        return;
    }
    seen[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = seen[active - 1 - threadIdx.x];
}

extern "C" __global__ void write_one_past(float* out, unsigned int n)
{
    out[n] = 1.0f;
}

// Every thread of a 3-D grid of 3-D blocks writes where it is, at its linear index.
extern "C" __global__ void where_am_i(float* out)
{
    const unsigned int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    out[block * blockDim.x * blockDim.y * blockDim.z + thread] = (float)(threadIdx.x + 10 * threadIdx.y
        + 100 * threadIdx.z + 1000 * blockIdx.x + 10000 * blockIdx.y + 100000 * blockIdx.z);
}

// The block's sum by warp shuffles, then across warps through shared memory.
extern "C" __global__ void shuffle_sum(const double* x, double* out)
{
    __shared__ double per_warp[32];
    double v = x[blockIdx.x * blockDim.x + threadIdx.x];
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    if (threadIdx.x % 32 == 0) {
        per_warp[threadIdx.x / 32] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (unsigned int w = 0; w < blockDim.x / 32; ++w) {
            total += per_warp[w];
        }
        out[blockIdx.x] = total;
    }
}

// Half the warp waits at __syncthreads(), the other half at a shuffle: a deadlock.
extern "C" __global__ void divergent(float* out)
{
    float v = 1.0f;
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        v = __shfl_down_sync(0xffffffffu, v, 1);
    }
    out[threadIdx.x] = v;
}

// What shared memory and a shuffle hold before anything was written to them: thread 0
// reads its block's array before writing it, and lane 0 reads a lane that has returned.
extern "C" __global__ void unwritten(float* before, float* from_returned)
{
    __shared__ float fresh[THREADS];
    if (threadIdx.x == 0) {
        before[blockIdx.x] = fresh[5];
    }
    fresh[threadIdx.x] = 1.0f;
    if (threadIdx.x == 1) {
        return;
    }
    const float v = __shfl_down_sync(0xffffffffu, 2.0f, 1);
    if (threadIdx.x == 0) {
        from_returned[blockIdx.x] = v;
    }
}

// Reverses each block's values through dynamic shared memory.
extern "C" __global__ void reverse(const float* x, float* y)
{
    extern __shared__ float staged[];
    const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
    staged[threadIdx.x] = x[i];
    __syncthreads();
    y[i] = staged[blockDim.x - 1 - threadIdx.x];
}
"#;

fn module() -> &'static Module {
    static MODULE: OnceLock<Module> = OnceLock::new();
    MODULE.get_or_init(|| Module::compile("test.cu", SOURCE).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn grid_stride_loops_cover_every_value_once() {
    let n = 1000usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut y = DeviceBuffer::from_slice("y", &vec![1.0; n]);
    let xs = DeviceBuffer::from_slice("x", &x);
    // 3 blocks of 32 threads: each thread loops over about ten values.
    let args = [
        Arg::buffer(&y),
        Arg::buffer(&xs),
        2.0f32.into(),
        (n as u64).into(),
    ];
    module().launch("axpy", 3, 32, &args).unwrap();
    let want: Vec<f32> = x.iter().map(|v| 1.0 + 2.0 * v).collect();
    assert_eq!(y.values(), want);
    y.write(&vec![0.0; n]);
    assert_eq!(y.values()[n - 1], 0.0);
}

#[test]
fn blocks_reduce_through_shared_memory_and_barriers() {
    let (blocks, per_block) = (5usize, 200usize);
    let x: Vec<f32> = (0..blocks * per_block).map(|i| (i % 7) as f32).collect();
    let xs = DeviceBuffer::from_slice("x", &x);
    let out = DeviceBuffer::<f32>::uninit("out", blocks);
    let args = [Arg::buffer(&xs), Arg::buffer(&out), (per_block as u32).into()];
    module().launch("block_sums", blocks as u32, 64, &args).unwrap();
    let want: Vec<f32> = x.chunks(per_block).map(|c| c.iter().sum()).collect();
    assert_eq!(out.values(), want);
}

#[test]
fn threads_that_return_early_leave_the_barrier() {
    let out = DeviceBuffer::<f32>::uninit("out", 64);
    module()
        .launch("early_exit", 2, 64, &[Arg::buffer(&out), 10i32.into()])
        .unwrap();
    let values = out.values();
    let want: Vec<f32> = (0..10).rev().map(|v| v as f32).collect();
    assert_eq!(values[..10], want);
    assert!(
        values[10..].iter().all(|v| v.is_nan()),
        "threads past `active` wrote"
    );
}

#[test]
fn a_write_past_the_end_is_reported() {
    let out = DeviceBuffer::<f32>::uninit("out", 4);
    module()
        .launch("write_one_past", 1, 1, &[Arg::buffer(&out), 4u32.into()])
        .unwrap();
    let report = out.guard_report().expect("the write past the end is seen");
    assert!(
        report.contains("`out`") && report.contains("1 values past its end"),
        "{report}"
    );
}

#[test]
fn arguments_are_checked_against_the_source() {
    let out = DeviceBuffer::<f32>::uninit("out", 4);
    let error = |args: &[Arg]| module().launch("write_one_past", 1, 1, args).unwrap_err();
    let wrong_type = error(&[Arg::buffer(&out), 4u64.into()]).to_string();
    assert!(
        wrong_type.contains("argument 1 is u64") && wrong_type.contains("`n` is `unsigned int`"),
        "{wrong_type}"
    );
    let too_few = error(&[Arg::buffer(&out)]).to_string();
    assert!(too_few.contains("1 arguments for 2 parameters"), "{too_few}");
    let unknown = module().launch("nope", 1, 1, &[]).unwrap_err();
    assert!(
        matches!(&unknown, EmulatorError::UnknownKernel { known, .. } if known.contains("block_sums")),
        "{unknown}"
    );
    let too_big = module()
        .launch(
            "write_one_past",
            1,
            (64, 32, 1),
            &[Arg::buffer(&out), 0u32.into()],
        )
        .unwrap_err();
    assert!(
        too_big.to_string().contains("Dim3(64, 32, 1) threads"),
        "{too_big}"
    );
    let wrong_buffer = DeviceBuffer::<f64>::uninit("wide", 4);
    let wrong_element = error(&[Arg::buffer(&wrong_buffer), 4u32.into()]).to_string();
    assert!(
        wrong_element.contains("8-byte floating-point") && wrong_element.contains("`out` is `float*`"),
        "{wrong_element}"
    );
}

#[test]
fn compile_errors_name_the_source_and_line() {
    let code = "extern \"C\" __global__ void k(float* x)\n{\n    x[0] = undefined_name;\n}\n";
    let error = Module::compile("broken.cu", code)
        .err()
        .expect("a compile error")
        .to_string();
    assert!(error.contains("broken.cu:3"), "{error}");
}

#[test]
fn three_dimensional_grids_and_blocks_index_x_fastest() {
    let (grid, block) = ((2u32, 3u32, 2u32), (4u32, 2u32, 3u32));
    let total = (2 * 3 * 2 * 4 * 2 * 3) as usize;
    let out = DeviceBuffer::<f32>::uninit("out", total);
    module()
        .launch("where_am_i", grid, block, &[Arg::buffer(&out)])
        .unwrap();
    let mut want = Vec::with_capacity(total);
    for bz in 0..2 {
        for by in 0..3 {
            for bx in 0..2 {
                for tz in 0..3 {
                    for ty in 0..2 {
                        for tx in 0..4 {
                            want.push(
                                (tx + 10 * ty + 100 * tz + 1000 * bx + 10000 * by + 100000 * bz) as f32,
                            );
                        }
                    }
                }
            }
        }
    }
    assert_eq!(out.values(), want);
}

#[test]
fn warp_shuffles_reduce_within_each_warp() {
    let (blocks, threads) = (3usize, 96usize);
    let x: Vec<f64> = (0..blocks * threads).map(|i| (i * i % 13) as f64 - 6.0).collect();
    let xs = DeviceBuffer::from_slice("x", &x);
    let out = DeviceBuffer::<f64>::uninit("out", blocks);
    module()
        .launch(
            "shuffle_sum",
            blocks as u32,
            threads as u32,
            &[Arg::buffer(&xs), Arg::buffer(&out)],
        )
        .unwrap();
    let want: Vec<f64> = x.chunks(threads).map(|c| c.iter().sum()).collect();
    assert_eq!(out.values(), want);
}

#[test]
fn dynamic_shared_memory_is_shared_by_the_block() {
    let (blocks, threads) = (4usize, 50usize);
    let x: Vec<f32> = (0..blocks * threads).map(|i| i as f32).collect();
    let (xs, y) = (
        DeviceBuffer::from_slice("x", &x),
        DeviceBuffer::<f32>::uninit("y", x.len()),
    );
    let args = [Arg::buffer(&xs), Arg::buffer(&y)];
    module()
        .launch_with_shared(
            "reverse",
            blocks as u32,
            threads as u32,
            4 * threads as u32,
            &args,
        )
        .unwrap();
    let want: Vec<f32> = x.chunks(threads).flat_map(|c| c.iter().rev().copied()).collect();
    assert_eq!(y.values(), want);
}

#[test]
fn a_deadlock_is_reported_naming_who_waits_where() {
    let out = DeviceBuffer::<f32>::uninit("out", 32);
    let error = module()
        .launch("divergent", 1, 32, &[Arg::buffer(&out)])
        .unwrap_err()
        .to_string();
    assert!(error.contains("divergent deadlocked"), "{error}");
    assert!(error.contains("__syncthreads(): [0, 1, 2"), "{error}");
    assert!(error.contains("shuffle: [16, 17"), "{error}");
}

#[test]
fn unwritten_shared_memory_and_returned_lanes_read_nan_in_every_block() {
    let before = DeviceBuffer::<f32>::uninit("before", 3);
    let from_returned = DeviceBuffer::<f32>::from_slice("from_returned", &[0.0; 3]);
    module()
        .launch(
            "unwritten",
            3,
            32,
            &[Arg::buffer(&before), Arg::buffer(&from_returned)],
        )
        .unwrap();
    // Block 0 wrote ones into the array: blocks 1 and 2 must not see them.
    assert!(
        before.values().iter().all(|v| v.is_nan()),
        "{:?}",
        before.values()
    );
    assert!(
        from_returned.values().iter().all(|v| v.is_nan()),
        "{:?}",
        from_returned.values()
    );
}

#[test]
fn shared_memory_beyond_a_block_is_refused() {
    let (x, y) = (
        DeviceBuffer::<f32>::uninit("x", 1),
        DeviceBuffer::<f32>::uninit("y", 1),
    );
    let error = module()
        .launch_with_shared("reverse", 1, 1, u32::MAX, &[Arg::buffer(&x), Arg::buffer(&y)])
        .unwrap_err();
    assert!(error.to_string().contains("dynamic shared memory"), "{error}");
}
