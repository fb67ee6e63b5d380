// CUDA kernel of tacq.quantize: per (row, group), kept weights replaced by the
// mean of the others, then the best of 80 shrink factors by sum |residual|^2.4.
//
//   w [N, K] ──► groups idx = n * G + g, each `len` = group_len contiguous weights
//
//   block (kThreads) per group, grid-stride over idx:
//     thread t owns elements k = t, t + kThreads, t + 2 kThreads, ... of the group
//     (the same set in every pass, so the staged copy needs no barriers)
//     1. stats:  free-weight min / max / fp64 sum / count ── cub::BlockReduce
//                thread 0: fill = clamp(float(sum / count), min, max), range = clip_range
//     2. stage:  v[k] = kept ? fill : w[k] (fp32) in dynamic shared memory when
//                len <= kMaxStagedLen, else recomputed from global memory each pass
//     3. search: 10 passes of 8 factors; each thread sums the 8 errors over its
//                elements, one cub::BlockReduce of the 8-vector per pass;
//                thread 0 keeps the first factor with the smallest error
//     4. codes:  quantize_value with the chosen factor; kept positions get `zero`
//
// All quantizer arithmetic is tacq/quant_math.h (shared with the CPU kernel and
// matching reference.py), so the codes, scale and zero equal the CPU kernel's
// whenever the best factor is the same; the error sums themselves (powf, tree
// order) differ from the CPU's in the last bits, which can only matter when two
// factors tie to ~1e-6. Offsets are 64-bit.
//
// Shared memory is all dynamic: BlockShared, then the staged group. quantize.cu
// launches the kernel; tests/c/cuda_emulation_quantize.cpp runs it on the CPU.
#pragma once

#include <cub/block/block_reduce.cuh>

#include <cfloat>
#include <cstddef>
#include <cstdint>

#include "float_types.cuh"
#include "tacq/quant_math.h"

namespace tacq::cuda::quant {

constexpr int kFactorsPerPass = 8;
static_assert(kShrinkSteps % kFactorsPerPass == 0, "passes must cover the factors exactly");
constexpr int64_t kMaxStagedLen = 8192;  // 32 KiB of fp32 (+ static) under the 48 KiB default
constexpr int64_t kSmallGroup = 1024;    // groups up to this length get 128-thread blocks

// Statistics of the free (not kept) weights of a group.
struct FreeStats {
  double sum;
  float lo, hi;
  int64_t count;
};
struct CombineStats {
  __device__ __forceinline__ FreeStats operator()(const FreeStats& a, const FreeStats& b) const {
    return FreeStats{a.sum + b.sum, fminf(a.lo, b.lo), fmaxf(a.hi, b.hi), a.count + b.count};
  }
};

// Errors of the kFactorsPerPass factors of one pass.
struct PassErrors {
  float e[kFactorsPerPass];
};
struct AddErrors {
  __device__ __forceinline__ PassErrors operator()(const PassErrors& a, const PassErrors& b) const {
    PassErrors s;
#pragma unroll
    for (int j = 0; j < kFactorsPerPass; ++j) s.e[j] = a.e[j] + b.e[j];
    return s;
  }
};

// |(dequantized - x) / (hi - lo)|^2.4; the subtraction is kept apart from the
// product inside dequantize_value (no FMA), as in reference.py.
template <int kBits>
__device__ __forceinline__ float error_term(float x, QParams p, float inv_span) {
  const float q = quantize_value(x, p, kBits);
  const float d = __fsub_rn(dequantize_value(q, p), x) * inv_span;
  return powf(fabsf(d), kErrorNorm);
}

// A block's shared state, at the front of its dynamic shared memory (the
// staged group follows it): the CUB reductions' storage (one at a time), the
// 80 quantizers, and what thread 0 publishes to the others.
template <int kThreads>
struct BlockShared {
  union {
    typename cub::BlockReduce<FreeStats, kThreads>::TempStorage stats;
    typename cub::BlockReduce<PassErrors, kThreads>::TempStorage errors;
  } reduce;
  QParams params[kShrinkSteps];
  float fill;
  Range range;
  int best;
};

// Dynamic shared memory before the staged group (16-byte aligned), and in all
// for groups of `len` (host side: the launcher's size).
template <int kThreads>
constexpr size_t kBlockSharedBytes = (sizeof(BlockShared<kThreads>) + 15) / 16 * 16;
template <int kThreads>
inline size_t dynamic_smem_bytes(int64_t len) {
  return kBlockSharedBytes<kThreads> + (len <= kMaxStagedLen ? static_cast<size_t>(len) * sizeof(float) : 0);
}

// Minimum blocks per SM = 512 / kThreads caps registers at 128 per thread; left
// to itself ptxas picks a lower budget and spills (CUB's struct reductions).
template <typename T, int kBits, int kThreads>
__global__ void __launch_bounds__(kThreads, 512 / kThreads)
    quantize_kernel(const T* __restrict__ w,        // [N, K]
                    const bool* __restrict__ keep,  // [N, K] or nullptr
                    int64_t groups,                 // N * G
                    int64_t K, int64_t len,         // row length, group length (divides K)
                    bool staged,                    // v in shared memory (len <= kMaxStagedLen)
                    uint8_t* __restrict__ codes,    // [N, K]
                    float* __restrict__ scale,      // [N, G]
                    float* __restrict__ zero) {     // [N, G]
  using StatsReduce = cub::BlockReduce<FreeStats, kThreads>;
  using ErrorReduce = cub::BlockReduce<PassErrors, kThreads>;
  extern __shared__ __align__(16) unsigned char quantize_smem[];
  BlockShared<kThreads>& sh = *reinterpret_cast<BlockShared<kThreads>*>(quantize_smem);
  float* const v_sh = reinterpret_cast<float*>(quantize_smem + kBlockSharedBytes<kThreads>);  // [len] if staged

  const int tid = static_cast<int>(threadIdx.x);
  const int64_t G = K / len;
  for (int64_t idx = blockIdx.x; idx < groups; idx += gridDim.x) {
    const int64_t offset = idx / G * K + idx % G * len;  // 64-bit element offset of the group
    const T* wg = w + offset;
    const bool* kg = keep ? keep + offset : nullptr;

    // 1. Free-weight statistics (exact min / max; fp64 sum, rounded once).
    FreeStats s{0.0, FLT_MAX, -FLT_MAX, 0};
    for (int64_t k = tid; k < len; k += kThreads) {
      const float x = to_float(wg[k]);
      if (staged) v_sh[k] = x;
      if (kg && kg[k]) continue;
      s = CombineStats()(s, FreeStats{x, x, x, 1});
    }
    const FreeStats tot = StatsReduce(sh.reduce.stats).Reduce(s, CombineStats());
    if (tid == 0) {
      const bool any = tot.count > 0;
      sh.fill = any ? fminf(fmaxf(static_cast<float>(tot.sum / static_cast<double>(tot.count)), tot.lo),
                            tot.hi)
                    : 0.f;
      sh.range = clip_range(any ? tot.lo : 0.f, any ? tot.hi : 0.f);
    }
    __syncthreads();  // fill / range published; sh.reduce free again

    // 2. The statistics' view of the group, and the 80 quantizers.
    const float fill = sh.fill;
    const Range r = sh.range;
    if (staged && kg)
      for (int64_t k = tid; k < len; k += kThreads)
        if (kg[k]) v_sh[k] = fill;  // own elements only: no barrier needed
    for (int i = tid; i < kShrinkSteps; i += kThreads) sh.params[i] = qparams(r, shrink_factor(i), kBits);
    __syncthreads();
    auto value = [&](int64_t k) -> float {
      if (staged) return v_sh[k];
      return kg && kg[k] ? fill : to_float(wg[k]);
    };

    // 3. Clipping search, kFactorsPerPass factors per pass; first minimum wins.
    const float inv_span = 1.f / (r.hi - r.lo);
    float best_err = 0.f;
    int best = 0;
    for (int i0 = 0; i0 < kShrinkSteps; i0 += kFactorsPerPass) {
      QParams p[kFactorsPerPass];
      PassErrors e;
#pragma unroll
      for (int j = 0; j < kFactorsPerPass; ++j) {
        p[j] = sh.params[i0 + j];
        e.e[j] = 0.f;
      }
      for (int64_t k = tid; k < len; k += kThreads) {
        const float x = value(k);
#pragma unroll
        for (int j = 0; j < kFactorsPerPass; ++j) e.e[j] += error_term<kBits>(x, p[j], inv_span);
      }
      const PassErrors sum = ErrorReduce(sh.reduce.errors).Reduce(e, AddErrors());
      if (tid == 0) {
#pragma unroll
        for (int j = 0; j < kFactorsPerPass; ++j) {
          if (i0 + j == 0 || sum.e[j] < best_err) {
            best_err = sum.e[j];
            best = i0 + j;
          }
        }
      }
      __syncthreads();  // sh.reduce is reused by the next pass
    }

    // 4. Codes with the chosen quantizer; kept weights get the code of 0.
    if (tid == 0) {
      sh.best = best;
      scale[idx] = sh.params[best].scale;
      zero[idx] = sh.params[best].zero;
    }
    __syncthreads();
    const QParams q = sh.params[sh.best];
    uint8_t* cg = codes + offset;
    for (int64_t k = tid; k < len; k += kThreads)
      cg[k] = static_cast<uint8_t>(kg && kg[k] ? q.zero : quantize_value(value(k), q, kBits));
    __syncthreads();  // sh and v_sh are rewritten for the next group
  }
}

}  // namespace tacq::cuda::quant
