// The CUDA built-ins that the workspace's kernels use, for the host C++ compiler: each
// CUDA thread of a block is an OS thread, blocks run one after another, and
// __syncthreads() is a barrier over the block's threads. Included before a kernel source
// by the wrapper that module.rs generates; see lib.rs for what is and is not emulated.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

struct uint3 {
    unsigned int x, y, z;
};
typedef uint3 dim3;

namespace cuda_emulator {

// How long a barrier waits for the rest of the block before declaring a deadlock (a
// __syncthreads() that some threads of the block never reach).
constexpr std::chrono::seconds BARRIER_TIMEOUT{60};

// A reusable barrier that threads can leave: a thread that returns from the kernel no
// longer counts, as on the GPU.
class Barrier {
public:
    void reset(unsigned int expected)
    {
        std::lock_guard<std::mutex> lock(mutex_);
        expected_ = expected;
        arrived_ = 0;
    }

    void wait(const char* what)
    {
        std::unique_lock<std::mutex> lock(mutex_);
        const unsigned long long generation = generation_;
        if (++arrived_ == expected_) {
            release();
            return;
        }
        if (!changed_.wait_for(lock, BARRIER_TIMEOUT, [&] { return generation != generation_; })) {
            fprintf(stderr,
                "cuda-emulator: %s: %u of %u threads arrived within %lld s; the others never "
                "reach it (a __syncthreads() in code that not every thread runs?)\n",
                what, arrived_, expected_, (long long)BARRIER_TIMEOUT.count());
            abort();
        }
    }

    void leave()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        --expected_;
        if (expected_ > 0 && arrived_ == expected_) {
            release();
        }
    }

private:
    void release()
    {
        arrived_ = 0;
        ++generation_;
        changed_.notify_all();
    }

    std::mutex mutex_;
    std::condition_variable changed_;
    unsigned int expected_ = 0;
    unsigned int arrived_ = 0;
    unsigned long long generation_ = 0;
};

inline thread_local uint3 thread_index{0, 0, 0};
inline thread_local uint3 block_index{0, 0, 0};
inline uint3 block_dim{1, 1, 1};
inline uint3 grid_dim{1, 1, 1};
// __syncthreads() within the block running now.
inline Barrier block_barrier;
// The end of each block: every thread, whether or not it returned early.
inline Barrier block_end;
// One launch at a time per compiled module: blocks share the kernels' __shared__ arrays,
// which are function statics here.
inline std::mutex launch_lock;

// Runs `kernel` on a grid of `grid` blocks of `block` threads (one-dimensional).
template <typename Kernel>
void launch(unsigned int grid, unsigned int block, Kernel kernel)
{
    std::lock_guard<std::mutex> lock(launch_lock);
    block_dim = uint3{block, 1, 1};
    grid_dim = uint3{grid, 1, 1};
    block_end.reset(block);
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned int t = 0; t < block; ++t) {
        threads.emplace_back([t, grid, block, &kernel] {
            thread_index = uint3{t, 0, 0};
            for (unsigned int b = 0; b < grid; ++b) {
                // Thread 0 arms the block's barrier while the others wait at the end of the
                // previous block (or have not started this one).
                if (t == 0) {
                    block_barrier.reset(block);
                }
                block_end.wait("the start of a block");
                block_index = uint3{b, 0, 0};
                kernel();
                block_barrier.leave();
                block_end.wait("the end of a block");
            }
        });
    }
    for (std::thread& thread : threads) {
        thread.join();
    }
}

} // namespace cuda_emulator

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
// One copy per kernel (function statics), shared by the block's threads: blocks run one
// after another and launches one at a time.
#define __shared__ static
#define threadIdx (::cuda_emulator::thread_index)
#define blockIdx (::cuda_emulator::block_index)
#define blockDim (::cuda_emulator::block_dim)
#define gridDim (::cuda_emulator::grid_dim)

inline void __syncthreads() { ::cuda_emulator::block_barrier.wait("__syncthreads()"); }
