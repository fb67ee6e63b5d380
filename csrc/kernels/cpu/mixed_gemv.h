// Torch-free CPU kernel of tacq.mixed_gemv:
//   y[M,N] = x[M,K] (dequant(packed) + R)^T,   R a CSR fp16 residual,
// computed per output row n and activation row m as
//   y[m,n] = sum_g scale[n,g] * (sum_{k in g} code[n,k] x[m,k] - zero[n,g] * xsum[m,g])
//            + sum_{i in row n of R} values[i] * x[m, col_idx[i]]
// so the inner loop only unpacks codes and multiply-adds; the residual of a row
// is applied right after its dense part, in the same pass over the rows.
// One variant per ISA (mixed_gemv_{generic,avx2,avx512,avx512bf16}.cpp), chosen
// by the caller; the AVX-512 ones read x in lane order (mixed_gemv_lanes.h).
// With int8 activations (Int8Order below) x is first rounded per 32-value
// block; the int8 kernels (mixed_gemv_int8_kernel.h, AVX2 and AVX-512 VNNI)
// multiply the int8 values, the generic kernel reads the rounded values as fp32.
#pragma once

#include <cstdint>
#include <type_traits>

#include "tacq/limits.h"

namespace tacq::cpu {

constexpr int64_t kGemvMaxRows = kMixedGemvMaxRows;

struct GemvProblem {
  const uint32_t* packed;   // [N, Kp/32*bits], tacq/packing.h layout
  const float* scale;       // [N, G]
  const float* zero;        // [N, G]
  const uint16_t* scale_f16;  // [N, G] fp16 bit patterns, or nullptr; when set, a lane
  const uint16_t* zero_f16;   // or int8 kernel (GemvKernel::lane_bits != 0 or int8_lanes)
                              // reads these instead of scale and zero, widening each where used
  const float* x;           // [M, Kp] fp32, zero-padded past K, 64-byte aligned rows
  const float* xsum;        // [M, G] sum of x over each group
  const float* lane_xsum;   // [M, G] lane kernels: sum over each group of x as staged,
                            // x_k * 2^x_exponent(k % 8) if in_place_codes, else xsum
  const void* x_lanes;      // [M, Kc] x in the lane order of a lane kernel (LaneOrder
                            // below, fp32 or bf16; Int8Order, int8), or nullptr; only
                            // lane kernels read it
  const float* lane_scales; // [M, Kc/chunk_codes*8] the int8 kernel's block scales per
                            // accumulator lane (Int8Order), else nullptr
  const int32_t* row_ptr;   // [N+1], checked: 0 = row_ptr[0] <= ... <= row_ptr[N] = nnz
  const int32_t* col_idx;   // [nnz], NOT checked: kernels skip rows whose columns are
                            // out of [0, K) or not strictly increasing, and report it
  const uint16_t* values;   // [nnz] fp16 bit patterns
  int64_t M, N, K, Kp, Kc;  // Kp = ceil(K/32)*32; Kc = row length of x_lanes
  int64_t group_len;        // K for whole rows, else a multiple of 32
  int bits;
  float* y;                 // [M, N] fp32 out, row stride N
  bool in_place_codes = false;  // lane kernels: x_lanes and lane_xsum staged for InPlaceCodes
};

// p from output row `first` on: row n of the result is row first + n of p,
// and `scale`, `zero` hold the scale and zero of those rows (row stride G).
// y keeps its row stride N, so only N is not renumbered.
inline GemvProblem rows_from(const GemvProblem& p, int64_t first, const float* scale, const float* zero) {
  GemvProblem block = p;
  block.packed += first * (p.Kp / 32 * p.bits);
  block.scale = scale;
  block.zero = zero;
  block.row_ptr += first;
  block.y += first;
  return block;
}

// Lane order. A lane kernel loads a chunk of a packed row (64 bytes; 192 bytes
// for 3 bits) into vectors of `lane_bits`-bit lanes so that lane L holds the
// cpl consecutive codes [L*cpl, (L+1)*cpl) of the chunk: for 2 and 4 bits one
// vector, cpl = lane_bits/bits (codes never straddle a lane); for 3 bits three
// vectors ("units") deinterleaved so that lane L of unit j is lane-sized piece
// 3L + j of the chunk, cpl = 3*lane_bits/3 = lane_bits. Step i of the chunk
// shifts code i of every lane into place at once, so x is staged with
// x[chunk start + L*cpl + i] at position chunk start + i*lanes + L (times
// 2^x_exponent(i) where codes are read in place, InPlaceCodes below).
struct LaneOrder {
  int bits, lane_bits;
  constexpr int units() const { return bits == 3 ? 3 : 1; }
  constexpr int lanes() const { return 512 / lane_bits; }
  constexpr int codes_per_lane() const { return units() * lane_bits / bits; }
  constexpr int chunk_codes() const { return lanes() * codes_per_lane(); }
  constexpr int64_t staged_length(int64_t Kp) const {
    return (Kp + chunk_codes() - 1) / chunk_codes() * chunk_codes();
  }
};

// Codes read in place. A lane kernel's step i in general shifts code i to
// the top of the mantissa, masks it and sets the exponent of 1.0: weight
// 1 + code/2^bits, 2 integer instructions. With one activation row, 2-bit
// codes in bf16 lanes (7 mantissa bits, 8 codes a lane) are read where they
// lie instead, three per copy of the lane: shifted left by 1, the lane holds
// codes 0, 1, 2 at mantissa bits 1, 3, 5; shifted right by 5, codes 3, 4, 5
// at bits 1, 3, 5; shifted right by 9, codes 6, 7 at bits 3, 5 (code_bit).
// Each copy gets the exponent of 1.0 once, and each step is one AND: code i
// at bit b weighs 1 + code*2^(b-7), so x is staged times 2^(5-b) (exact in
// bf16), the code term is code*x/4 as in general, and the "1" term sums
// x*2^(5-b) (lane_xsum, GemvProblem). Fewer instructions, more fp32 rounding
// (the "1" term is up to 16x larger, and cancels); the host stages x this
// way only where |x| <= 2^100, far from overflow. With more rows the copies
// spill registers (measured on Zen 4, 1 thread, 2048 x 4096 at 2 bits: one
// row, whole-row groups 58 -> 65 G weights/s; 3 rows, groups of 64 23.5 ->
// 21.3).
struct InPlaceCodes {
  static constexpr bool applies(int bits, int lane_bits, int64_t rows) {
    return bits == 2 && lane_bits == 16 && rows == 1;
  }
  static constexpr int code_bit(int step) { return step < 6 ? 1 + 2 * (step % 3) : 3 + 2 * (step - 6); }
  static constexpr int x_exponent(int step) { return 5 - code_bit(step); }
};

// Int8 activations. Each block of 32 values of an activation row, k in
// [32b, 32b + 32) (the blocks of the packed codes), is rounded to
//   q = round_half_even(x * (127 / amax)) in [-127, 127],  d = amax / 127,
// amax = max |x| over the block (an all-zero block: q = 0, d = 0; a block with
// amax < 2^-64 has x and amax multiplied by 2^64 in q's formula, which keeps
// 127 / amax finite), and the op computes the exact formula above with
// x = q * d (round_int8_blocks).
// The int8 kernels read a packed row one chunk at a time: 32 bytes for 2
// and 4 bits, 96 bytes for 3 bits, as vectors of 32 byte lanes; byte lane L
// holds codes [L*cpl, (L+1)*cpl) of the chunk (cpl = 8/bits codes per byte,
// or 8 per 3 bytes for 3 bits: unit j of a 3-bit chunk holds bytes 3L + j).
// Step s of a chunk takes code s of every lane, so q is staged with
// q[chunk start + L*cpl + s] at position chunk start + 32*s + L.
// Byte lanes 4r .. 4r+3 sum into 32-bit accumulator lane r (vpmaddubsw, then
// vpmaddwd; or vpdpbusd), which covers codes [4r*cpl, 4(r+1)*cpl) of the chunk: one block,
// whose d is staged per chunk and lane in lane_scales.
struct Int8Order {
  int bits;
  constexpr int codes_per_lane() const { return bits == 3 ? 8 : 8 / bits; }
  constexpr int chunk_codes() const { return 32 * codes_per_lane(); }
  constexpr int64_t staged_length(int64_t Kp) const {
    return (Kp + chunk_codes() - 1) / chunk_codes() * chunk_codes();
  }
};

// One activation row xs [Kp] fp32 (zero past K) rounded in place to q * d,
// with q [Kp] and d [Kp/32] written out. Returns false, changing nothing, if
// xs holds NaN or infinity. Portable (activation_int8.cpp).
bool round_int8_blocks(float* xs, int64_t Kp, int8_t* q, float* d);
// q [Kp], d [Kp/32] -> lanes [Kc] in Int8Order{bits} (zero past Kp) and
// lane_scales [Kc/chunk_codes*8]. Portable (activation_int8.cpp).
void stage_int8_lanes(const int8_t* q, const float* d, int64_t Kp, int bits, int64_t Kc, int8_t* lanes,
                      float* lane_scales);

// Output rows [row_begin, row_end). Returns false if some row's residual was
// skipped because its columns are invalid (see col_idx above).
using GemvRowsFn = bool (*)(const GemvProblem& p, int64_t row_begin, int64_t row_end);

// One activation row in lane order: xs [Kp] fp32 (zero past K) -> lanes [Kc]
// (LaneOrder{bits, lane_bits}, fp32 or bf16 bit patterns), zero past Kp;
// scaled for InPlaceCodes if in_place.
using StageLanesFn = void (*)(const float* xs, int64_t Kp, int bits, int64_t Kc, bool in_place, void* lanes);

// A kernel and the x it reads: lane_bits 0 = natural fp32 x only (stage_lanes
// is then null); int8_lanes = Int8Order lanes and lane scales
// (stage_int8_lanes; lane_bits 0, stage_lanes null).
struct GemvKernel {
  GemvRowsFn rows;
  int lane_bits;
  StageLanesFn stage_lanes;
  bool int8_lanes = false;
};
namespace generic { bool mixed_gemv_rows(const GemvProblem&, int64_t, int64_t); }
namespace avx2 {
bool mixed_gemv_rows(const GemvProblem&, int64_t, int64_t);
// int8 activations (Int8Order): x_lanes int8 + lane_scales.
bool mixed_gemv_int8_rows(const GemvProblem&, int64_t, int64_t);
}
// The same int8 kernel with vpdpbusd; needs AVX-512 VNNI (and VL).
namespace avx512vnni { bool mixed_gemv_int8_rows(const GemvProblem&, int64_t, int64_t); }
// fp32 lanes (vfmadd231ps).
namespace avx512 {
bool mixed_gemv_rows(const GemvProblem&, int64_t, int64_t);
void stage_lanes(const float* xs, int64_t Kp, int bits, int64_t Kc, bool in_place, void* lanes);
constexpr int kLaneBits = 32;
}
// bf16 lanes (vdpbf16ps); needs AVX-512 BF16. Staged x must be bf16-exact.
namespace avx512bf16 {
bool mixed_gemv_rows(const GemvProblem&, int64_t, int64_t);
void stage_lanes(const float* xs, int64_t Kp, int bits, int64_t Kc, bool in_place, void* lanes);
constexpr int kLaneBits = 16;
}

// f(std::integral_constant<int, bits>{}) for bits 2, 3 or 4, which the caller
// has validated (tacq::check_bits): the per-bits dispatch of the row kernels.
template <typename F>
inline bool dispatch_bits(int bits, F&& f) {
  switch (bits) {
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
  }
  return true;
}

// Adds row n's residual, sum_i values[i] * x[m0 + j, col_idx[i]], to out[j]
// for j < rows. Returns false, adding nothing, if a column is outside [0, K)
// or the row's columns are not strictly increasing.
template <typename HalfToFloat>
inline bool add_residual_row(const GemvProblem& p, int64_t n, int64_t m0, int64_t rows, float* out,
                             HalfToFloat half_to_float) {
  const int32_t begin = p.row_ptr[n], end = p.row_ptr[n + 1];
  int32_t previous = -1;
  for (int32_t i = begin; i < end; ++i) {
    if (p.col_idx[i] <= previous || p.col_idx[i] >= p.K) return false;
    previous = p.col_idx[i];
  }
  for (int32_t i = begin; i < end; ++i) {
    const float v = half_to_float(p.values[i]);
    for (int64_t j = 0; j < rows; ++j) out[j] += v * p.x[(m0 + j) * p.Kp + p.col_idx[i]];
  }
  return true;
}

}  // namespace tacq::cpu
