// Torch-free launcher of the CUDA dequantize kernel: packed codes (tacq/packing.h)
// -> scale * (code - zero) as a dense [N, K] matrix.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tacq/cuda_launch.h"

namespace tacq::cuda {

// packed uint32 [N, ceil(K/32)*bits]; scale, zero [N, G] of `scale_dtype`
// (fp32 or fp16); group_len = K / G (a multiple of 32 when G > 1);
// out [N, K] of `out_dtype` (fp32, fp16 or bf16). All contiguous, on the device.
Result launch_dequantize(const uint32_t* packed, const void* scale, const void* zero,
                         DType scale_dtype, int64_t N, int64_t K, int64_t G, int64_t group_len,
                         int bits, void* out, DType out_dtype, cudaStream_t stream);

}  // namespace tacq::cuda
