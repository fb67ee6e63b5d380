// Torch-free launcher of the CUDA quantize kernel: uniform asymmetric
// quantization with the 80-step clipping search (docs/method.md; conventions
// in python/tacq_ext/reference.py), one thread block per (row, group).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tacq/cuda_launch.h"

namespace tacq::cuda {

// w [N, K] of `dtype` (fp32, fp16 or bf16; finite), keep [N, K] bool or
// nullptr (nothing kept), all contiguous on the device; group_len divides K
// (K for whole rows); bits in {2, 3, 4}. Writes codes uint8 [N, K] and
// scale, zero fp32 [N, K / group_len]. N, K >= 1.
Result launch_quantize(const void* w, DType dtype, const bool* keep, int64_t N, int64_t K,
                       int64_t group_len, int bits, uint8_t* codes, float* scale, float* zero,
                       cudaStream_t stream);

}  // namespace tacq::cuda
