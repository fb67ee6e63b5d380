// tacq.mixed_gemv CPU kernel, AVX-512 (layout and algebra in mixed_gemv.h).
//
// Bits 2 and 4: the lane kernel of mixed_gemv_lanes.h with fp32 lanes (x staged
// as fp32 in lane order, one vfmadd231ps per 16 weights).
//
// Bits 3 (codes straddle words, so no lane order exists): one output row n at
// a time, activation rows in chunks of kM <= 4 so 2*kM accumulators stay in
// registers, natural-order x. A 32-code block (3 words) is decoded as two
// 16-lane halves without an integer->float conversion: each lane fetches its
// word with vpermd and rotates it so that its code sits at mantissa bits
// [20, 23); codes that straddle two words OR in the next word shifted left
// (masking the bits the rotation wrapped in); one vpternlogd masks the code
// and ORs in the exponent of 1.0f, giving 1 + code/8 exactly. The zero-point
// algebra and the residual are those of the lane kernel.
// GCC 12 warns falsely about its own AVX-512 intrinsic headers (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <utility>
#include <vector>

#include "mixed_gemv.h"

namespace tacq::cpu::avx512 {
namespace {

struct Lanes {
  using Elem = float;
  static constexpr int kLaneBits = avx512::kLaneBits;
  static constexpr int kMantissaBits = 23;
  static constexpr int32_t kOneBits = 0x3F800000;  // 1.0f
  template <int kShift>
  static __m512i shift(__m512i v) {
    if constexpr (kShift >= 0) return _mm512_slli_epi32(v, kShift);
    else return _mm512_srli_epi32(v, -kShift);
  }
  static __m512 madd(__m512 acc, __m512i q, __m512i xv) {
    return _mm512_fmadd_ps(_mm512_castsi512_ps(q), _mm512_castsi512_ps(xv), acc);
  }
};

#include "mixed_gemv_lanes.h"

// Software prefetch distance in packed words (2 KiB): the hardware prefetcher
// stops at 4 KiB page boundaries, which a DRAM-streamed row crosses often.
constexpr int64_t kPrefetchWords = 512;

// Per-lane word index, rotation and straddle shift of the two 16-code halves
// of a 32-code block.
struct LaneTables {
  static constexpr int kBits = 3;
  static constexpr int kCodeBit = 23 - kBits;  // where a code lands in the mantissa
  __m512i word_lo[2], rotate[2], word_hi[2], shift_hi[2], lo_mask[2];
  LaneTables() {
    for (int h = 0; h < 2; ++h) {
      alignas(64) int32_t wl[16], rot[16], wh[16], sh[16], lm[16];
      for (int i = 0; i < 16; ++i) {
        const int bit = (16 * h + i) * kBits, offset = bit & 31;
        wl[i] = bit >> 5;
        rot[i] = (offset - kCodeBit + 32) & 31;  // rotate right: code bit 0 -> kCodeBit
        const bool straddles = offset + kBits > 32;
        wh[i] = straddles ? wl[i] + 1 : wl[i];
        // the next word's low bits continue the code at kCodeBit + (32 - offset);
        // a shift of 32 yields 0 for lanes that do not straddle
        sh[i] = straddles ? kCodeBit + 32 - offset : 32;
        // the rotation wraps the word's low bits (other codes) in right above
        // the bits this word holds of a straddling code: keep only the latter
        const int lo_bits = straddles ? 32 - offset : kBits;
        lm[i] = static_cast<int32_t>(((1u << lo_bits) - 1u) << kCodeBit);
      }
      word_lo[h] = _mm512_load_si512(wl);
      rotate[h] = _mm512_load_si512(rot);
      word_hi[h] = _mm512_load_si512(wh);
      shift_hi[h] = _mm512_load_si512(sh);
      lo_mask[h] = _mm512_load_si512(lm);
    }
  }
};

// 16 floats 1 + code/8 for codes [16h, 16h+16) of the block whose words are `words`.
inline __m512 decode_half(__m512i words, const LaneTables& t, int h) {
  const __m512i mask = _mm512_set1_epi32(7 << LaneTables::kCodeBit);
  __m512i v = _mm512_rorv_epi32(_mm512_permutexvar_epi32(t.word_lo[h], words), t.rotate[h]);
  const __m512i hi = _mm512_sllv_epi32(_mm512_permutexvar_epi32(t.word_hi[h], words), t.shift_hi[h]);
  v = _mm512_ternarylogic_epi32(v, hi, t.lo_mask[h], 0xEC);  // (v & lo_mask) | hi
  return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(v, mask, _mm512_set1_epi32(Lanes::kOneBits), 0xEA));
}

// y[m0 .. m0+kM) of output row n, 3-bit: dense part + residual.
template <int kM>
bool row_chunk_3bit(const GemvProblem& p, const LaneTables& t, int64_t n, int64_t m0) {
  constexpr int kBits = 3;
  const int64_t blocks = p.Kp / 32, G = p.K / p.group_len;
  const int64_t blocks_per_group = p.group_len == p.K ? blocks : p.group_len / 32;
  const uint32_t* row = p.packed + n * blocks * kBits;
  const float* x[kM];
  for (int j = 0; j < kM; ++j) x[j] = p.x + (m0 + j) * p.Kp;
  const __mmask16 word_mask = static_cast<__mmask16>((1u << kBits) - 1u);

  __m512 y[kM];
  for (int j = 0; j < kM; ++j) y[j] = _mm512_setzero_ps();
  // Independent FMA chains hide the FMA latency: two per activation row (one
  // per half block), four when there is a single activation row.
  constexpr int kUnroll = kM == 1 ? 2 : 1;  // blocks per step
  for (int64_t g = 0; g < G; ++g) {
    __m512 acc[kM][2 * kUnroll];
    for (int j = 0; j < kM; ++j)
      for (int c = 0; c < 2 * kUnroll; ++c) acc[j][c] = _mm512_setzero_ps();
    auto block = [&](int64_t blk, int chain) {
      _mm_prefetch(reinterpret_cast<const char*>(row + blk * kBits + kPrefetchWords), _MM_HINT_T0);
      const uint32_t* w = row + blk * kBits;
      const __m512i words = _mm512_maskz_loadu_epi32(word_mask, w);
      const __m512 q0 = decode_half(words, t, 0), q1 = decode_half(words, t, 1);
      for (int j = 0; j < kM; ++j) {
        acc[j][chain] = _mm512_fmadd_ps(q0, _mm512_load_ps(x[j] + blk * 32), acc[j][chain]);
        acc[j][chain + 1] = _mm512_fmadd_ps(q1, _mm512_load_ps(x[j] + blk * 32 + 16), acc[j][chain + 1]);
      }
    };
    const int64_t blk_end = g + 1 == G ? blocks : (g + 1) * blocks_per_group;
    int64_t blk = g * blocks_per_group;
    for (; blk + kUnroll <= blk_end; blk += kUnroll)
      for (int u = 0; u < kUnroll; ++u) block(blk + u, 2 * u);
    for (; blk < blk_end; ++blk) block(blk, 0);
    for (int j = 0; j < kM; ++j)
      for (int c = 1; c < 2 * kUnroll; ++c) acc[j][0] = _mm512_add_ps(acc[j][0], acc[j][c]);
    const __m512 group_scale = _mm512_set1_ps(8.f * p.scale[n * G + g]);  // 2^bits * scale
    for (int j = 0; j < kM; ++j) y[j] = _mm512_fmadd_ps(group_scale, acc[j][0], y[j]);
  }
  float out[kM];
  for (int j = 0; j < kM; ++j)
    out[j] = _mm512_reduce_add_ps(y[j]) -
             zero_point_term(p.scale + n * G, p.zero + n * G, p.xsum + (m0 + j) * G, G, 8.f);
  const bool residual_ok = add_residual_row_avx512<kM>(p, n, m0, out);
  for (int j = 0; j < kM; ++j) p.y[(m0 + j) * p.N + n] = out[j];
  return residual_ok;
}

bool rows_3bit(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  const LaneTables t;
  bool ok = true;
  for (int64_t n = row_begin; n < row_end; ++n) {
    int64_t m0 = 0;
    for (; m0 + 4 <= p.M; m0 += 4) ok &= row_chunk_3bit<4>(p, t, n, m0);
    switch (p.M - m0) {
      case 3: ok &= row_chunk_3bit<3>(p, t, n, m0); break;
      case 2: ok &= row_chunk_3bit<2>(p, t, n, m0); break;
      case 1: ok &= row_chunk_3bit<1>(p, t, n, m0); break;
      default: break;  // M was a multiple of 4
    }
  }
  return ok;
}

}  // namespace

bool mixed_gemv_rows(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  switch (p.bits) {
    case 2: return lane_rows_bits<2>(p, row_begin, row_end);
    case 3: return rows_3bit(p, row_begin, row_end);
    case 4: return lane_rows_bits<4>(p, row_begin, row_end);
  }
  return true;  // bits is validated by the caller (tacq::check_bits)
}

}  // namespace tacq::cpu::avx512
