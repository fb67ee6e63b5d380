// Fused CUDA mixed_gemv: y[M, N] = x[M, K] · (dequant(packed) + R)ᵀ in one launch,
// the dense low-bit part and the CSR residual R applied by the same warps
// (no second pass, no atomics). Built for memory-bound decode (M = 1..16).
//
// Data: packed [N, nb*bits] uint32 (nb = ceil(K/32) blocks of 32 codes,
// tacq/packing.h); scale/zero [N, G]; x [M, K] fp16, bf16 or fp32; R as CSR.
//
// Thread mapping (diagram in README.md):
//   * A block is 8 warps; a warp owns 2 consecutive rows; a block's 16 rows are
//     a row tile. Blocks walk row tiles in a grid-stride loop, the grid sized
//     to the resident capacity of the GPU, so x is staged once per block when
//     it fits in shared memory.
//   * x is staged in shared memory in K tiles of TC lane chunks (all of K in one
//     tile when it fits the budget), in x's dtype and in the swizzled layout
//     of tacq/gemv_tiling.h, plus the fp32 sum of x over
//     every 32-code block. Rows m >= M and columns >= K are staged as zeros.
//   * Within a tile, lane l of a warp takes lane chunks l, l+32, ... (a chunk is
//     1 or 3 uint4 of packed words per row: 64, 128 or 32 codes for 2, 3, 4
//     bits), loads them for both rows with 16-byte loads (a warp reads 512 or
//     1536 contiguous bytes per row; for MT <= 4 a lane issues the loads of two
//     chunks before computing either), and per 32-code block b of group g forms
//         acc[r][m] += scale[g] * (sum_k q_k x[m,k] - zero[g] * sum_k x[m,k])
//     with codes turned into the floats 1 + q/2^bits in registers (one shift
//     and one LOP3 a code) and x read from the tile.
//   * Residual: the warp then walks each row's CSR entries with a stride of 32
//     lanes (coalesced col_idx/values loads; a row with K entries costs a pass
//     as long as its dense part, rows with none cost nothing) and gathers x
//     from shared memory (from global memory when x took several K tiles).
//   * Every lane holds partial sums of its own columns; a butterfly shuffle
//     reduces them and lane 0 writes y[:, n] in x's dtype.
// Offsets into global memory are 64-bit; shared-memory indices are 32-bit.
//
// Device code only, and the host arithmetic that sizes a launch (k_tiling,
// make_params): mixed_gemv.cu launches it; tests/c/cuda_emulation_mixed_gemv.cpp runs
// it on the CPU, one std::thread per CUDA thread, without a GPU.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "float_types.cuh"
#include "mixed_gemv.cuh"
#include "tacq/gemv_tiling.h"
#include "tacq/packing.h"

namespace tacq::cuda::fused_gemv {

using gemv::block_sum_slot;
using gemv::chunk_blocks;
using gemv::chunk_codes;
using gemv::chunk_pieces;
using gemv::chunk_words;
using gemv::kPieceCodes;
using gemv::piece_slot;
using gemv::tile_element;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 2;
constexpr int kRowsPerTile = kWarps * kRowsPerWarp;
// Shared memory per block for the x tile: two blocks fit an H100 SM (228 KiB).
constexpr int kSmemBudget = 96 * 1024;

template <typename T, typename S>
struct Params {
  const T* x;              // [M, K]
  const uint32_t* packed;  // [N, nb*bits]
  const S* scale;          // [N, G]
  const S* zero;           // [N, G]
  const int32_t* row_ptr;  // [N + 1]
  const int32_t* col_idx;  // [nnz]
  const __half* values;    // [nnz]
  T* y;                    // [M, N]
  int64_t M, N, K, G, nnz;
  int64_t blocks_per_group;  // 32-code blocks per group (all of a row's when G = 1)
  int group_shift;         // log2(blocks_per_group) where that is whole, else -1; 63 when G = 1
  int tile_chunks;         // TC: lane chunks per staged K tile (the layout stride)
  int num_ktiles;          // K tiles; 1 = x resident for the whole kernel
  bool vector_load;        // every row of packed starts 16-byte aligned
  bool vector_x;           // every row of x starts 16-byte aligned
};

// (a & b) | c in one LOP3: with plain C++ the constants b and c are both
// immediates, which one SASS LOP3 cannot take, and the compiler splits it.
// 0xEA is the function's truth table: f(0xF0, 0xCC, 0xAA) for a, b, c.
static_assert(((0xF0 & 0xCC) | 0xAA) == 0xEA, "LOP3 immediate of (a & b) | c");
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t b, uint32_t c) {
#if defined(__CUDA_ARCH__)
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#else  // host compilers (the CPU emulation in tests/c)
  return (a & b) | c;
#endif
}

// Code i of a 32-code block's BITS packed words as the float 1 + q/2^BITS,
// exactly, without I2F (quarter rate on sm_80/sm_90): one shift (a funnel
// shift across two words where a 3-bit code straddles them) moves the code to
// mantissa bits [23 - BITS, 23), and one LOP3 keeps them and sets the
// exponent bits of 1.0. i is a constant after unrolling, so the shift is an
// immediate and the branches fold away.
template <int BITS>
__device__ __forceinline__ float code_weight(const uint32_t* words, int i) {
  constexpr int kTarget = 23 - BITS;
  constexpr uint32_t kMask = ((1u << BITS) - 1u) << kTarget;
  const int bit = i * BITS, word = bit / 32, offset = bit % 32;
  uint32_t v;
  if (offset < kTarget) v = words[word] << (kTarget - offset);
  else if (offset + BITS <= 32) v = words[word] >> (offset - kTarget);
  else v = __funnelshift_r(words[word], words[word + 1], offset - kTarget);
  return __uint_as_float(and_or(v, kMask, 0x3F800000u));
}

// Eight consecutive x elements, the unit of the swizzled tile: one 16-byte
// shared-memory access for fp16/bf16, two for fp32.
template <typename T>
struct alignas(16) Piece {
  T e[kPieceCodes];
};

template <typename T>
__device__ __forceinline__ void piece_to_float(const Piece<T>& v, float (&out)[kPieceCodes]) {
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < kPieceCodes; ++i) out[i] = v.e[i];
  } else {
    using P = typename Pair<T>::type;
#pragma unroll
    for (int i = 0; i < kPieceCodes / 2; ++i) {
      P pair;
      memcpy(&pair, &v.e[2 * i], sizeof(pair));
      const float2 f = to_float2(pair);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
}

// Stages x[:, col0 : col0 + tc_here*C) of all MT rows into the swizzled tile
// `xs` (layout stride TC) and the per-block fp32 sums into `xsum`. Called by
// the whole block; ends with a barrier.
template <int BITS, typename T, int MT>
__device__ void stage_x_tile(const T* __restrict__ x, int64_t M, int64_t K, bool vector_x,
                             int64_t col0, int tc_here, int TC, Piece<T>* xs, float* xsum) {
  constexpr int kPieces = chunk_pieces(BITS);
  constexpr int kBlocks = chunk_blocks(BITS);
  constexpr int kChunkCodes = chunk_codes(BITS);
  // Fetch: consecutive threads take consecutive 8-element pieces of an x row.
  const int pieces = MT * tc_here * kPieces;
  for (int q = threadIdx.x; q < pieces; q += kThreads) {
    const int pc = q % kPieces;
    const int lc = (q / kPieces) % tc_here;
    const int m = q / (kPieces * tc_here);
    const int64_t col = col0 + int64_t{lc} * kChunkCodes + pc * kPieceCodes;
    Piece<T> piece{};  // zeros
    if (m < M) {
      const T* src = x + m * K + col;
      if (vector_x && col + kPieceCodes <= K) {
        piece = *reinterpret_cast<const Piece<T>*>(src);
      } else {
#pragma unroll
        for (int i = 0; i < kPieceCodes; ++i)
          piece.e[i] = col + i < K ? src[i] : from_float<T>(0.f);
      }
    }
    xs[piece_slot(m, pc, lc, BITS, TC)] = piece;
  }
  __syncthreads();
  // Block sums, in a fixed order (the same result on every launch).
  const int sums = MT * kBlocks * tc_here;
  for (int q = threadIdx.x; q < sums; q += kThreads) {
    const int lc = q % tc_here;
    const int j = (q / tc_here) % kBlocks;
    const int m = q / (tc_here * kBlocks);
    float s = 0.f;
#pragma unroll
    for (int pc = 0; pc < kCodesPerBlock / kPieceCodes; ++pc) {
      float f[kPieceCodes];
      piece_to_float<T>(xs[piece_slot(m, j * (kCodesPerBlock / kPieceCodes) + pc, lc, BITS, TC)], f);
#pragma unroll
      for (int i = 0; i < kPieceCodes; ++i) s += f[i];
    }
    xsum[block_sum_slot(m, j, lc, BITS, TC)] = s;
  }
  __syncthreads();
}

// Loads lane chunk c of the warp's rows into registers; rows >= N and words
// past the row's end read as 0.
template <int BITS, typename T, typename S>
__device__ __forceinline__ void load_chunk(const Params<T, S>& p, int64_t n0, int64_t c,
                                           int64_t row_words, bool full,
                                           uint32_t (&w)[kRowsPerWarp][chunk_words(BITS)]) {
  constexpr int kWords = chunk_words(BITS);
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t n = n0 + r;
    const uint32_t* src = p.packed + n * row_words + c * kWords;
    if (n < p.N && full && p.vector_load) {
#pragma unroll
      for (int v = 0; v < kWords / 4; ++v) {
        // Streamed once per call: evict-first keeps x, scales and CSR in cache.
        const uint4 u = __ldcs(reinterpret_cast<const uint4*>(src) + v);
        w[r][4 * v] = u.x;
        w[r][4 * v + 1] = u.y;
        w[r][4 * v + 2] = u.z;
        w[r][4 * v + 3] = u.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < kWords; ++i)
        w[r][i] = n < p.N && c * kWords + i < row_words ? __ldcs(src + i) : 0u;
    }
  }
}

// acc[r][m] += the chunk's contribution: per 32-code block of group g,
// scale_g * (sum q*x[m] - zero_g * sum x[m]), codes from the registers `w`,
// x and its block sums from the staged tile (local chunk lc). With the codes
// as 1 + q/2^BITS, dot = sum x + (sum q*x) / 2^BITS, so the block adds
// scale_g * (2^BITS * dot - (2^BITS + zero_g) * sum x).
template <int BITS, typename T, typename S, int MT>
__device__ __forceinline__ void accumulate_chunk(
    const Params<T, S>& p, int64_t n0, int64_t c, int lc, int64_t nb, int TC, const Piece<T>* xs,
    const float* xsum, const uint32_t (&w)[kRowsPerWarp][chunk_words(BITS)],
    float (&acc)[kRowsPerWarp][MT]) {
  constexpr int kBlocks = chunk_blocks(BITS);
  constexpr int kBlockPieces = kCodesPerBlock / kPieceCodes;  // 4
  constexpr float kSteps = 1 << BITS;
#pragma unroll
  for (int j = 0; j < kBlocks; ++j) {
    const int64_t blk = c * kBlocks + j;
    if (blk >= nb) break;
    const int64_t group = p.group_shift >= 0 ? blk >> p.group_shift : blk / p.blocks_per_group;
    float scale[kRowsPerWarp], zero_term[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t n = n0 + r;
      const int64_t g = n * p.G + group;
      scale[r] = n < p.N ? to_float(p.scale[g]) : 0.f;
      zero_term[r] = -(kSteps + (n < p.N ? to_float(p.zero[g]) : 0.f));
    }
    // dot[r][m] = sum over the block of (1 + q/2^BITS) * x[m]
    float dot[kRowsPerWarp][MT] = {};
#pragma unroll
    for (int pc = 0; pc < kBlockPieces; ++pc) {
      float q[kRowsPerWarp][kPieceCodes];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
        for (int e = 0; e < kPieceCodes; ++e)
          q[r][e] = code_weight<BITS>(&w[r][j * BITS], pc * kPieceCodes + e);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        float xf[kPieceCodes];
        piece_to_float<T>(xs[piece_slot(m, j * kBlockPieces + pc, lc, BITS, TC)], xf);
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
          for (int e = 0; e < kPieceCodes; ++e) dot[r][m] = fmaf(q[r][e], xf[e], dot[r][m]);
      }
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      const float x_sum = xsum[block_sum_slot(m, j, lc, BITS, TC)];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r)
        acc[r][m] = fmaf(scale[r], fmaf(zero_term[r], x_sum, kSteps * dot[r][m]), acc[r][m]);
    }
  }
}

template <int BITS, typename T, typename S, int MT>
__global__ void __launch_bounds__(kThreads) mixed_gemv_kernel(const Params<T, S> p) {
  constexpr int kBlocks = chunk_blocks(BITS);
  constexpr int kWords = chunk_words(BITS);
  // Lane chunks whose loads a lane issues before computing any of them: more
  // bytes in flight where registers allow (small MT), one otherwise.
  constexpr int kChunksInFlight = MT <= 4 ? 2 : 1;
  const int TC = p.tile_chunks;
  extern __shared__ uint4 smem[];
  Piece<T>* xs = reinterpret_cast<Piece<T>*>(smem);                   // [MT * kPieces * TC]
  float* xsum = reinterpret_cast<float*>(xs + MT * chunk_pieces(BITS) * TC);  // [MT * kBlocks * TC]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t nb = (p.K + kCodesPerBlock - 1) / kCodesPerBlock;
  const int64_t row_words = nb * BITS;
  const int64_t num_chunks = (nb + kBlocks - 1) / kBlocks;
  const int64_t row_tiles = (p.N + kRowsPerTile - 1) / kRowsPerTile;
  const bool x_resident = p.num_ktiles == 1;

  for (int64_t rt = blockIdx.x; rt < row_tiles; rt += gridDim.x) {
    const int64_t n0 = rt * kRowsPerTile + warp * kRowsPerWarp;
    float acc[kRowsPerWarp][MT] = {};

    // ---- dense part, one K tile at a time
    for (int kt = 0; kt < p.num_ktiles; ++kt) {
      const int64_t c_begin = int64_t{kt} * TC;
      const int tc_here = static_cast<int>(min(int64_t{TC}, num_chunks - c_begin));
      if (!x_resident || rt == blockIdx.x) {
        __syncthreads();  // every warp is done reading the previous tile
        stage_x_tile<BITS, T, MT>(p.x, p.M, p.K, p.vector_x, c_begin * chunk_codes(BITS), tc_here,
                                  TC, xs, xsum);
      }
      for (int lc0 = lane; lc0 < tc_here; lc0 += 32 * kChunksInFlight) {
        uint32_t w[kChunksInFlight][kRowsPerWarp][kWords];
#pragma unroll
        for (int u = 0; u < kChunksInFlight; ++u) {  // fetch: every load issued first
          const int64_t c = c_begin + lc0 + 32 * u;
          if (lc0 + 32 * u < tc_here) load_chunk<BITS>(p, n0, c, row_words, (c + 1) * kBlocks <= nb, w[u]);
        }
#pragma unroll
        for (int u = 0; u < kChunksInFlight; ++u)  // compute
          if (lc0 + 32 * u < tc_here)
            accumulate_chunk<BITS, T, S, MT>(p, n0, c_begin + lc0 + 32 * u, lc0 + 32 * u, nb, TC, xs,
                                             xsum, w[u], acc);
      }
    }

    // ---- residual: a warp-strided walk over each row's CSR entries
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t n = n0 + r;
      if (n >= p.N) continue;
      const gemv::Span span = gemv::clamp_row(p.row_ptr[n], p.row_ptr[n + 1], p.nnz);
      for (int64_t i = span.lo + lane; i < span.hi; i += 32) {
        const int32_t col = p.col_idx[i];
        if (col < 0 || col >= p.K) continue;
        const float v = __half2float(p.values[i]);
        const T* xs_elems = reinterpret_cast<const T*>(xs);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          const float xv = x_resident ? to_float(xs_elems[tile_element(m, col, BITS, TC)])
                                      : (m < p.M ? to_float(p.x[m * p.K + col]) : 0.f);
          acc[r][m] = fmaf(v, xv, acc[r][m]);
        }
      }
    }

    // ---- reduce across the warp's lanes and write y[:, n]
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2)
          acc[r][m] += __shfl_xor_sync(0xffffffffu, acc[r][m], offset);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int64_t n = n0 + r;
        if (n >= p.N) continue;
#pragma unroll
        for (int m = 0; m < MT; ++m)
          if (m < p.M) p.y[m * p.N + n] = from_float<T>(acc[r][m]);
      }
    }
  }
}


// log2(v) where v is a power of two, else -1.
inline int whole_log2(int64_t v) {
  int s = 0;
  while ((int64_t{1} << s) < v) ++s;
  return (int64_t{1} << s) == v ? s : -1;
}


// How a launch tiles K: TC lane chunks per staged x tile, as many as the
// shared-memory budget holds (at least one: 16 rows x 128 codes x 4 bytes +
// sums < 9 KiB), a multiple of 32 when K needs several tiles so that every
// lane gets the same work.
struct KTiling {
  int budget;            // shared memory a block may use: min(opt-in limit, kSmemBudget)
  int64_t tile_chunks;   // TC
  int num_ktiles;
  size_t smem;           // dynamic shared memory of the launch
};

template <int BITS, typename T, int MT>
inline KTiling k_tiling(int64_t K, int optin_smem) {
  constexpr int kBlocks = chunk_blocks(BITS);
  const int64_t nb = (K + kCodesPerBlock - 1) / kCodesPerBlock;
  const int64_t num_chunks = (nb + kBlocks - 1) / kBlocks;
  const int64_t chunk_bytes =
      int64_t{MT} * chunk_codes(BITS) * int64_t{sizeof(T)} + int64_t{MT} * kBlocks * int64_t{sizeof(float)};
  KTiling t;
  t.budget = optin_smem < kSmemBudget ? optin_smem : kSmemBudget;
  t.tile_chunks = t.budget / chunk_bytes < num_chunks ? t.budget / chunk_bytes : num_chunks;
  if (t.tile_chunks < num_chunks && t.tile_chunks >= 32) t.tile_chunks -= t.tile_chunks % 32;
  t.num_ktiles = static_cast<int>((num_chunks + t.tile_chunks - 1) / t.tile_chunks);
  t.smem = static_cast<size_t>(t.tile_chunks * chunk_bytes);
  return t;
}

// The kernel's parameters for `pr` (device pointers) tiled as `t`.
template <int BITS, typename T, typename S>
inline Params<T, S> make_params(const GemvProblem& pr, const KTiling& t) {
  const int64_t nb = (pr.K + kCodesPerBlock - 1) / kCodesPerBlock;
  Params<T, S> p;
  p.x = static_cast<const T*>(pr.x);
  p.packed = pr.packed;
  p.scale = static_cast<const S*>(pr.scale);
  p.zero = static_cast<const S*>(pr.zero);
  p.row_ptr = pr.row_ptr;
  p.col_idx = pr.col_idx;
  p.values = static_cast<const __half*>(pr.values);
  p.y = static_cast<T*>(pr.y);
  p.M = pr.M;
  p.N = pr.N;
  p.K = pr.K;
  p.G = pr.G;
  p.blocks_per_group = pr.G == 1 ? nb : pr.group_len / kCodesPerBlock;
  p.group_shift = pr.G == 1 ? 63 : whole_log2(p.blocks_per_group);
  p.nnz = pr.nnz;
  p.tile_chunks = static_cast<int>(t.tile_chunks);
  p.num_ktiles = t.num_ktiles;
  p.vector_load = (nb * BITS) % 4 == 0 && reinterpret_cast<uintptr_t>(pr.packed) % 16 == 0;
  p.vector_x = pr.K % kPieceCodes == 0 && reinterpret_cast<uintptr_t>(pr.x) % 16 == 0;
  return p;
}

}  // namespace tacq::cuda::fused_gemv
