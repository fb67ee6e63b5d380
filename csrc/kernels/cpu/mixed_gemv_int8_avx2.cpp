// tacq.mixed_gemv with int8 activations, AVX2 build: the kernel of
// mixed_gemv_int8_kernel.h with vpmaddubsw, which multiplies unsigned codes by
// int8 x and sums pairs into int16 lanes, added over a chunk's steps (at most
// 8 * 2 * 15 * 127 < 2^15 in all: no overflow); vpmaddwd then sums pairs to int32.
// So 32 weights cost 3-4 integer instructions, against 8 weights per FMA for
// fp32 x.
#include <immintrin.h>

#include <array>
#include <cstring>
#include <utility>

#include "mixed_gemv.h"

namespace tacq::cpu::avx2 {
namespace {

#include "mixed_gemv_avx2_common.h"

struct Int8Products {
  static __m256i step(__m256i acc, __m256i codes, __m256i x) {
    return _mm256_add_epi16(acc, _mm256_maddubs_epi16(codes, x));
  }
  static __m256i int32_lanes(__m256i even, __m256i odd) {
    return _mm256_madd_epi16(_mm256_add_epi16(even, odd), _mm256_set1_epi16(1));
  }
};

#include "mixed_gemv_int8_kernel.h"

}  // namespace

bool mixed_gemv_int8_rows(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  return dispatch_bits(p.bits, [&](auto bits) { return rows_bits<bits()>(p, row_begin, row_end); });
}

}  // namespace tacq::cpu::avx2
