// tacq.mixed_gemv CPU kernel for bf16 activations, AVX-512 with the BF16 and
// VBMI extensions (Sapphire Rapids, Zen 4); bits 2 and 4. Layout and algebra
// in mixed_gemv.h.
//
// Mapping: one output row at a time, activation rows in chunks of kM <= 4.
// A 32-code block is decoded straight into 32 bf16 lanes: the block's bits
// are broadcast (2-bit: one qword; 4-bit: one 128-bit half per alternate
// qword), one vpmultishiftqb moves each lane's code to bits [7-bits, 7) of the
// lane's low byte, and one vpternlogd masks it and ORs in the bits of bf16
// 1.0, giving 1 + code/2^bits exactly. vdpbf16ps then multiplies 32 lanes
// with 32 bf16 activations (staged in the same lane order, see
// bf16_lane_code) into 16 fp32 sums: 3 vector instructions per 32 weights.
// Products are exact in fp32, so with bf16 inputs this matches the fp32
// kernel's arithmetic. Group and zero-point algebra and the CSR residual are
// as in mixed_gemv_avx512.cpp.
// GCC 12 warns falsely about its own AVX-512 intrinsic headers (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "mixed_gemv.h"

namespace tacq::cpu::avx512bf16 {
namespace {

// Software prefetch distance in packed words (2 KiB): the hardware prefetcher
// stops at 4 KiB page boundaries, which a DRAM-streamed row crosses often.
constexpr int64_t kPrefetchWords = 512;

constexpr int kBf16One = 0x3F80;

// vpmultishiftqb control: the low byte of lane l takes the 8 bits (rotating
// within the qword) that start (7 - bits) below its code, so the code lands at
// bits [7-bits, 7) of the byte; the lane's high byte is masked off later.
template <int kBits>
__m512i multishift_control() {
  alignas(64) uint8_t ctrl[64];
  for (int lane = 0; lane < 32; ++lane) {
    const int code = bf16_lane_code(kBits, lane);
    const int offset_in_qword = (code * kBits) & 63;
    ctrl[2 * lane] = static_cast<uint8_t>((offset_in_qword - (7 - kBits) + 64) & 63);
    ctrl[2 * lane + 1] = 0;
  }
  return _mm512_load_si512(ctrl);
}

template <int kBits>
inline __m512bh decode_block(const uint32_t* w, __m512i control) {
  const __m512i mask = _mm512_set1_epi32((((1 << kBits) - 1) << (7 - kBits)) * 0x10001);
  const __m512i one = _mm512_set1_epi32(kBf16One * 0x10001);
  __m512i words;
  if constexpr (kBits == 2) {
    words = _mm512_set1_epi64(*reinterpret_cast<const long long*>(w));
  } else {
    words = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
  }
  const __m512i v = _mm512_multishift_epi64_epi8(control, words);
  return reinterpret_cast<__m512bh>(_mm512_ternarylogic_epi32(v, mask, one, 0xEA));  // (v & mask) | one
}

template <int kBits, int kM>
void row_chunk(const GemvProblem& p, __m512i control, int64_t n, int64_t m0) {
  const int64_t blocks = p.Kp / 32, G = p.K / p.group_len;
  const int64_t blocks_per_group = p.group_len == p.K ? blocks : p.group_len / 32;
  const uint32_t* row = p.packed + n * blocks * kBits;
  const uint16_t* x[kM];
  for (int j = 0; j < kM; ++j) x[j] = p.x_bf16 + (m0 + j) * p.Kp;

  // Independent accumulation chains hide the vdpbf16ps latency.
  constexpr int kChains = kM == 1 ? 4 : (kM == 2 ? 2 : 1);
  __m512 y[kM];
  float zero_term[kM];
  for (int j = 0; j < kM; ++j) y[j] = _mm512_setzero_ps(), zero_term[j] = 0.f;
  for (int64_t g = 0; g < G; ++g) {
    __m512 acc[kM][kChains];
    for (int j = 0; j < kM; ++j)
      for (int c = 0; c < kChains; ++c) acc[j][c] = _mm512_setzero_ps();
    auto block = [&](int64_t blk, int chain) {
      _mm_prefetch(reinterpret_cast<const char*>(row + blk * kBits + kPrefetchWords), _MM_HINT_T0);
      const __m512bh q = decode_block<kBits>(row + blk * kBits, control);
      for (int j = 0; j < kM; ++j) {
        const __m512bh xv = reinterpret_cast<__m512bh>(_mm512_load_si512(x[j] + blk * 32));
        acc[j][chain] = _mm512_dpbf16_ps(acc[j][chain], q, xv);
      }
    };
    const int64_t blk_end = g + 1 == G ? blocks : (g + 1) * blocks_per_group;
    int64_t blk = g * blocks_per_group;
    for (; blk + kChains <= blk_end; blk += kChains)
      for (int c = 0; c < kChains; ++c) block(blk + c, c);
    for (; blk < blk_end; ++blk) block(blk, 0);
    for (int j = 0; j < kM; ++j)
      for (int c = 1; c < kChains; ++c) acc[j][0] = _mm512_add_ps(acc[j][0], acc[j][c]);
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
    for (int j = 0; j < kM; ++j) out[j] += v * p.x[(m0 + j) * p.Kp + col];
  }
  for (int j = 0; j < kM; ++j) p.y[(m0 + j) * p.N + n] = out[j];
}

template <int kBits>
void rows_bits(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  const __m512i control = multishift_control<kBits>();
  for (int64_t n = row_begin; n < row_end; ++n) {
    int64_t m0 = 0;
    for (; m0 + 4 <= p.M; m0 += 4) row_chunk<kBits, 4>(p, control, n, m0);
    switch (p.M - m0) {
      case 3: row_chunk<kBits, 3>(p, control, n, m0); break;
      case 2: row_chunk<kBits, 2>(p, control, n, m0); break;
      case 1: row_chunk<kBits, 1>(p, control, n, m0); break;
      default: break;  // M was a multiple of 4
    }
  }
}

}  // namespace

void mixed_gemv_rows(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  switch (p.bits) {
    case 2: return rows_bits<2>(p, row_begin, row_end);
    case 4: return rows_bits<4>(p, row_begin, row_end);
  }
  // The caller only dispatches here when bf16_kernel_supports(bits).
}

}  // namespace tacq::cpu::avx512bf16
