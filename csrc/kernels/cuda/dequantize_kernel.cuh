// CUDA dequantize kernel: out[n, k] = scale[n, g] * (code[n, k] - zero[n, g]), g = k / group_len.
//
// Thread mapping: one thread per (row n, 32-code block b), for_each_code_block
// of code_blocks.cuh. A thread reads its block's `bits` packed words (a warp
// reads one contiguous span), one scale/zero pair (a block never straddles
// groups: group_len is K or a multiple of 32), and writes the 32 outputs
// out[n, 32b .. 32b+31] with 16-byte stores when every row start is 16-byte
// aligned, else element by element; the last block of a row stops at K. The arithmetic is dequantize_value of tacq/quant_math.h, the
// CPU kernel's, so the results are bitwise equal.
// dequantize.cu launches it, tests/c/cuda_emulation_dequantize.cpp runs it on the CPU.
#pragma once

#include <cstdint>

#include "code_blocks.cuh"
#include "float_types.cuh"
#include "tacq/packing.h"
#include "tacq/quant_math.h"

namespace tacq::cuda::dequant {

constexpr int kThreads = 256;

// Whether every row of out [N, K] starts 16-byte aligned, so that the kernel
// may store whole 32-code blocks 16 bytes at a time (host side: the launcher's choice).
template <typename O>
inline bool vector_stores(const O* out, int64_t K) {
  return K * int64_t{sizeof(O)} % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
}

template <int BITS, typename S, typename O>
__global__ void __launch_bounds__(kThreads)
    dequantize_kernel(const uint32_t* __restrict__ packed,  // [N, nb*BITS]
                      const S* __restrict__ scale,          // [N, G]
                      const S* __restrict__ zero,           // [N, G]
                      int64_t N, int64_t K, int64_t G, int64_t group_len,
                      bool vector_store,                    // rows of out 16-byte aligned
                      O* __restrict__ out) {                // [N, K]
  constexpr int kPerVector = 16 / sizeof(O);
  for_each_code_block(N, K, [&](int64_t t, int64_t n, int64_t k0) {
    uint32_t words[BITS];
#pragma unroll
    for (int w = 0; w < BITS; ++w) words[w] = __ldg(packed + t * BITS + w);
    const int64_t g = n * G + k0 / group_len;
    const QParams p{to_float(scale[g]), to_float(zero[g])};

    union {
      uint4 vec[kCodesPerBlock / kPerVector];
      O val[kCodesPerBlock];
    } block;
#pragma unroll
    for (int i = 0; i < kCodesPerBlock; ++i)
      block.val[i] = from_float<O>(dequantize_value(static_cast<float>(extract_code(words, i, BITS)), p));

    O* dst = out + n * K + k0;
    const int64_t valid = K - k0;
    if (vector_store && valid >= kCodesPerBlock) {
#pragma unroll
      for (int v = 0; v < kCodesPerBlock / kPerVector; ++v) reinterpret_cast<uint4*>(dst)[v] = block.vec[v];
    } else {
#pragma unroll
      for (int i = 0; i < kCodesPerBlock; ++i)
        if (i < valid) dst[i] = block.val[i];
    }
  });
}

}  // namespace tacq::cuda::dequant
