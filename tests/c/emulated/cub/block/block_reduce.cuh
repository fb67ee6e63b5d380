// Stand-in for CUB's cub::BlockReduce in the CPU emulation of the CUDA
// kernels (tests/c/cuda_host_shim.h): CUB's device code does not build with a
// host compiler, so this header, found first on the emulation tests' include
// path, gives the same contract. All threads of the block call Reduce; only
// thread 0's result is the aggregate (the others get a value of all-ones
// bytes: NaN, -1); the temporary storage is read by thread 0 after the call's
// barrier, so a kernel that reuses it without a __syncthreads() in between,
// which CUB forbids, can see it overwritten and reduce the wrong values.
#pragma once

#include <cstring>

namespace cub {

template <typename T, int kBlockThreads>
class BlockReduce {
 public:
  struct TempStorage {
    T slots[kBlockThreads];
  };

  explicit BlockReduce(TempStorage& storage) : storage_(storage) {}

  template <typename Op>
  T Reduce(T value, Op op) {
    const int t = static_cast<int>(threadIdx.x);
    storage_.slots[t] = value;
    __syncthreads();
    T result;
    std::memset(static_cast<void*>(&result), 0xFF, sizeof result);
    if (t == 0) {
      result = storage_.slots[0];
      for (int i = 1; i < kBlockThreads; ++i) result = op(result, storage_.slots[i]);
    }
    return result;
  }

 private:
  TempStorage& storage_;
};

}  // namespace cub
