// tacq.mixed_gemv CPU kernel, AVX-512 (layout and algebra in mixed_gemv.h):
// the lane kernel of mixed_gemv_lanes.h with fp32 lanes, for bits 2, 3 and 4
// (x staged as fp32 in lane order, one vfmadd231ps per 16 weights).
#include <algorithm>
#include <array>
#include <type_traits>
#include <utility>
#include <vector>

#include "avx512_intrinsics.h"
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
  static void store_step(float* dst, const __m512 (&v)[1]) { _mm512_store_ps(dst, v[0]); }
};

#include "mixed_gemv_lanes.h"

}  // namespace

void stage_lanes(const float* xs, int64_t Kp, int bits, int64_t Kc, bool in_place, void* lanes) {
  stage_x_lanes(xs, Kp, bits, Kc, in_place, lanes);
}

bool mixed_gemv_rows(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  return lane_rows(p, row_begin, row_end);
}

}  // namespace tacq::cpu::avx512
