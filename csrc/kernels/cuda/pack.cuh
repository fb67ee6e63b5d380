// Torch-free launchers of the CUDA pack / unpack kernels (layout: tacq/packing.h).
// Pointers are device pointers to contiguous row-major arrays; launches go on
// `stream`; nothing is checked here beyond `bits` (the glue checks shapes).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tacq/cuda_launch.h"

namespace tacq::cuda {

// codes uint8 [N, K] (each < 2^bits) -> packed uint32 [N, ceil(K/32)*bits].
Result launch_pack(const uint8_t* codes, int64_t N, int64_t K, int bits, uint32_t* packed,
                   cudaStream_t stream);

// packed uint32 [N, ceil(K/32)*bits] -> codes uint8 [N, K].
Result launch_unpack(const uint32_t* packed, int64_t N, int64_t K, int bits, uint8_t* codes,
                     cudaStream_t stream);

}  // namespace tacq::cuda
