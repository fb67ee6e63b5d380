// The thread mapping that the pack, unpack and dequantize kernels share: one
// thread per (row n, 32-code block b) of an [N, K] code matrix, t = n*nb + b
// with nb = ceil(K/32), in a grid-stride loop with 64-bit indices. Thread t's
// codes are [n, 32b .. 32b+31] (the last block of a row stops at K) and its
// packed words [t*bits, t*bits + bits), so a warp touches one contiguous span.
#pragma once

#include <cstdint>

#include "tacq/packing.h"

namespace tacq::cuda {

// Calls body(t, n, k0) for each block this thread owns, k0 = 32b its first column.
template <typename Body>
__device__ __forceinline__ void for_each_code_block(int64_t N, int64_t K, Body body) {
  const int64_t nb = (K + kCodesPerBlock - 1) / kCodesPerBlock;
  const int64_t total = N * nb;
  for (int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; t < total;
       t += int64_t{gridDim.x} * blockDim.x)
    body(t, t / nb, (t % nb) * kCodesPerBlock);
}

}  // namespace tacq::cuda
