// Fused FiLM kernels, compiled at run time by NVRTC (see nvrtc.rs).
//
// No CUDA headers are included: NVRTC's bundled headers differ between versions, and the
// half-precision conversions below are single PTX instructions anyway. The tests also run
// these kernels on the CPU (crates/cuda-emulator, which defines CUDA_EMULATOR): there the
// f16 conversions are the prelude's instead of inline PTX.
//
// Storage types: float, double, F16, BF16 (raw 16-bit patterns). f32, f16 and bf16
// compute in float, f64 in double, as the CPU kernels do.
//
// Kernel names (extern "C", chosen by launch_plan.rs):
//   film_fwd_<dt>_<cf|cl>_<v|s>_<i32|i64>        y = relu?(g x + b) + r?
//   film_bwd_cf_<dt>_<v|s>_<i32|i64>             dx and d(g, b), one block per (n, c) row
//   film_bwd_cl_<dt>_<v|s>_<i32|i64>             dx and partial d(g, b) sums per position chunk
//   film_bwd_cl_finish_<dt>                      adds the partial sums, writes d(g, b)
// <v> reads and writes 16 bytes per access (the launcher checks alignment and that
// rows split evenly); <s> is the scalar fallback. <i32> indexes with 32-bit integers
// (cheaper division) when the tensor is small enough.

struct F16 { unsigned short bits; };
struct BF16 { unsigned short bits; };

template <typename T> struct Num;

template <> struct Num<float> {
    typedef float Acc;
    static __device__ __forceinline__ float load(float v) { return v; }
    static __device__ __forceinline__ float store(float v) { return v; }
};

template <> struct Num<double> {
    typedef double Acc;
    static __device__ __forceinline__ double load(double v) { return v; }
    static __device__ __forceinline__ double store(double v) { return v; }
};

template <> struct Num<F16> {
    typedef float Acc;
    static __device__ __forceinline__ float load(F16 v) {
#ifdef CUDA_EMULATOR
        return cuda_emulator_f16_to_f32(v.bits);
#else
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
        return f;
#endif
    }
    static __device__ __forceinline__ F16 store(float f) {
        F16 v;
#ifdef CUDA_EMULATOR
        v.bits = cuda_emulator_f32_to_f16(f);
#else
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(v.bits) : "f"(f));
#endif
        return v;
    }
};

template <> struct Num<BF16> {
    typedef float Acc;
    static __device__ __forceinline__ float load(BF16 v) {
        return __uint_as_float(((unsigned int)v.bits) << 16);
    }
    // Round to nearest even, quieting NaNs, as the `half` crate does on the CPU; written
    // out instead of `cvt.rn.bf16.f32` so that it compiles for any architecture.
    static __device__ __forceinline__ BF16 store(float f) {
        unsigned int u = __float_as_uint(f);
        BF16 v;
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            v.bits = (unsigned short)((u >> 16) | 0x0040u);
        } else {
            v.bits = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        }
        return v;
    }
};

// V values moved as one aligned access (16 bytes when V * sizeof(T) == 16).
template <typename T, int V> struct __align__(sizeof(T) * V) Pack { T v[V]; };

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
    return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& v) {
    *reinterpret_cast<Pack<T, V>*>(p) = v;
}

// NaN gives 0, as on the CPU.
template <typename A>
__device__ __forceinline__ A relu(A z) { return z > A(0) ? z : A(0); }

// The ReLU passes the gradient where z >= 0 (also at exactly 0, as candle's relu
// backward does); NaN passes nothing.
template <typename A>
__device__ __forceinline__ bool passes_relu(A z) { return z >= A(0); }

// ---------------------------------------------------------------------------------------
// Forward. params is the packed (N, 2C) matrix: row n holds g_n then b_n. Channels-first
// x is (N, C, S) and a pack of V values lies in one (n, c) row (S % V == 0), so it shares
// one (g, b); channels-last x is (N, S, C) and a pack covers V consecutive channels
// (C % V == 0), whose (g, b) are loaded as packs too.
//
// Each thread handles FWD_UNROLL packs per turn of the grid-stride loop, a block stride
// apart so that every load instruction of a warp stays coalesced. Streaming x through
// memory once, the kernel is bound by the bytes in flight, not by arithmetic: all of a
// turn's x (and residual) loads are issued before any value is used, FWD_UNROLL loads
// from DRAM in flight per thread instead of one. The (g, b) loads come after them: they
// hit in cache, and holding them as well would cost registers, hence resident threads.
// The launcher (mod.rs, FORWARD_UNROLL) sizes the grid with the same constant.
#define FWD_UNROLL 4

// (g, b) of one pack: channels-first shares one pair across the pack, channels-last has
// one pair per channel of the pack.
template <typename T, int V, bool CL> struct Modulation;

template <typename T, int V> struct Modulation<T, V, false> {
    typedef typename Num<T>::Acc A;
    A g, b;
    template <typename I>
    __device__ __forceinline__ void load(const T* params, I e, I channels, I spatial) {
        const I row = e / spatial;
        const I n = row / channels;
        const I c = row - n * channels;
        g = Num<T>::load(params[2 * channels * n + c]);
        b = Num<T>::load(params[2 * channels * n + channels + c]);
    }
    __device__ __forceinline__ A apply(int k, A x) const { return g * x + b; }
};

template <typename T, int V> struct Modulation<T, V, true> {
    typedef typename Num<T>::Acc A;
    Pack<T, V> g, b;
    template <typename I>
    __device__ __forceinline__ void load(const T* params, I e, I channels, I spatial) {
        const I pos = e / channels;
        const I c = e - pos * channels;
        const I n = pos / spatial;
        const T* p = params + 2 * channels * n + c;
        g = load_pack<T, V>(p);
        b = load_pack<T, V>(p + channels);
    }
    __device__ __forceinline__ A apply(int k, A x) const {
        return Num<T>::load(g.v[k]) * x + Num<T>::load(b.v[k]);
    }
};

template <typename T, int V, bool CL, typename I>
__device__ __forceinline__ void film_forward(
    const T* __restrict__ x, const T* __restrict__ params, const T* __restrict__ residual,
    T* __restrict__ y, I numel, I channels, I spatial, int relu_on, int has_residual) {
    typedef typename Num<T>::Acc A;
    const I packs = numel / V;
    const I block = (I)blockDim.x;
    const I stride = (I)gridDim.x * block * FWD_UNROLL;
    for (I first = (I)blockIdx.x * block * FWD_UNROLL + threadIdx.x; first < packs;
         first += stride) {
        Pack<T, V> xv[FWD_UNROLL], rv[FWD_UNROLL];
#pragma unroll
        for (int u = 0; u < FWD_UNROLL; ++u) {
            const I i = first + (I)u * block;
            if (i < packs) {
                const I e = i * V;
                xv[u] = load_pack<T, V>(x + e);
                if (has_residual) rv[u] = load_pack<T, V>(residual + e);
            }
        }
#pragma unroll
        for (int u = 0; u < FWD_UNROLL; ++u) {
            const I i = first + (I)u * block;
            if (i < packs) {
                const I e = i * V;
                Modulation<T, V, CL> m;
                m.load(params, e, channels, spatial);
                A z[V];
#pragma unroll
                for (int k = 0; k < V; ++k) z[k] = m.apply(k, Num<T>::load(xv[u].v[k]));
                if (relu_on) {
#pragma unroll
                    for (int k = 0; k < V; ++k) z[k] = relu(z[k]);
                }
                if (has_residual) {
#pragma unroll
                    for (int k = 0; k < V; ++k) z[k] += Num<T>::load(rv[u].v[k]);
                }
                Pack<T, V> out;
#pragma unroll
                for (int k = 0; k < V; ++k) out.v[k] = Num<T>::store(z[k]);
                store_pack<T, V>(y + e, out);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sums two values per thread over the block; the results are valid in thread 0.
// `scratch` holds at least 64 values. blockDim.x is a multiple of 32.
template <typename A>
__device__ __forceinline__ void block_sum2(A& u, A& v, A* scratch) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        u += __shfl_down_sync(0xffffffffu, u, offset);
        v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int warps = blockDim.x >> 5;
    if (lane == 0) {
        scratch[warp] = u;
        scratch[32 + warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        u = lane < warps ? scratch[lane] : A(0);
        v = lane < warps ? scratch[32 + lane] : A(0);
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            u += __shfl_down_sync(0xffffffffu, u, offset);
            v += __shfl_down_sync(0xffffffffu, v, offset);
        }
    }
}

// Backward, channels-first: one block per (n, c) row of S values. dx = g * d with
// d = dy masked by the ReLU; dg = sum d x and db = sum d are reduced in the block and
// written once, so no two blocks touch the same gradient. blockDim.x is a multiple of 32.
template <typename T, int V, typename I>
__device__ __forceinline__ void film_backward_cf(
    const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ params,
    T* __restrict__ dx, T* __restrict__ dparams, I channels, I spatial, int relu_on) {
    typedef typename Num<T>::Acc A;
    __shared__ A scratch[64];
    const I row = blockIdx.x;
    const I n = row / channels;
    const I c = row - n * channels;
    const I gi = 2 * channels * n + c, bi = gi + channels;
    const A g = Num<T>::load(params[gi]);
    const A b = Num<T>::load(params[bi]);
    const I base = row * spatial;
    A sg = A(0), sb = A(0);
    for (I j = threadIdx.x; j < spatial / V; j += blockDim.x) {
        const I e = base + j * V;
        const Pack<T, V> xv = load_pack<T, V>(x + e);
        const Pack<T, V> dv = load_pack<T, V>(dy + e);
        Pack<T, V> out;
#pragma unroll
        for (int k = 0; k < V; ++k) {
            const A xk = Num<T>::load(xv.v[k]);
            A d = Num<T>::load(dv.v[k]);
            if (relu_on && !passes_relu(g * xk + b)) d = A(0);
            sg += d * xk;
            sb += d;
            out.v[k] = Num<T>::store(g * d);
        }
        store_pack<T, V>(dx + e, out);
    }
    block_sum2(sg, sb, scratch);
    if (threadIdx.x == 0) {
        dparams[gi] = Num<T>::store(sg);
        dparams[bi] = Num<T>::store(sb);
    }
}

// Backward, channels-last, first stage. Block (tx, ty): tx walks packs of channels of one
// example, ty walks positions of one chunk. blockIdx.x = n * tiles + channel tile,
// blockIdx.z = position chunk. Each block sums its chunk in registers, reduces over ty in
// shared memory and writes one partial (dg | db) row to partial[z][n][2C]; the finish
// kernel adds the chunks. No atomics, and the result does not depend on scheduling.
template <typename T, int V, typename I>
__device__ __forceinline__ void film_backward_cl(
    const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ params,
    T* __restrict__ dx, typename Num<T>::Acc* __restrict__ partial, I batch, I channels,
    I spatial, I chunk, int relu_on) {
    typedef typename Num<T>::Acc A;
    extern __shared__ unsigned char smem_raw[];
    A* smem = reinterpret_cast<A*>(smem_raw);  // [2][blockDim.y][blockDim.x * V]
    const I cvecs = channels / V;
    const I tiles = (cvecs + blockDim.x - 1) / blockDim.x;
    const I n = blockIdx.x / tiles;
    const I tile = blockIdx.x - n * tiles;
    const I cv = tile * blockDim.x + threadIdx.x;
    const bool active = cv < cvecs;
    const I c = cv * V;
    A g[V], b[V], sg[V], sb[V];
#pragma unroll
    for (int k = 0; k < V; ++k) { g[k] = A(0); b[k] = A(0); sg[k] = A(0); sb[k] = A(0); }
    if (active) {
        const Pack<T, V> gv = load_pack<T, V>(params + 2 * channels * n + c);
        const Pack<T, V> bv = load_pack<T, V>(params + 2 * channels * n + channels + c);
#pragma unroll
        for (int k = 0; k < V; ++k) { g[k] = Num<T>::load(gv.v[k]); b[k] = Num<T>::load(bv.v[k]); }
        const I s0 = (I)blockIdx.z * chunk;
        const I s1 = s0 + chunk < spatial ? s0 + chunk : spatial;
        for (I s = s0 + threadIdx.y; s < s1; s += blockDim.y) {
            const I e = (n * spatial + s) * channels + c;
            const Pack<T, V> xv = load_pack<T, V>(x + e);
            const Pack<T, V> dv = load_pack<T, V>(dy + e);
            Pack<T, V> out;
#pragma unroll
            for (int k = 0; k < V; ++k) {
                const A xk = Num<T>::load(xv.v[k]);
                A d = Num<T>::load(dv.v[k]);
                if (relu_on && !passes_relu(g[k] * xk + b[k])) d = A(0);
                sg[k] += d * xk;
                sb[k] += d;
                out.v[k] = Num<T>::store(g[k] * d);
            }
            store_pack<T, V>(dx + e, out);
        }
    }
    const int width = blockDim.x * V;
    A* shg = smem;
    A* shb = smem + blockDim.y * width;
#pragma unroll
    for (int k = 0; k < V; ++k) {
        shg[threadIdx.y * width + threadIdx.x * V + k] = sg[k];
        shb[threadIdx.y * width + threadIdx.x * V + k] = sb[k];
    }
    __syncthreads();
    // The first row of threads adds the columns: each thread its own V channels.
    if (threadIdx.y == 0 && active) {
        for (int r = 1; r < blockDim.y; ++r) {
#pragma unroll
            for (int k = 0; k < V; ++k) {
                sg[k] += shg[r * width + threadIdx.x * V + k];
                sb[k] += shb[r * width + threadIdx.x * V + k];
            }
        }
        A* out = partial + ((I)blockIdx.z * batch + n) * 2 * channels;
#pragma unroll
        for (int k = 0; k < V; ++k) {
            out[c + k] = sg[k];
            out[channels + c + k] = sb[k];
        }
    }
}

// Backward, channels-last, second stage: dparams[i] = sum over chunks of partial[z][i].
template <typename T>
__device__ __forceinline__ void film_backward_cl_finish(
    const typename Num<T>::Acc* __restrict__ partial, T* __restrict__ dparams,
    unsigned long long total, unsigned int chunks) {
    typedef typename Num<T>::Acc A;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += stride) {
        A s = A(0);
        for (unsigned int z = 0; z < chunks; ++z) s += partial[z * total + i];
        dparams[i] = Num<T>::store(s);
    }
}

// ---------------------------------------------------------------------------------------
// Entry points. V is chosen so that a pack is 16 bytes.

#define FILM_FWD(DT, T, L, CL, VN, V, IN, I)                                                  \
    extern "C" __global__ void film_fwd_##DT##_##L##_##VN##_##IN(                            \
        const T* x, const T* params, const T* residual, T* y, I numel, I channels,          \
        I spatial, int relu_on, int has_residual) {                                         \
        film_forward<T, V, CL, I>(x, params, residual, y, numel, channels, spatial, relu_on, \
                                  has_residual);                                             \
    }

#define FILM_BWD(DT, T, VN, V, IN, I)                                                         \
    extern "C" __global__ void film_bwd_cf_##DT##_##VN##_##IN(                               \
        const T* x, const T* dy, const T* params, T* dx, T* dparams, I channels, I spatial, \
        int relu_on) {                                                                      \
        film_backward_cf<T, V, I>(x, dy, params, dx, dparams, channels, spatial, relu_on);  \
    }                                                                                       \
    extern "C" __global__ void film_bwd_cl_##DT##_##VN##_##IN(                               \
        const T* x, const T* dy, const T* params, T* dx, Num<T>::Acc* partial, I batch,     \
        I channels, I spatial, I chunk, int relu_on) {                                      \
        film_backward_cl<T, V, I>(x, dy, params, dx, partial, batch, channels, spatial,     \
                                  chunk, relu_on);                                          \
    }

#define FILM_ALL_INDEX(DT, T, VN, V)                                                          \
    FILM_FWD(DT, T, cf, false, VN, V, i32, unsigned int)                                     \
    FILM_FWD(DT, T, cl, true, VN, V, i32, unsigned int)                                      \
    FILM_FWD(DT, T, cf, false, VN, V, i64, unsigned long long)                               \
    FILM_FWD(DT, T, cl, true, VN, V, i64, unsigned long long)                                \
    FILM_BWD(DT, T, VN, V, i32, unsigned int)                                                \
    FILM_BWD(DT, T, VN, V, i64, unsigned long long)

#define FILM_DTYPE(DT, T, V)                                                                  \
    FILM_ALL_INDEX(DT, T, v, V)                                                              \
    FILM_ALL_INDEX(DT, T, s, 1)                                                              \
    extern "C" __global__ void film_bwd_cl_finish_##DT(                                      \
        const Num<T>::Acc* partial, T* dparams, unsigned long long total,                   \
        unsigned int chunks) {                                                              \
        film_backward_cl_finish<T>(partial, dparams, total, chunks);                        \
    }

FILM_DTYPE(f32, float, 4)
FILM_DTYPE(f64, double, 2)
FILM_DTYPE(f16, F16, 8)
FILM_DTYPE(bf16, BF16, 8)
