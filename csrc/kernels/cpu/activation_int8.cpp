// Int8 activations of tacq.mixed_gemv (the rounding and the Int8Order staging
// defined in mixed_gemv.h), portable: O(K) per activation row and call,
// against O(N*K) for the kernel that reads them.
#include <cmath>
#include <cstring>

#include "mixed_gemv.h"

namespace tacq::cpu {

bool round_int8_blocks(float* xs, int64_t Kp, int8_t* q, float* d) {
  for (int64_t k = 0; k < Kp; ++k)
    if (!std::isfinite(xs[k])) return false;
  for (int64_t b = 0; b < Kp / 32; ++b) {
    float* block = xs + 32 * b;
    float amax = 0.f;
    for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(block[i]));
    if (amax == 0.f) {
      d[b] = 0.f;
      std::memset(q + 32 * b, 0, 32);
      continue;  // the block is already all zeros
    }
    const float inverse = 127.f / amax, scale = amax / 127.f;
    d[b] = scale;
    for (int i = 0; i < 32; ++i) {
      const float rounded = std::nearbyint(block[i] * inverse);  // ties to even; |rounded| <= 127
      q[32 * b + i] = static_cast<int8_t>(rounded);
      block[i] = rounded * scale;
    }
  }
  return true;
}

void stage_int8_lanes(const int8_t* q, const float* d, int64_t Kp, int bits, int64_t Kc, int8_t* lanes,
                      float* lane_scales) {
  const Int8Order order{bits};
  const int cpl = order.codes_per_lane(), chunk = order.chunk_codes();
  for (int64_t c0 = 0; c0 < Kc; c0 += chunk) {
    for (int k = 0; k < chunk; ++k)
      lanes[c0 + 32 * (k % cpl) + k / cpl] = c0 + k < Kp ? q[c0 + k] : 0;
    for (int r = 0; r < 8; ++r) {
      const int64_t block = (c0 + 4 * r * cpl) / 32;
      lane_scales[c0 / chunk * 8 + r] = c0 + 4 * r * cpl < Kp ? d[block] : 0.f;
    }
  }
}

}  // namespace tacq::cpu
