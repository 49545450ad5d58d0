// The GRU's gate arithmetic on NVIDIA GPUs, one step at a time; the matrix products
// around it are cuBLAS's (see mod.rs). Equations, gate order and the values kept for the
// backward are those of the CPU recurrence (recurrence/gates.rs):
//   r = σ(x_r + h_r), z = σ(x_z + h_z), n = tanh(x_n + r ⊙ h_n), h' = n + z ⊙ (h - n)
// with x = W_ih·input + b_ih and h_* = W_hh·h + b_hh. The products come without bias;
// both biases are added here, so that no separate pass over the (N, 3H) products is made.
//
// One thread per (question, unit), in a grid-stride loop. Each step's rows are
// contiguous: x and hh are (N, 3H), states (N, H), kept (N, 4H) = (r | z | n | h_n).
// Compiled at run time by NVRTC: no CUDA header may be included.

__device__ __forceinline__ float gru_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// One step forward. `first` marks step 0, whose previous state is zero: `hh` and
// `previous` are then not read (W_hh·0 = 0, so only b_hh remains).
extern "C" __global__ void gru_step_fwd_f32(
    const float* __restrict__ x,
    const float* __restrict__ hh,
    const float* __restrict__ bias_ih,
    const float* __restrict__ bias_hh,
    const float* __restrict__ previous,
    float* __restrict__ state,
    float* __restrict__ kept,
    unsigned int batch,
    unsigned int hidden,
    int first)
{
    const unsigned int total = batch * hidden;
    for (unsigned int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += gridDim.x * blockDim.x) {
        const unsigned int i = idx / hidden;
        const unsigned int j = idx - i * hidden;
        const size_t row3 = (size_t)i * 3 * hidden;
        float h_r = bias_hh[j];
        float h_z = bias_hh[hidden + j];
        float h_n = bias_hh[2 * hidden + j];
        float h_prev = 0.0f;
        if (!first) {
            h_r += hh[row3 + j];
            h_z += hh[row3 + hidden + j];
            h_n += hh[row3 + 2 * hidden + j];
            h_prev = previous[idx];
        }
        const float r = gru_sigmoid(x[row3 + j] + bias_ih[j] + h_r);
        const float z = gru_sigmoid(x[row3 + hidden + j] + bias_ih[hidden + j] + h_z);
        const float n = tanhf(x[row3 + 2 * hidden + j] + bias_ih[2 * hidden + j] + r * h_n);
        state[idx] = n + z * (h_prev - n);
        const size_t row4 = (size_t)i * 4 * hidden;
        kept[row4 + j] = r;
        kept[row4 + hidden + j] = z;
        kept[row4 + 2 * hidden + j] = n;
        kept[row4 + 3 * hidden + j] = h_n;
    }
}

// One step backward. `next` holds, on entry, the gradient reaching this step's state from
// the steps after it; on exit, the part of the gradient reaching the previous state along
// the direct path h' = … + z ⊙ h (the caller adds the path through W_hh with a GEMM).
// Writes the gradients of the input projection (`grad_x`) and of the hidden projection
// (`grad_hh`), both (N, 3H), which differ only in the candidate gate: r ⊙ d n for h_n.
extern "C" __global__ void gru_step_bwd_f32(
    const float* __restrict__ kept,
    const float* __restrict__ grad_state,
    const float* __restrict__ previous,
    float* __restrict__ grad_x,
    float* __restrict__ grad_hh,
    float* __restrict__ next,
    unsigned int batch,
    unsigned int hidden,
    int first)
{
    const unsigned int total = batch * hidden;
    for (unsigned int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += gridDim.x * blockDim.x) {
        const unsigned int i = idx / hidden;
        const unsigned int j = idx - i * hidden;
        const size_t row4 = (size_t)i * 4 * hidden;
        const float r = kept[row4 + j];
        const float z = kept[row4 + hidden + j];
        const float n = kept[row4 + 2 * hidden + j];
        const float h_n = kept[row4 + 3 * hidden + j];
        const float h_prev = first ? 0.0f : previous[idx];
        const float dh = grad_state[idx] + next[idx];
        const float d_candidate = dh * (1.0f - z) * (1.0f - n * n);
        const float d_update = dh * (h_prev - n) * z * (1.0f - z);
        const float d_reset = d_candidate * h_n * r * (1.0f - r);
        const size_t row3 = (size_t)i * 3 * hidden;
        grad_x[row3 + j] = d_reset;
        grad_x[row3 + hidden + j] = d_update;
        grad_x[row3 + 2 * hidden + j] = d_candidate;
        grad_hh[row3 + j] = d_reset;
        grad_hh[row3 + hidden + j] = d_update;
        grad_hh[row3 + 2 * hidden + j] = d_candidate * r;
        next[idx] = dh * z;
    }
}

// out[i] = value for i < len: the ones vector whose product with a gradient matrix gives
// its column sums (the bias gradients).
extern "C" __global__ void gru_fill_f32(float* __restrict__ out, unsigned int len, float value)
{
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        out[i] = value;
    }
}
