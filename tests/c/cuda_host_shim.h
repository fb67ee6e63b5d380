// What a CUDA kernel header needs from the device, for a host C++ compiler,
// so that the kernel runs on the CPU: one std::thread per CUDA thread of a
// block, the blocks of a grid one after another (BlockRunner). __syncthreads is
// a barrier of the block's threads, __shfl_xor_sync an exchange through
// memory between two barriers of the warp's. CUDA's own headers give the
// vector and 16-bit float types and make __device__, __global__ and
// __shared__ empty for a host compiler; `extern __shared__` arrays are the
// including file's to define (one block runs at a time), so the kernels keep
// all their shared memory there (a block-scope `__shared__` variable would be
// each thread's own here). Blocks run through a BlockRunner, whose threads
// outlive them; run_grid runs a grid's blocks one after another.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>

#include <algorithm>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __launch_bounds__(...)

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline dim3 gridDim, blockDim;

namespace cuda_host {

constexpr int kWarpSize = 32;

// The state of the block now running: its barrier, its warps' barriers and
// the lanes' shuffle slots.
struct Block {
  explicit Block(int threads) : sync(threads), warp_sync(threads / kWarpSize), lanes(threads) {
    for (auto& b : warp_sync) b = std::make_unique<std::barrier<>>(kWarpSize);
  }
  std::barrier<> sync;
  std::vector<std::unique_ptr<std::barrier<>>> warp_sync;
  std::vector<float> lanes;
};

inline Block* g_block = nullptr;

// `threads` std::threads kept for the whole run, one per CUDA thread of a
// block (creating them per block costs more than most blocks' work).
class BlockRunner {
 public:
  explicit BlockRunner(int threads) : block_(threads), start_(threads + 1), done_(threads + 1) {
    for (int t = 0; t < threads; ++t)
      pool_.emplace_back([this, t] {
        threadIdx = {static_cast<unsigned>(t), 0, 0};
        for (;;) {
          start_.arrive_and_wait();
          if (stop_) return;
          blockIdx = {block_index_, 0, 0};
          (*body_)();
          done_.arrive_and_wait();
        }
      });
  }
  ~BlockRunner() {
    stop_ = true;
    start_.arrive_and_wait();
    for (auto& thread : pool_) thread.join();
  }
  // Runs body() as every thread of block `index` and returns when all are done.
  void run(unsigned index, const std::function<void()>& body) {
    blockDim = {static_cast<unsigned>(pool_.size()), 1, 1};
    block_index_ = index;
    body_ = &body;
    g_block = &block_;
    start_.arrive_and_wait();
    done_.arrive_and_wait();
    g_block = nullptr;
  }

 private:
  Block block_;
  std::barrier<> start_, done_;
  std::vector<std::thread> pool_;
  unsigned block_index_ = 0;
  const std::function<void()>* body_ = nullptr;
  bool stop_ = false;
};

// The runner of kThreads threads, made once and kept for the whole test.
template <int kThreads>
BlockRunner& block_runner() {
  static BlockRunner runner(kThreads);
  return runner;
}

// Runs a grid of `grid` blocks, one after another, each as every thread of
// `runner` executing body(); before_block() (if any) runs before each block,
// e.g. to fill shared memory with NaN so that a read of an unwritten slot shows.
inline void run_grid(BlockRunner& runner, unsigned grid, const std::function<void()>& body,
                     const std::function<void()>& before_block = {}) {
  gridDim = {grid, 1, 1};
  for (unsigned b = 0; b < grid; ++b) {
    if (before_block) before_block();
    runner.run(b, body);
  }
}

}  // namespace cuda_host

inline void __syncthreads() { cuda_host::g_block->sync.arrive_and_wait(); }

// Every lane of the warp calls it (as the kernels do: full-warp masks only).
inline float __shfl_xor_sync(unsigned /*mask*/, float value, int lane_mask) {
  cuda_host::Block& block = *cuda_host::g_block;
  const int t = static_cast<int>(threadIdx.x), warp = t / cuda_host::kWarpSize;
  block.lanes[t] = value;
  block.warp_sync[warp]->arrive_and_wait();
  const float other = block.lanes[t ^ lane_mask];  // lane_mask < 32: the partner is in the same warp
  block.warp_sync[warp]->arrive_and_wait();  // nobody overwrites a lane before all have read
  return other;
}

template <typename T>
inline T __ldcs(const T* p) { return *p; }
template <typename T>
inline T __ldg(const T* p) { return *p; }

// Round-to-nearest subtraction, never contracted into an FMA (the tests build
// with -ffp-contract=off, so a plain subtraction is one).
inline float __fsub_rn(float a, float b) { return a - b; }

// The low 32 bits of (hi:lo) >> (shift & 31), as PTX shf.r.wrap.
inline uint32_t __funnelshift_r(uint32_t lo, uint32_t hi, unsigned shift) {
  return static_cast<uint32_t>(((uint64_t{hi} << 32) | lo) >> (shift & 31));
}

inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

using std::min;
