// tacq.mixed_gemv CPU kernel, AVX2 + FMA + F16C (layout and algebra in
// mixed_gemv.h), for bits 2, 3 and 4.
//
// Data layout: x is read in its natural order (GemvProblem::x, fp32 [M, Kp],
// zero past K). A packed row is read 8 codes ("a piece") at a time
// (PieceDecoder, piece_decoder_avx2.h): one load, two integer instructions
// and a conversion per 8 weights, for any bits.
//
// Mapping: one output row at a time (the caller splits rows across threads);
// activation rows in tiles of up to 4, each decoded piece shared by the tile.
// Per group, each activation row accumulates sum code*x in 8 fp32 lanes (over
// 4 / tile-rows independent chains, so the FMA latency is hidden at batch 1),
// then adds scale * that to the row's vector sum; scale * zero * xsum is
// subtracted once per group in scalar. The row's CSR residual follows its
// dense part.
#include <immintrin.h>

#include <cstring>

#include "mixed_gemv.h"

namespace tacq::cpu::avx2 {
namespace {

#include "mixed_gemv_avx2_common.h"
#include "piece_decoder_avx2.h"

constexpr int kTileRows = 4;

// dot[m] += the dense part of y[m0 + m, n] for m < kM.
template <int kBits, int kM>
void dense_row_tile(const GemvProblem& p, int64_t n, int64_t m0, float* dot) {
  constexpr int kChains = kM == 1 ? 4 : kM == 2 ? 2 : 1;  // independent accumulators per activation row
  const PieceDecoder<kBits> decoder;
  const int64_t blocks = p.Kp / 32, G = p.K / p.group_len;
  const int64_t blocks_per_group = p.group_len == p.K ? blocks : p.group_len / 32;
  const auto* row = reinterpret_cast<const uint8_t*>(p.packed + n * blocks * kBits);
  const float* x[kM];
  for (int m = 0; m < kM; ++m) x[m] = p.x + (m0 + m) * p.Kp;
  __m256 sum[kM];
  float zero_term[kM];
  for (int m = 0; m < kM; ++m) sum[m] = _mm256_setzero_ps(), zero_term[m] = 0.f;

  for (int64_t g = 0; g < G; ++g) {
    __m256 acc[kM][kChains];
    for (int m = 0; m < kM; ++m)
      for (int c = 0; c < kChains; ++c) acc[m][c] = _mm256_setzero_ps();
    const int64_t blk_end = g + 1 == G ? blocks : (g + 1) * blocks_per_group;
    for (int64_t blk = g * blocks_per_group; blk < blk_end; ++blk) {
      const uint8_t* block = row + blk * 4 * kBits;
      if (blk % (16 / kBits) == 0) _mm_prefetch(reinterpret_cast<const char*>(block + kPrefetchBytes), _MM_HINT_T0);
      const __m256 q[4] = {decoder.template decode<0>(block), decoder.template decode<1>(block),
                           decoder.template decode<2>(block), decoder.template decode<3>(block)};
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j)
        for (int m = 0; m < kM; ++m)
          acc[m][j % kChains] = _mm256_fmadd_ps(q[j], _mm256_load_ps(x[m] + blk * 32 + 8 * j), acc[m][j % kChains]);
    }
    const float s = p.scale[n * G + g], z = p.zero[n * G + g];
    for (int m = 0; m < kM; ++m) {
      __m256 group = acc[m][0];
      for (int c = 1; c < kChains; ++c) group = _mm256_add_ps(group, acc[m][c]);
      sum[m] = _mm256_fmadd_ps(_mm256_set1_ps(s), group, sum[m]);
      zero_term[m] += s * z * p.xsum[(m0 + m) * G + g];
    }
  }
  for (int m = 0; m < kM; ++m) dot[m] += horizontal_sum(sum[m]) - zero_term[m];
}

template <int kBits>
bool rows_bits(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  bool residual_ok = true;
  for (int64_t n = row_begin; n < row_end; ++n) {
    float dot[kGemvMaxRows] = {0.f};
    for (int64_t m0 = 0; m0 < p.M; m0 += kTileRows) {
      switch (p.M - m0 < kTileRows ? p.M - m0 : kTileRows) {
        case 1: dense_row_tile<kBits, 1>(p, n, m0, dot + m0); break;
        case 2: dense_row_tile<kBits, 2>(p, n, m0, dot + m0); break;
        case 3: dense_row_tile<kBits, 3>(p, n, m0, dot + m0); break;
        default: dense_row_tile<kBits, 4>(p, n, m0, dot + m0); break;
      }
    }
    residual_ok &= add_residual_row_avx2(p, n, dot);
    for (int64_t m = 0; m < p.M; ++m) p.y[m * p.N + n] = dot[m];
  }
  return residual_ok;
}

}  // namespace

bool mixed_gemv_rows(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  return dispatch_bits(p.bits, [&](auto bits) { return rows_bits<bits()>(p, row_begin, row_end); });
}

}  // namespace tacq::cpu::avx2
