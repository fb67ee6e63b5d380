// Torch-free launcher of the fused CUDA mixed_gemv kernel:
//   y[M, N] = x[M, K] · (dequant(packed, scale, zero) + R)ᵀ,  R the CSR residual,
// fp32 accumulation, y in x's dtype. Data layout and thread mapping: mixed_gemv_kernel.cuh
// and csrc/kernels/cuda/README.md.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tacq/cuda_launch.h"

namespace tacq::cuda {

// All pointers are device pointers to contiguous row-major arrays.
struct GemvProblem {
  const void* x;             // [M, K], x_dtype (fp16, bf16 or fp32), 1 <= M <= 16
  DType x_dtype;
  int64_t M, N, K;
  const uint32_t* packed;    // [N, ceil(K/32)*bits]
  int bits;                  // 2, 3 or 4
  const void* scale;         // [N, G], scale_dtype (fp32 or fp16)
  const void* zero;          // [N, G], scale_dtype
  DType scale_dtype;
  int64_t G, group_len;      // group_len = K / G, a multiple of 32 when G > 1
  const int32_t* row_ptr;    // [N + 1]
  const int32_t* col_idx;    // [nnz]
  const void* values;        // [nnz] fp16
  int64_t nnz;
  void* y;                   // [M, N], x_dtype
};

// The CSR content (row_ptr monotone within [0, nnz], columns in [0, K) and
// sorted) is NOT checked on the device (that would need a host sync); the
// kernel stays memory-safe regardless: row ranges are clamped to [0, nnz] and
// entries with a column outside [0, K) are skipped. Content is validated on
// the CPU / when a checkpoint is loaded.
Result launch_mixed_gemv(const GemvProblem& problem, cudaStream_t stream);

}  // namespace tacq::cuda
