// Body of the CPU quantize kernel, included by quantize_{generic,avx2,avx512}.cpp
// inside namespace tacq::cpu::<isa>, each compiled with its ISA flags so the
// compiler vectorizes the element loops (written as 16-lane blocks with lane
// accumulators so no float reassociation is needed).
//
// Layout: one (row, group) of `group_len` contiguous weights at a time; the
// group is copied into a thread-local scratch with kept weights replaced by the
// mean of the others, then each of the 80 shrink factors is scored over it.
// Rounding follows quant_math.h exactly, so codes match the reference; only the
// error (|r|^2.4 through a polynomial log2/exp2, ~1e-7 relative) differs in
// the last bits, which can only matter at numerical ties between two factors.

// Included inside namespace tacq::cpu::<isa> after <cstring>, "quantize.h" and
// "tacq/quant_math.h" (no includes here). It instantiates no std templates and
// calls no shared inline code, so nothing compiled for one ISA can be picked by
// the linker for another.

namespace {

constexpr int kLanes = 16;

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// x^2.4 for x >= 0 as exp2(2.4 * log2(x)); 0 for x == 0 or an underflowing result.
inline float pow_2_4(float x) {
  // log2: x = 2^e * m with m in [sqrt(1/2), sqrt(2)); log2(m) = 2/ln2 * atanh(t), t = (m-1)/(m+1).
  uint32_t u = float_to_bits(x);
  int32_t e = static_cast<int32_t>((u >> 23) & 0xFF) - 127;
  float m = bits_to_float((u & 0x007FFFFFu) | 0x3F800000u);
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  const float t = (m - 1.f) / (m + 1.f), t2 = t * t;
  const float atanh = t * (1.f + t2 * (1.f / 3 + t2 * (1.f / 5 + t2 * (1.f / 7 + t2 * (1.f / 9)))));
  const float y = kErrorNorm * (static_cast<float>(e) + 2.88539008f * atanh);
  // exp2: y = n + f with n = round(y), |f| <= 1/2; 2^f by its degree-6 Taylor series in f*ln2.
  const float n = __builtin_nearbyintf(y);
  const float z = (y - n) * 0.693147181f;
  const float p = 1.f + z * (1.f + z * (0.5f + z * (1.f / 6 + z * (1.f / 24 + z * (1.f / 120 + z * (1.f / 720))))));
  const int32_t ni = static_cast<int32_t>(n);
  const float two_n = bits_to_float(static_cast<uint32_t>(ni + 127) << 23);  // unsigned: no UB for ni < -127
  const bool vanishes = (x == 0.f) | (ni < -126);  // bitwise: keeps the loop branch-free
  return vanishes ? 0.f : p * two_n;
}

}  // namespace

static void quantize_one_group(const float* w, const bool* keep, int64_t len, int bits,
                               float* v, uint8_t* codes, float* scale_out, float* zero_out) {
  // 1. The statistics' view of the group: kept weights -> mean of the others
  //    (fp64 sum, clamped to the others' range so rounding cannot widen it).
  double sum = 0;
  int64_t free_count = 0;
  float free_min = 0.f, free_max = 0.f;
  for (int64_t k = 0; k < len; ++k) {
    if (keep && keep[k]) continue;
    free_min = free_count == 0 ? w[k] : __builtin_fminf(free_min, w[k]);
    free_max = free_count == 0 ? w[k] : __builtin_fmaxf(free_max, w[k]);
    sum += w[k];
    ++free_count;
  }
  float fill = 0.f;
  if (free_count > 0)
    fill = __builtin_fminf(__builtin_fmaxf(static_cast<float>(sum / free_count), free_min), free_max);
  for (int64_t k = 0; k < len; ++k) v[k] = (keep && keep[k]) ? fill : w[k];

  const Range r = clip_range(free_count > 0 ? __builtin_fminf(free_min, fill) : 0.f,
                             free_count > 0 ? __builtin_fmaxf(free_max, fill) : 0.f);
  const float inv_span = 1.f / (r.hi - r.lo);
  const float maxq = max_code(bits);

  // 2. Score every shrink factor; the first (largest f) wins ties.
  const int64_t full = len / kLanes * kLanes;
  float best_err = 0.f;
  QParams best{0.f, 0.f};
  for (int i = 0; i < kShrinkSteps; ++i) {
    const QParams p = qparams(r, shrink_factor(i), bits);
    float lane[kLanes] = {0.f};
    auto term = [&](float x) {
      float q = __builtin_nearbyintf(x / p.scale) + p.zero;
      q = q < 0.f ? 0.f : (q > maxq ? maxq : q);
      const float d = (p.scale * (q - p.zero) - x) * inv_span;
      return pow_2_4(d < 0.f ? -d : d);
    };
    for (int64_t k = 0; k < full; k += kLanes)
      for (int j = 0; j < kLanes; ++j) lane[j] += term(v[k + j]);
    float err = 0.f;
    for (int64_t k = full; k < len; ++k) err += term(v[k]);
    for (int j = 0; j < kLanes; ++j) err += lane[j];
    if (i == 0 || err < best_err) {
      best_err = err;
      best = p;
    }
  }

  // 3. Codes with the chosen quantizer; kept weights get the code of 0.
  for (int64_t k = 0; k < len; ++k)
    codes[k] = static_cast<uint8_t>((keep && keep[k]) ? best.zero : quantize_value(v[k], best, bits));
  *scale_out = best.scale;
  *zero_out = best.zero;
}

void quantize_groups(const QuantizeProblem& p, int64_t begin, int64_t end, float* scratch) {
  const int64_t G = p.K / p.group_len;
  for (int64_t idx = begin; idx < end; ++idx) {
    const int64_t n = idx / G, g = idx % G;
    const int64_t offset = n * p.K + g * p.group_len;  // 64-bit element offset
    quantize_one_group(p.w + offset, p.keep ? p.keep + offset : nullptr, p.group_len, p.bits,
                       scratch, p.codes + offset, p.scale + idx, p.zero + idx);
  }
}
