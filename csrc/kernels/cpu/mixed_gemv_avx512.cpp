// tacq.mixed_gemv CPU kernel, AVX-512 (layout and algebra in mixed_gemv.h).
//
// Mapping: one output row n at a time (the caller splits rows across threads),
// activation rows in chunks of kM <= 4 so 2*kM accumulators stay in registers.
// A 32-code block (`bits` words) is decoded as two 16-lane halves without an
// integer->float conversion: each lane rotates its word so that its code sits
// at mantissa bits [23-bits, 23), and one vpternlogd masks it and ORs in the
// exponent of 1.0f, giving the float 1 + code/2^bits exactly. With
// acc = sum (1 + code/2^bits) x over a group,
//   sum code*x = 2^bits * (acc - xsum),
// so a group contributes 2^bits*scale*acc - scale*(2^bits + zero)*xsum. Lanes
// get their word by a broadcast load (2-bit: one word per half) or vpermd
// (3/4-bit); 3-bit codes that straddle two words OR in the next word shifted
// left (masking the bits the rotation wrapped in). The row's CSR residual entries are added after its dense part, in the
// same pass over the rows.
// GCC 12 warns falsely about its own AVX-512 intrinsic headers (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "mixed_gemv.h"

namespace tacq::cpu::avx512 {
namespace {

// Software prefetch distance in packed words (2 KiB): the hardware prefetcher
// stops at 4 KiB page boundaries, which a DRAM-streamed row crosses often.
constexpr int64_t kPrefetchWords = 512;

constexpr int32_t kOneBits = 0x3F800000;  // 1.0f

// Per-lane word index, rotation and straddle shift of the two 16-code halves
// of a 32-code block.
template <int kBits>
struct LaneTables {
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

// 16 floats 1 + code/2^bits for codes [16h, 16h+16) of the block at `w`.
template <int kBits>
inline __m512 decode_half(const uint32_t* w, __m512i words, const LaneTables<kBits>& t, int h) {
  const __m512i mask = _mm512_set1_epi32(((1 << kBits) - 1) << LaneTables<kBits>::kCodeBit);
  const __m512i one = _mm512_set1_epi32(kOneBits);
  __m512i v;
  if constexpr (kBits == 2) {
    v = _mm512_rorv_epi32(_mm512_set1_epi32(static_cast<int32_t>(w[h])), t.rotate[h]);
  } else {
    v = _mm512_rorv_epi32(_mm512_permutexvar_epi32(t.word_lo[h], words), t.rotate[h]);
  }
  if constexpr (kBits == 3) {
    const __m512i hi = _mm512_sllv_epi32(_mm512_permutexvar_epi32(t.word_hi[h], words), t.shift_hi[h]);
    v = _mm512_ternarylogic_epi32(v, hi, t.lo_mask[h], 0xEC);  // (v & lo_mask) | hi
  }
  return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(v, mask, one, 0xEA));  // (v & mask) | one
}

// y[m0 .. m0+kM) of output row n: dense part + residual.
template <int kBits, int kM>
void row_chunk(const GemvProblem& p, const LaneTables<kBits>& t, int64_t n, int64_t m0) {
  const int64_t blocks = p.Kp / 32, G = p.K / p.group_len;
  const int64_t blocks_per_group = p.group_len == p.K ? blocks : p.group_len / 32;
  const uint32_t* row = p.packed + n * blocks * kBits;
  const float* x[kM];
  for (int j = 0; j < kM; ++j) x[j] = p.x + (m0 + j) * p.Kp;
  const __mmask16 word_mask = static_cast<__mmask16>((1u << kBits) - 1u);

  __m512 y[kM];
  float zero_term[kM];
  for (int j = 0; j < kM; ++j) y[j] = _mm512_setzero_ps(), zero_term[j] = 0.f;
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
      const __m512i words = kBits == 2 ? _mm512_setzero_si512() : _mm512_maskz_loadu_epi32(word_mask, w);
      const __m512 q0 = decode_half<kBits>(w, words, t, 0), q1 = decode_half<kBits>(w, words, t, 1);
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
    constexpr float kStep = 1 << kBits;  // 2^bits
    const float s = p.scale[n * G + g], z = p.zero[n * G + g];
    for (int j = 0; j < kM; ++j) {
      y[j] = _mm512_fmadd_ps(_mm512_set1_ps(kStep * s), acc[j][0], y[j]);
      zero_term[j] += s * (kStep + z) * p.xsum[(m0 + j) * G + g];
    }
  }
  float out[kM];
  for (int j = 0; j < kM; ++j) out[j] = _mm512_reduce_add_ps(y[j]) - zero_term[j];
  for (int32_t i = p.row_ptr[n]; i < p.row_ptr[n + 1]; ++i) {
    const float v = _cvtsh_ss(p.values[i]);
    const int64_t col = p.col_idx[i];
    for (int j = 0; j < kM; ++j) out[j] += v * x[j][col];
  }
  for (int j = 0; j < kM; ++j) p.y[(m0 + j) * p.N + n] = out[j];
}

template <int kBits>
void rows_bits(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  const LaneTables<kBits> t;
  for (int64_t n = row_begin; n < row_end; ++n) {
    int64_t m0 = 0;
    for (; m0 + 4 <= p.M; m0 += 4) row_chunk<kBits, 4>(p, t, n, m0);
    switch (p.M - m0) {
      case 3: row_chunk<kBits, 3>(p, t, n, m0); break;
      case 2: row_chunk<kBits, 2>(p, t, n, m0); break;
      case 1: row_chunk<kBits, 1>(p, t, n, m0); break;
      default: break;  // M was a multiple of 4
    }
  }
}

}  // namespace

void mixed_gemv_rows(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  switch (p.bits) {
    case 2: return rows_bits<2>(p, row_begin, row_end);
    case 3: return rows_bits<3>(p, row_begin, row_end);
    case 4: return rows_bits<4>(p, row_begin, row_end);
  }
  // bits is validated by the caller (tacq::check_bits).
}

}  // namespace tacq::cpu::avx512
