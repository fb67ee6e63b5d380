// Index math of the CUDA mixed_gemv kernel (csrc/kernels/cuda/mixed_gemv_kernel.cuh),
// kept here as host/device constexpr functions so it can be checked at compile
// time (static_asserts at the end of this file) and read without the kernel.
//
// Lane chunks. A lane of the kernel owns whole 32-code blocks of a packed row
// (tacq/packing.h), as many as make a whole number of 16-byte loads:
//
//   bits  blocks/chunk  words/chunk  codes/chunk  loads
//    2         2             4            64      1 x uint4
//    3         4            12           128      3 x uint4
//    4         1             4            32      1 x uint4
//
// Swizzled x tile. The block stages columns [c0*C, (c0+TC)*C) of x (C codes per
// chunk, TC chunks per tile) in shared memory, cut into 8-element pieces; piece
// p of chunk lc of x row m sits at slot ((m*P + p)*TC + lc), P = C/8. At a given
// step every lane reads piece p of its own chunk lc = lane + 32i, so the 32
// lanes read 32 consecutive 16-byte slots: no bank conflicts, although each
// lane's columns are C elements apart in x.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TACQ_HDC __host__ __device__ constexpr
#else
#define TACQ_HDC constexpr
#endif

namespace tacq::gemv {

constexpr int kPieceCodes = 8;  // x elements per 16-byte fp16/bf16 piece

TACQ_HDC int chunk_blocks(int bits) { return bits == 3 ? 4 : (bits == 2 ? 2 : 1); }
TACQ_HDC int chunk_words(int bits) { return chunk_blocks(bits) * bits; }
TACQ_HDC int chunk_codes(int bits) { return chunk_blocks(bits) * 32; }
TACQ_HDC int chunk_pieces(int bits) { return chunk_codes(bits) / kPieceCodes; }

// Slot (in 8-element pieces) of piece p of local chunk lc, x row m.
TACQ_HDC int piece_slot(int m, int p, int lc, int bits, int tile_chunks) {
  return (m * chunk_pieces(bits) + p) * tile_chunks + lc;
}

// Element index in the staged tile of x[m, col], col relative to the tile start.
TACQ_HDC int tile_element(int m, int col, int bits, int tile_chunks) {
  const int lc = col / chunk_codes(bits);
  const int in_chunk = col % chunk_codes(bits);
  return piece_slot(m, in_chunk / kPieceCodes, lc, bits, tile_chunks) * kPieceCodes +
         in_chunk % kPieceCodes;
}

// Index of the fp32 sum of x[m] over block j of local chunk lc.
TACQ_HDC int block_sum_slot(int m, int j, int lc, int bits, int tile_chunks) {
  return (m * chunk_blocks(bits) + j) * tile_chunks + lc;
}

// [lo, hi) of a CSR row clamped into [0, nnz] with lo <= hi, so that garbage
// row pointers can never send a read out of bounds.
struct Span {
  int64_t lo, hi;
};
TACQ_HDC Span clamp_row(int64_t begin, int64_t end, int64_t nnz) {
  const int64_t lo = begin < 0 ? 0 : (begin > nnz ? nnz : begin);
  const int64_t hi = end < lo ? lo : (end > nnz ? nnz : end);
  return Span{lo, hi};
}

// ---- compile-time checks ---------------------------------------------------

// tile_element is a bijection of [0, rows) x [0, tile_chunks*C) onto
// [0, rows*tile_chunks*C): every staged element has exactly one home.
constexpr bool tile_layout_is_permutation(int bits, int rows, int tile_chunks) {
  const int n = rows * tile_chunks * chunk_codes(bits);
  constexpr int kMax = 4 * 3 * 128;
  bool seen[kMax] = {};
  if (n > kMax) return false;
  for (int m = 0; m < rows; ++m) {
    for (int col = 0; col < tile_chunks * chunk_codes(bits); ++col) {
      const int e = tile_element(m, col, bits, tile_chunks);
      if (e < 0 || e >= n || seen[e]) return false;
      seen[e] = true;
    }
  }
  return true;
}
static_assert(tile_layout_is_permutation(2, 3, 5) && tile_layout_is_permutation(3, 2, 3) &&
                  tile_layout_is_permutation(4, 4, 7),
              "swizzled x tile layout must be a permutation");
static_assert(chunk_words(2) % 4 == 0 && chunk_words(3) % 4 == 0 && chunk_words(4) % 4 == 0,
              "a lane chunk must be whole 16-byte loads");
static_assert(clamp_row(-5, 3, 10).lo == 0 && clamp_row(7, 2, 10).hi == 7 &&
                  clamp_row(4, 99, 10).hi == 10 && clamp_row(12, 20, 10).lo == 10,
              "CSR row clamping");

}  // namespace tacq::gemv
