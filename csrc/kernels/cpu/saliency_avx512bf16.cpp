// tacq.saliency_accumulate fused kernel for bf16 inputs, AVX-512 with the BF16
// extension (Sapphire Rapids, Zen 4): the tiles of saliency_tiles.h with two
// tokens per step, one vdpbf16ps per vector (32 products summed into 16 fp32
// lanes, twice the multiply-adds of a vfmadd). Products of bf16 values are
// exact in fp32 and are summed in fp32, as the fp32 kernel does on the same
// inputs, in another order; vdpbf16ps flushes subnormal inputs and results to
// zero (products below 2^-126 ~ 1.2e-38 count as 0).
#include <algorithm>

#include "avx512_intrinsics.h"
#include "saliency.h"

namespace tacq::cpu::avx512bf16 {
namespace {

struct Steps {
  using Elem = uint16_t;  // bf16 bit patterns
  static constexpr int kTokens = 2;
  // Lane c = src[c] | src[ld + c] << 16: token t in the low half, t + 1 (or 0) in the high.
  static __m512i load(const uint16_t* src, int64_t ld, int tokens, __mmask16 m) {
    const __m512i first = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src));
    if (tokens < 2) return first;
    const __m512i second = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + ld));
    return _mm512_or_si512(first, _mm512_slli_epi32(second, 16));
  }
  static __m512 madd(__m512 acc, __m512i g, __m512i a) {
    return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(g), reinterpret_cast<__m512bh>(a));
  }
};

}  // namespace

#include "saliency_tiles.h"

}  // namespace tacq::cpu::avx512bf16
