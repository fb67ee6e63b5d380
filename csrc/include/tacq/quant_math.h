// Scalar arithmetic of the uniform asymmetric quantizer with clipping search
// (docs/method.md; exact conventions in python/tacq_ext/reference.py), shared
// by the CPU and CUDA kernels so both round identically. All fp32; rounding is
// round-half-to-even (rintf / nearbyintf under the default rounding mode).
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "tacq/packing.h"  // TACQ_HD

namespace tacq {

constexpr int kShrinkSteps = 80;      // f_i = 1 - i/100, i = 0..79
constexpr float kErrorNorm = 2.4f;    // error = sum |normalized residual|^2.4

TACQ_HD float shrink_factor(int i) { return static_cast<float>(1.0 - i / 100.0); }

TACQ_HD float max_code(int bits) { return static_cast<float>((1 << bits) - 1); }

// The group's range [lo, hi] always contains 0; a range narrower than the
// smallest normal float (all zeros or only denormals) becomes [-1, 1].
struct Range {
  float lo, hi;
};
TACQ_HD Range clip_range(float min_value, float max_value) {
  Range r{min_value < 0.f ? min_value : 0.f, max_value > 0.f ? max_value : 0.f};
  if (r.hi - r.lo < FLT_MIN) r = Range{-1.f, 1.f};
  return r;
}

struct QParams {
  float scale, zero;
};
// Quantizer of shrink factor f: scale = (f*(hi-lo))/maxq, zero = round((-f*lo)/scale).
TACQ_HD QParams qparams(Range r, float f, int bits) {
  const float scale = (f * (r.hi - r.lo)) / max_code(bits);
  return QParams{scale, rintf((-f * r.lo) / scale)};
}

// q = clamp(round(w/scale) + zero, 0, 2^bits - 1), as a float holding an integer.
TACQ_HD float quantize_value(float w, QParams p, int bits) {
  const float q = rintf(w / p.scale) + p.zero;
  return fminf(fmaxf(q, 0.f), max_code(bits));
}

TACQ_HD float dequantize_value(float q, QParams p) { return p.scale * (q - p.zero); }

}  // namespace tacq
