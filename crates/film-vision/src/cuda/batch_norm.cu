// BatchNorm (and ReLU) on NVIDIA GPUs for contiguous (N, C, S) f32 tensors: the passes of
// batch_norm/cpu.rs, with the same formulas. Per-channel sums are accumulated in
// double by each thread and reduced in shared memory: one block per channel, so no
// atomics, and the result does not depend on scheduling.
// Compiled at run time by NVRTC: no CUDA header may be included.

#define BN_THREADS 512

// The block's sum of `v` (every thread passes its own), returned to every thread.
__device__ double bn_block_sum(double v, double* shared)
{
    shared[threadIdx.x] = v;
    __syncthreads();
    for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            shared[threadIdx.x] += shared[threadIdx.x + half];
        }
        __syncthreads();
    }
    const double total = shared[0];
    __syncthreads();
    return total;
}

// One block per channel c: two passes over its N rows of S values (the mean, then the
// squared deviations from it). out (C, 3) = [mean, 1/√(variance + eps), variance], the
// variance biased (divided by N·S), as the CPU op computes it.
extern "C" __global__ void bn_statistics_f32(
    const float* __restrict__ x,
    float* __restrict__ out,
    unsigned int batch,
    unsigned int channels,
    unsigned int spatial,
    float eps)
{
    __shared__ double shared[BN_THREADS];
    const unsigned int c = blockIdx.x;
    const double count = (double)batch * spatial;
    double sum = 0.0;
    for (unsigned int n = 0; n < batch; ++n) {
        const float* row = x + ((size_t)n * channels + c) * spatial;
        for (unsigned int s = threadIdx.x; s < spatial; s += blockDim.x) {
            sum += row[s];
        }
    }
    const float mean = (float)(bn_block_sum(sum, shared) / count);
    double squares = 0.0;
    for (unsigned int n = 0; n < batch; ++n) {
        const float* row = x + ((size_t)n * channels + c) * spatial;
        for (unsigned int s = threadIdx.x; s < spatial; s += blockDim.x) {
            const float d = row[s] - mean;
            squares += (double)(d * d);
        }
    }
    const double variance = bn_block_sum(squares, shared) / count;
    if (threadIdx.x == 0) {
        out[3 * c] = mean;
        out[3 * c + 1] = 1.0f / sqrtf((float)variance + eps);
        out[3 * c + 2] = (float)variance;
    }
}

// y = [relu](a_c · x + b_c), a_c = scale_c · inv_std_c, b_c = shift_c - mean_c · a_c;
// affine (C, 2) = [scale, shift], stats (C, 2) = [mean, inv_std].
extern "C" __global__ void bn_forward_f32(
    const float* __restrict__ x,
    const float* __restrict__ affine,
    const float* __restrict__ stats,
    float* __restrict__ y,
    unsigned long long total,
    unsigned int channels,
    unsigned int spatial,
    int relu)
{
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned int c = (unsigned int)((i / spatial) % channels);
        const float a = affine[2 * c] * stats[2 * c + 1];
        const float b = affine[2 * c + 1] - stats[2 * c] * a;
        const float v = a * x[i] + b;
        y[i] = relu ? fmaxf(v, 0.0f) : v;
    }
}

// The gradient reaching the normalised value: dy, kept where the pre-activation is ≥ 0
// under a ReLU (as candle's ReLU and the CPU op do).
__device__ __forceinline__ float bn_masked(int relu, float a, float b, float x, float dy)
{
    return (!relu || a * x + b >= 0.0f) ? dy : 0.0f;
}

// One block per channel c: grad_affine (C, 2) = [Σ g · x̂, Σ g] over the batch, with g the
// masked gradient and x̂ = (x - mean) · inv_std: the gradients of scale and shift.
extern "C" __global__ void bn_backward_sums_f32(
    const float* __restrict__ x,
    const float* __restrict__ dy,
    const float* __restrict__ affine,
    const float* __restrict__ stats,
    float* __restrict__ grad_affine,
    unsigned int batch,
    unsigned int channels,
    unsigned int spatial,
    int relu)
{
    __shared__ double shared[BN_THREADS];
    const unsigned int c = blockIdx.x;
    const float mean = stats[2 * c], inv_std = stats[2 * c + 1];
    const float a = affine[2 * c] * inv_std;
    const float b = affine[2 * c + 1] - mean * a;
    double sum_g = 0.0, sum_gx = 0.0;
    for (unsigned int n = 0; n < batch; ++n) {
        const size_t row = ((size_t)n * channels + c) * spatial;
        for (unsigned int s = threadIdx.x; s < spatial; s += blockDim.x) {
            const float xv = x[row + s];
            const float g = bn_masked(relu, a, b, xv, dy[row + s]);
            sum_g += g;
            sum_gx += (double)(g * (xv - mean));
        }
    }
    const double total_g = bn_block_sum(sum_g, shared);
    const double total_gx = bn_block_sum(sum_gx, shared);
    if (threadIdx.x == 0) {
        grad_affine[2 * c] = (float)total_gx * inv_std;
        grad_affine[2 * c + 1] = (float)total_g;
    }
}

// dx = scale · inv_std · (g - mean(g) - x̂ · mean(g · x̂)) with batch statistics (training),
// dx = scale · inv_std · g with running ones (evaluation); the means come from
// grad_affine's sums over `count` = N · S values.
extern "C" __global__ void bn_backward_input_f32(
    const float* __restrict__ x,
    const float* __restrict__ dy,
    const float* __restrict__ affine,
    const float* __restrict__ stats,
    const float* __restrict__ grad_affine,
    float* __restrict__ dx,
    unsigned long long total,
    unsigned int channels,
    unsigned int spatial,
    float count,
    int relu,
    int batch_statistics)
{
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned int c = (unsigned int)((i / spatial) % channels);
        const float mean = stats[2 * c], inv_std = stats[2 * c + 1];
        const float scale = affine[2 * c] * inv_std;
        const float b = affine[2 * c + 1] - mean * scale;
        float mean_g = 0.0f, slope = 0.0f;
        if (batch_statistics) {
            mean_g = grad_affine[2 * c + 1] / count;
            slope = inv_std * grad_affine[2 * c] / count;
        }
        const float xv = x[i];
        dx[i] = scale * (bn_masked(relu, scale, b, xv, dy[i]) - mean_g - (xv - mean) * slope);
    }
}
