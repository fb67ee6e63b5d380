// Torch-free launcher of the CUDA saliency_accumulate kernel:
//   acc[N, K] += sum_b |grad_out[b]^T act[b]|   (absolute value per sample)
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tacq/cuda_launch.h"

namespace tacq::cuda {

// grad_out [B, T, N] and act [B, T, K], both contiguous, both of `dtype`
// (fp32, fp16 or bf16); acc fp32 [N, K] contiguous, read and written once.
// B, T, N, K >= 1. Launches on `stream`; no workspace.
Result launch_saliency_accumulate(const void* grad_out, const void* act, DType dtype, float* acc,
                                  int64_t B, int64_t T, int64_t N, int64_t K, cudaStream_t stream);

}  // namespace tacq::cuda
