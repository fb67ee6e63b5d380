// fp16 -> fp32 array conversion with F16C (halves.h): 8 values per vcvtph2ps,
// the last n % 8 one at a time.
#include <immintrin.h>

#include "halves.h"

namespace tacq::cpu::avx2 {

void halves_to_floats(const uint16_t* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; ++i) out[i] = _cvtsh_ss(in[i]);
}

}  // namespace tacq::cpu::avx2
