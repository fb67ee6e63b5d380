// 16-bit float array conversions with AVX2 (halves.h). fp16 -> fp32: F16C,
// 8 values per vcvtph2ps. fp32 -> bf16: the scalar rounding on 8 lanes
// (add 0x7FFF plus the kept mantissa's lowest bit, keep the high half; NaN
// lanes keep their high half with the quiet bit set), two vectors packed into
// 16 results per store. The last n % 8 (resp. 16) values one at a time.
#include <immintrin.h>

#include <cstdint>

#include "halves.h"

namespace tacq::cpu::avx2 {

void halves_to_floats(const uint16_t* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; ++i) out[i] = _cvtsh_ss(in[i]);
}

namespace {

// The 8 bf16 patterns of v, each in the low half of its 32-bit lane.
__m256i bf16_lanes(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lowest_kept = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(bits, _mm256_add_epi32(lowest_kept, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
  const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF)),
                                            _mm256_set1_epi32(0x7F800000));
  return _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
}

}  // namespace

void floats_to_bf16(const float* in, uint16_t* out, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // packus interleaves 128-bit halves (a0-3 b0-3 a4-7 b4-7); the permute restores the order.
    const __m256i packed = _mm256_permute4x64_epi64(
        _mm256_packus_epi32(bf16_lanes(_mm256_loadu_ps(in + i)), bf16_lanes(_mm256_loadu_ps(in + i + 8))), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), packed);
  }
  for (; i < n; ++i) out[i] = float_to_bf16_bits(in[i]);
}

}  // namespace tacq::cpu::avx2
