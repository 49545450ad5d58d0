// Adam's two in-place passes on NVIDIA GPUs (see ../adam.rs for the CPU ones, which these
// mirror operation for operation). Grid-stride loops over contiguous f32 vectors, 64-bit
// indices: a parameter tensor may exceed 2^32 values on a large card.
// Compiled at run time by NVRTC: no CUDA header may be included.

// moment = decay · moment + rest · t, with t = g + λ·p, squared for the second moment.
extern "C" __global__ void adam_moment_f32(
    float* __restrict__ moment,
    const float* __restrict__ grad,
    const float* __restrict__ param,
    unsigned long long len,
    float decay,
    float rest,
    float weight_decay,
    int squared)
{
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const float g = grad[i] + weight_decay * param[i];
        const float t = squared ? g * g : g;
        moment[i] = decay * moment[i] + rest * t;
    }
}

// p -= lr · (m / bias1) / (√(v / bias2) + ε)
extern "C" __global__ void adam_parameter_f32(
    float* __restrict__ param,
    const float* __restrict__ m,
    const float* __restrict__ v,
    unsigned long long len,
    float learning_rate,
    float bias1,
    float bias2,
    float eps)
{
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        param[i] -= learning_rate * (m[i] / bias1) / (sqrtf(v[i] / bias2) + eps);
    }
}
