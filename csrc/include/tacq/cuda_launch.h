// Torch-free vocabulary shared by the CUDA launchers (csrc/kernels/cuda/*.cuh)
// and their torch glue (csrc/ops/cuda/*_ops.cpp): the element types a launcher
// accepts and the status it returns instead of throwing. The glue turns every
// status other than kOk into a message that quotes the offending sizes.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

namespace tacq::cuda {

enum class DType : int { kFloat32, kFloat16, kBFloat16 };

enum class Status : int {
  kOk,
  kBadBits,      // bits not in {2, 3, 4}; detail = bits
  kBadDType,     // element type without an instantiation; detail = int(DType)
  kBadRows,      // M outside [1, 16] (mixed_gemv); detail = M
  kLaunchFailed  // the CUDA runtime refused a call or the launch; detail = cudaError_t
};

struct Result {
  Status status = Status::kOk;
  int64_t detail = 0;
};

#if defined(__CUDACC__)
// Blocks for a grid-stride loop over `total` items: enough to fill any GPU,
// few enough that gridDim.x stays far below its 2^31-1 limit.
inline unsigned grid_for(int64_t total, int threads) {
  const int64_t blocks = (total + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

// Result of the launch just issued (configuration errors surface here).
inline Result last_launch_result() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? Result{} : Result{Status::kLaunchFailed, static_cast<int64_t>(e)};
}
#endif

}  // namespace tacq::cuda
