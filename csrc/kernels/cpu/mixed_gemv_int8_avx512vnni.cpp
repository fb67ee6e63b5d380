// tacq.mixed_gemv with int8 activations, AVX-512 VNNI build (on 256-bit
// vectors, AVX512-VL): the kernel of mixed_gemv_int8_kernel.h with vpdpbusd,
// which multiplies unsigned codes by int8 x and adds each 4 adjacent
// products straight into an int32 lane: one instruction where the AVX2 build
// takes two, and no int16 stage. 256-bit vectors keep Int8Order's 32-lane
// chunks (staging shared with the AVX2 build); on a 2-core Zen 4 a 2-bit
// 4096 x 14336 layer at one row of x already reads ~24 of ~30 GB/s, so a
// 512-bit order was not worth its second staging layout.
#include <immintrin.h>

#include <array>
#include <cstring>
#include <utility>

#include "mixed_gemv.h"

namespace tacq::cpu::avx512vnni {
namespace {

#include "mixed_gemv_avx2_common.h"

struct Int8Products {
  static __m256i step(__m256i acc, __m256i codes, __m256i x) { return _mm256_dpbusd_epi32(acc, codes, x); }
  static __m256i int32_lanes(__m256i even, __m256i odd) { return _mm256_add_epi32(even, odd); }
};

#include "mixed_gemv_int8_kernel.h"

}  // namespace

bool mixed_gemv_int8_rows(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  return dispatch_bits(p.bits, [&](auto bits) { return rows_bits<bits()>(p, row_begin, row_end); });
}

}  // namespace tacq::cpu::avx512vnni
