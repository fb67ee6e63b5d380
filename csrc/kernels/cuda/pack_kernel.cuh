// CUDA pack / unpack kernels of the code format (tacq/packing.h); pack.cu
// launches them, tests/c/cuda_emulation_pack.cpp runs them on the CPU.
//
// Thread mapping: one thread per (row n, 32-code block b), for_each_code_block
// of code_blocks.cuh: block b of row n is codes[n, 32b .. 32b+31] (the last
// block of a row zero-padded) and packed words [t*bits, t*bits + bits), so a
// warp reads and writes one contiguous span. The bit work is pack_block /
// extract_code of tacq/packing.h, the same code the CPU runs.
#pragma once

#include <cstdint>

#include "code_blocks.cuh"
#include "tacq/packing.h"

namespace tacq::cuda::packing {

constexpr int kThreads = 256;

template <int BITS>
__global__ void __launch_bounds__(kThreads)
    pack_kernel(const uint8_t* __restrict__ codes,  // [N, K]
                int64_t N, int64_t K,
                uint32_t* __restrict__ packed) {    // [N, nb*BITS]
  for_each_code_block(N, K, [&](int64_t t, int64_t n, int64_t k0) {
    const uint8_t* src = codes + n * K + k0;
    const int64_t valid = K - k0;  // >= 1; >= 32 except in a row's last block
    uint8_t block[kCodesPerBlock];
#pragma unroll
    for (int i = 0; i < kCodesPerBlock; ++i) block[i] = i < valid ? src[i] : 0;
    uint32_t words[BITS];
    pack_block(block, BITS, words);
#pragma unroll
    for (int w = 0; w < BITS; ++w) packed[t * BITS + w] = words[w];
  });
}

template <int BITS>
__global__ void __launch_bounds__(kThreads)
    unpack_kernel(const uint32_t* __restrict__ packed,  // [N, nb*BITS]
                  int64_t N, int64_t K,
                  uint8_t* __restrict__ codes) {        // [N, K]
  for_each_code_block(N, K, [&](int64_t t, int64_t n, int64_t k0) {
    uint32_t words[BITS];
#pragma unroll
    for (int w = 0; w < BITS; ++w) words[w] = packed[t * BITS + w];
    uint8_t* dst = codes + n * K + k0;
    const int64_t valid = K - k0;
#pragma unroll
    for (int i = 0; i < kCodesPerBlock; ++i)
      if (i < valid) dst[i] = static_cast<uint8_t>(extract_code(words, i, BITS));
  });
}

}  // namespace tacq::cuda::packing
