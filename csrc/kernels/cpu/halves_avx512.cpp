// fp32 -> bf16 array conversion with AVX-512 (halves.h): the scalar rounding
// on 16 lanes (add 0x7FFF plus the kept mantissa's lowest bit, keep the high
// half; NaN lanes keep their high half with the quiet bit set), narrowed with
// vpmovdw into one 256-bit store; the last n % 16 values through a mask
// (masked stores only at the end: on Zen 4 they are much slower than plain
// ones).
#include <cstdint>

#include "avx512_intrinsics.h"
#include "halves.h"

namespace tacq::cpu::avx512 {

namespace {

// The 16 bf16 patterns of v.
__m256i bf16_of(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i high = _mm512_srli_epi32(bits, 16);
  const __m512i lowest_kept = _mm512_and_si512(high, _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lowest_kept, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
  return _mm512_cvtepi32_epi16(_mm512_mask_or_epi32(rounded, nan, high, _mm512_set1_epi32(0x40)));
}

}  // namespace

void floats_to_bf16(const float* in, uint16_t* out, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), bf16_of(_mm512_loadu_ps(in + i)));
  if (i < n) {
    const auto lanes = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm256_mask_storeu_epi16(out + i, lanes, bf16_of(_mm512_maskz_loadu_ps(lanes, in + i)));
  }
}

}  // namespace tacq::cpu::avx512
