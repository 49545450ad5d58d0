// The CUDA built-ins that the workspace's kernels use, for the host C++ compiler: each
// CUDA thread of a block is a fiber (ucontext) that runs until it returns or waits at a
// barrier, __syncthreads() is a barrier over the block's threads and a warp shuffle one
// over the warp's, blocks run one after another. Deterministic, and a barrier that some
// threads never reach is reported at once.
// Included before a kernel source by the translation unit that module.rs generates; see
// lib.rs for what is and is not emulated.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <bit>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#define CUDA_EMULATOR 1

struct uint3 {
    unsigned int x, y, z;
};
typedef uint3 dim3;

namespace cuda_emulator {

constexpr unsigned int WARP = 32;
// Stack of each emulated thread: the kernels keep a few small arrays in registers.
constexpr size_t STACK_BYTES = 256 * 1024;

// A fiber's stack, with an inaccessible page below it so that an overflow faults instead
// of corrupting the heap.
class Stack {
public:
    Stack()
    {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        bytes_ = STACK_BYTES + page;
        void* memory = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED || mprotect(memory, page, PROT_NONE) != 0) {
            fprintf(stderr, "cuda-emulator: cannot map a %zu-byte fiber stack\n", bytes_);
            abort();
        }
        base_ = static_cast<char*>(memory);
        top_ = base_ + page;
    }
    Stack(const Stack&) = delete;
    Stack& operator=(const Stack&) = delete;
    ~Stack() { munmap(base_, bytes_); }
    char* usable() const { return top_; }

private:
    char* base_ = nullptr;
    char* top_ = nullptr;
    size_t bytes_ = 0;
};

// One CUDA thread: a fiber (ucontext) that runs until it returns from the kernel or waits
// at a barrier, then hands back to the block's scheduler.
struct Fiber {
    enum State { RUNNABLE, AT_SYNCTHREADS, AT_SHUFFLE, DONE };
    ucontext_t context;
    std::unique_ptr<Stack> stack;
    uint3 index{0, 0, 0};
    unsigned int linear = 0;
    State state = RUNNABLE;
};

inline Fiber* current = nullptr;
inline ucontext_t scheduler;
inline uint3 block_index{0, 0, 0};
inline uint3 block_dim{1, 1, 1};
inline uint3 grid_dim{1, 1, 1};
// The launch's dynamic shared memory (`extern __shared__`, rewritten by module.rs).
inline unsigned char* dynamic_shared = nullptr;
// What each lane posted to the shuffle in progress, per warp.
inline std::vector<unsigned long long> shuffle_slots;
inline std::function<void()>* kernel_body = nullptr;
// Static `__shared__` arrays (rewritten by module.rs into `shared_array` calls), one per
// declaration, refilled at every block start like dynamic shared memory.
inline std::vector<std::vector<unsigned long long>> static_shared;
// One launch at a time per compiled module: blocks share the kernels' __shared__ arrays,
// which are function statics here, and the globals above.
inline std::mutex launch_lock;

// Bytes that uninitialised shared memory holds: all-ones, a NaN in every float width.
constexpr unsigned char SHARED_FILL = 0xff;

inline void wait_at(Fiber::State state)
{
    current->state = state;
    swapcontext(&current->context, &scheduler);
}

inline void fiber_main()
{
    (*kernel_body)();
    current->state = Fiber::DONE;
    // A lane that has returned posts nothing: a shuffle reading it gets NaN bytes.
    memset(&shuffle_slots[current->linear], SHARED_FILL, sizeof(unsigned long long));
    // uc_link returns to the scheduler.
}

inline size_t next_shared_slot = 0;

// The block's copy of the static shared array of `count` values declared at `Site` (one
// per template instantiation, as on the GPU).
template <typename T, size_t Site>
T* shared_array(size_t count)
{
    static const size_t slot = next_shared_slot++;
    if (static_shared.size() <= slot) {
        static_shared.resize(slot + 1);
    }
    std::vector<unsigned long long>& arena = static_shared[slot];
    const size_t words = (count * sizeof(T) + 7) / 8;
    if (arena.size() < words) {
        // Only the first block of a launch gets here (all blocks declare the same size).
        arena.assign(words, ~0ull);
    }
    return reinterpret_cast<T*>(arena.data());
}

// Why a block cannot go on: who waits where.
inline std::string stuck(const std::vector<Fiber>& fibers)
{
    std::string waits[2];
    for (const Fiber& f : fibers) {
        if (f.state == Fiber::AT_SYNCTHREADS || f.state == Fiber::AT_SHUFFLE) {
            std::string& list = waits[f.state == Fiber::AT_SHUFFLE];
            if (list.size() < 200) {
                list += (list.empty() ? "" : ", ") + std::to_string(f.linear);
            }
        }
    }
    return "block (" + std::to_string(block_index.x) + ", " + std::to_string(block_index.y) + ", "
        + std::to_string(block_index.z) + ") cannot go on: threads waiting at __syncthreads(): ["
        + waits[0] + "]; at a warp shuffle: [" + waits[1]
        + "]; the others have returned (a barrier in code that not every thread runs?)";
}

// Runs one block to its end; returns an empty string, or why it deadlocked.
inline std::string run_block(std::vector<Fiber>& fibers)
{
    for (Fiber& f : fibers) {
        f.state = Fiber::RUNNABLE;
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack->usable();
        f.context.uc_stack.ss_size = STACK_BYTES;
        f.context.uc_link = &scheduler;
        makecontext(&f.context, fiber_main, 0);
    }
    const size_t warps = (fibers.size() + WARP - 1) / WARP;
    for (;;) {
        bool ran = false;
        for (Fiber& f : fibers) {
            if (f.state == Fiber::RUNNABLE) {
                current = &f;
                swapcontext(&scheduler, &f.context);
                ran = true;
            }
        }
        // Release whatever barrier every live thread it concerns has reached.
        bool all_done = true, all_synced = true;
        for (const Fiber& f : fibers) {
            all_done &= f.state == Fiber::DONE;
            all_synced &= f.state == Fiber::DONE || f.state == Fiber::AT_SYNCTHREADS;
        }
        if (all_done) {
            return "";
        }
        bool released = false;
        if (all_synced) {
            for (Fiber& f : fibers) {
                if (f.state == Fiber::AT_SYNCTHREADS) {
                    f.state = Fiber::RUNNABLE;
                }
            }
            released = true;
        }
        for (size_t w = 0; w < warps && !released; ++w) {
            bool waiting = false, all_in = true;
            for (size_t t = w * WARP; t < fibers.size() && t < (w + 1) * WARP; ++t) {
                waiting |= fibers[t].state == Fiber::AT_SHUFFLE;
                all_in &= fibers[t].state == Fiber::AT_SHUFFLE || fibers[t].state == Fiber::DONE;
            }
            if (waiting && all_in) {
                for (size_t t = w * WARP; t < fibers.size() && t < (w + 1) * WARP; ++t) {
                    if (fibers[t].state == Fiber::AT_SHUFFLE) {
                        fibers[t].state = Fiber::RUNNABLE;
                    }
                }
                released = true;
            }
        }
        if (!released && !ran) {
            return stuck(fibers);
        }
    }
}

// Runs `kernel` on a grid of `grid` blocks of `block` threads with `shared_bytes` of
// dynamic shared memory, block after block, each thread a fiber. Returns an empty string,
// or why a block deadlocked.
inline std::string launch(uint3 grid, uint3 block, unsigned int shared_bytes, std::function<void()> kernel)
{
    std::lock_guard<std::mutex> lock(launch_lock);
    block_dim = block;
    grid_dim = grid;
    kernel_body = &kernel;
    const unsigned int threads = block.x * block.y * block.z;
    std::vector<unsigned long long> shared((shared_bytes + 7) / 8 + 1);
    dynamic_shared = reinterpret_cast<unsigned char*>(shared.data());
    shuffle_slots.assign(threads, ~0ull);
    static_shared.clear();
    std::vector<Fiber> fibers(threads);
    for (unsigned int t = 0; t < threads; ++t) {
        fibers[t].stack = std::make_unique<Stack>();
        fibers[t].linear = t;
        fibers[t].index = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    }
    std::string problem;
    const unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
    for (unsigned long long b = 0; b < blocks && problem.empty(); ++b) {
        block_index = uint3{(unsigned int)(b % grid.x), (unsigned int)((b / grid.x) % grid.y),
            (unsigned int)(b / ((unsigned long long)grid.x * grid.y))};
        memset(dynamic_shared, SHARED_FILL, shared_bytes);
        for (std::vector<unsigned long long>& arena : static_shared) {
            memset(arena.data(), SHARED_FILL, arena.size() * sizeof(unsigned long long));
        }
        memset(shuffle_slots.data(), SHARED_FILL, shuffle_slots.size() * sizeof(unsigned long long));
        problem = run_block(fibers);
    }
    current = nullptr;
    dynamic_shared = nullptr;
    kernel_body = nullptr;
    return problem;
}

template <typename T>
T shuffle_down(T value, unsigned int delta, int width)
{
    static_assert(sizeof(T) <= sizeof(unsigned long long), "shuffles of up to 8 bytes");
    if (width != (int)WARP) {
        fprintf(stderr, "cuda-emulator: shuffles of width %d are not emulated\n", width);
        abort();
    }
    const unsigned int lane = current->linear % WARP;
    const unsigned int first = current->linear - lane;
    const unsigned int lanes = (unsigned int)shuffle_slots.size() - first < WARP
        ? (unsigned int)shuffle_slots.size() - first
        : WARP;
    memcpy(&shuffle_slots[current->linear], &value, sizeof(T));
    wait_at(Fiber::AT_SHUFFLE);
    T result = value;
    if (lane + delta < lanes) {
        memcpy(&result, &shuffle_slots[first + lane + delta], sizeof(T));
    }
    // Nobody posts the next value before every lane has read this one.
    wait_at(Fiber::AT_SHUFFLE);
    return result;
}

// What module.rs checks a launch's arguments against: the compiler's view of each
// parameter type.
struct ParamInfo {
    unsigned int size;
    int is_pointer;
    unsigned int pointee_size;
    int is_float;
    int is_signed;
};

template <typename T>
constexpr ParamInfo describe()
{
    typedef std::remove_cv_t<T> P;
    typedef std::remove_cv_t<std::remove_pointer_t<P>> E;
    constexpr bool pointer = std::is_pointer_v<P>;
    return ParamInfo{
        (unsigned int)sizeof(P),
        pointer,
        pointer ? (unsigned int)sizeof(E) : 0u,
        pointer ? std::is_floating_point_v<E> : std::is_floating_point_v<P>,
        std::is_signed_v<P>,
    };
}

} // namespace cuda_emulator

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n) alignas(n)
// Arrays declared `__shared__ T name[N];` are rewritten by module.rs into per-block arenas;
// any other `__shared__` declaration is a function static, shared by the block's threads
// (blocks run one after another, launches one at a time) but not refilled between blocks.
#define __shared__ static
#define threadIdx (::cuda_emulator::current->index)
#define blockIdx (::cuda_emulator::block_index)
#define blockDim (::cuda_emulator::block_dim)
#define gridDim (::cuda_emulator::grid_dim)

inline void __syncthreads() { ::cuda_emulator::wait_at(::cuda_emulator::Fiber::AT_SYNCTHREADS); }

template <typename T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = 32)
{
    if (mask != 0xffffffffu) {
        fprintf(stderr, "cuda-emulator: shuffles over part of a warp (mask %#x) are not emulated\n", mask);
        abort();
    }
    return ::cuda_emulator::shuffle_down(value, delta, width);
}

inline float __uint_as_float(unsigned int u) { return std::bit_cast<float>(u); }
inline unsigned int __float_as_uint(float f) { return std::bit_cast<unsigned int>(f); }

// IEEE half precision, as PTX's cvt.f32.f16 and cvt.rn.f16.f32 convert it (round to
// nearest even), for kernels that write `#ifdef CUDA_EMULATOR` around their inline PTX.
inline float cuda_emulator_f16_to_f32(unsigned short bits) { return (float)std::bit_cast<_Float16>(bits); }
inline unsigned short cuda_emulator_f32_to_f16(float f) { return std::bit_cast<unsigned short>((_Float16)f); }
