// tacq.saliency_accumulate fused kernel for fp32 inputs, AVX-512: the tiles of
// saliency_tiles.h with one token per step and one vfmadd per vector.
#include <algorithm>

#include "avx512_intrinsics.h"
#include "saliency.h"

namespace tacq::cpu::avx512 {
namespace {

struct Steps {
  using Elem = float;
  static constexpr int kTokens = 1;
  static __m512i load(const float* src, int64_t /*ld*/, int /*tokens*/, __mmask16 m) {
    return _mm512_castps_si512(_mm512_maskz_loadu_ps(m, src));
  }
  static __m512 madd(__m512 acc, __m512i g, __m512i a) {
    return _mm512_fmadd_ps(_mm512_castsi512_ps(g), _mm512_castsi512_ps(a), acc);
  }
};

}  // namespace

#include "saliency_tiles.h"

}  // namespace tacq::cpu::avx512
