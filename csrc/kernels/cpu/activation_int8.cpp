// Int8 activations of tacq.mixed_gemv (the rounding and the Int8Order staging
// defined in mixed_gemv.h), portable: O(K) per activation row and call,
// against O(N*K) for the kernel that reads them. Written so that the
// baseline build vectorizes the rounding (no libm call per value) and the
// staging has no division per value: 14336 values went from ~75 to ~6 us.
#include <cmath>
#include <cstring>

#include "mixed_gemv.h"

namespace tacq::cpu {
namespace {

// v rounded to the nearest integer, ties to even, for |v| <= 2^22: adding
// 1.5 * 2^23 leaves no fraction bits, so the default rounding mode rounds
// there (as nearbyint would, without its call).
inline float round_half_even(float v) {
  constexpr float kShift = 12582912.f;  // 1.5 * 2^23
  return (v + kShift) - kShift;
}

template <int kCodesPerLane>
void stage_lanes(const int8_t* q, const float* d, int64_t Kp, int64_t Kc, int8_t* lanes, float* lane_scales) {
  constexpr int kChunk = 32 * kCodesPerLane;
  for (int64_t c0 = 0; c0 < Kc; c0 += kChunk) {
    int8_t* out = lanes + c0;
    const int8_t* in = q + c0;
    if (c0 + kChunk <= Kp) {
      for (int s = 0; s < kCodesPerLane; ++s)
        for (int lane = 0; lane < 32; ++lane) out[32 * s + lane] = in[lane * kCodesPerLane + s];
    } else {  // the last chunk, zero past Kp
      for (int s = 0; s < kCodesPerLane; ++s)
        for (int lane = 0; lane < 32; ++lane) {
          const int64_t k = lane * kCodesPerLane + s;
          out[32 * s + lane] = c0 + k < Kp ? in[k] : 0;
        }
    }
    for (int r = 0; r < 8; ++r) {
      const int64_t first = c0 + 4 * r * kCodesPerLane;  // accumulator lane r: one 32-value block
      lane_scales[c0 / kChunk * 8 + r] = first < Kp ? d[first / 32] : 0.f;
    }
  }
}

}  // namespace

bool round_int8_blocks(float* xs, int64_t Kp, int8_t* q, float* d) {
  // Loops over 8 independent lanes, which the compiler turns into vector
  // instructions (no serial chain of max latencies). `probe` is x * 0: NaN
  // exactly where x is NaN or infinite.
  float probe[8] = {0.f};
  for (int64_t k = 0; k < Kp; k += 8)
    for (int l = 0; l < 8; ++l) probe[l] += xs[k + l] * 0.f;
  for (const float p : probe)
    if (p != 0.f) return false;
  for (int64_t b = 0; b < Kp / 32; ++b) {
    float* block = xs + 32 * b;
    float lane_max[8] = {0.f};
    for (int i = 0; i < 32; i += 8)
      for (int l = 0; l < 8; ++l) {
        const float a = std::fabs(block[i + l]);
        lane_max[l] = a > lane_max[l] ? a : lane_max[l];
      }
    float amax = 0.f;
    for (const float m : lane_max) amax = m > amax ? m : amax;
    if (amax == 0.f) {
      d[b] = 0.f;
      std::memset(q + 32 * b, 0, 32);
      continue;  // the block is already all zeros
    }
    // A block below 2^-64 is lifted by 2^64 (exact), so that 127 / amax stays
    // finite down to denormals; elsewhere the lift changes no result.
    const float lift = amax < 0x1p-64f ? 0x1p64f : 1.f;
    const float inverse = 127.f / (amax * lift), scale = amax / 127.f;
    d[b] = scale;
    for (int i = 0; i < 32; ++i) {
      const float rounded = round_half_even(block[i] * lift * inverse);  // |rounded| <= 127
      q[32 * b + i] = static_cast<int8_t>(rounded);
      block[i] = rounded * scale;
    }
  }
  return true;
}

void stage_int8_lanes(const int8_t* q, const float* d, int64_t Kp, int bits, int64_t Kc, int8_t* lanes,
                      float* lane_scales) {
  switch (Int8Order{bits}.codes_per_lane()) {
    case 2: stage_lanes<2>(q, d, Kp, Kc, lanes, lane_scales); break;
    case 4: stage_lanes<4>(q, d, Kp, Kc, lanes, lane_scales); break;
    default: stage_lanes<8>(q, d, Kp, Kc, lanes, lane_scales); break;
  }
}

}  // namespace tacq::cpu
