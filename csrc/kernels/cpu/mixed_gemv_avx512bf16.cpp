// tacq.mixed_gemv CPU kernel for bf16 activations, AVX-512 with the BF16
// extension (Sapphire Rapids, Zen 4); bits 2, 3 and 4. The lane kernel of
// mixed_gemv_lanes.h with bf16 lanes: x staged as bf16 in lane order, one
// chunk step decodes 32 weights 1 + code/2^bits into bf16 (exact) and one
// vdpbf16ps multiplies them with 32 activations into 16 fp32 sums. Products of
// bf16 values are exact in fp32, so this matches the fp32 kernel's arithmetic
// on bf16 inputs.
#include <algorithm>
#include <array>
#include <type_traits>
#include <utility>
#include <vector>

#include "avx512_intrinsics.h"
#include "mixed_gemv.h"

namespace tacq::cpu::avx512bf16 {
namespace {

struct Lanes {
  using Elem = uint16_t;  // bf16 bit patterns
  static constexpr int kLaneBits = avx512bf16::kLaneBits;
  static constexpr int kMantissaBits = 7;
  static constexpr int32_t kOneBits = 0x3F803F80;  // bf16 1.0 in both halves
  template <int kShift>
  static __m512i shift(__m512i v) {
    if constexpr (kShift >= 0) return _mm512_slli_epi16(v, kShift);
    else return _mm512_srli_epi16(v, -kShift);
  }
  static __m512 madd(__m512 acc, __m512i q, __m512i xv) {
    return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(q), reinterpret_cast<__m512bh>(xv));
  }
  // Round to nearest even: exact for the bf16 activations this kernel takes.
  static void store_step(uint16_t* dst, const __m512 (&v)[2]) {
    _mm512_store_si512(dst, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(v[1], v[0])));
  }
};

#include "mixed_gemv_lanes.h"

}  // namespace

void stage_lanes(const float* xs, int64_t Kp, int bits, int64_t Kc, bool in_place, void* lanes) {
  stage_x_lanes(xs, Kp, bits, Kc, in_place, lanes);
}

bool mixed_gemv_rows(const GemvProblem& p, int64_t row_begin, int64_t row_end) {
  return lane_rows(p, row_begin, row_end);
}

}  // namespace tacq::cpu::avx512bf16
