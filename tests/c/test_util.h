// Minimal test harness and naive references for the C API tests, written from
// docs/format.md and docs/method.md (not from the kernels).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "tacq/tacq.h"

inline int g_failures = 0;
inline int g_checks = 0;

#define CHECK(cond)                                                              \
  do {                                                                           \
    ++g_checks;                                                                  \
    if (!(cond)) {                                                               \
      ++g_failures;                                                              \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                            \
  } while (0)

#define CHECK_STATUS(call, expected)                                                         \
  do {                                                                                       \
    ++g_checks;                                                                              \
    const tacq_status _got = (call);                                                         \
    if (_got != (expected)) {                                                                \
      ++g_failures;                                                                          \
      std::fprintf(stderr, "%s:%d: %s returned %d (%s: %s), expected %d (%s)\n", __FILE__,  \
                   __LINE__, #call, static_cast<int>(_got), tacq_status_string(_got),       \
                   tacq_last_error(), static_cast<int>(expected), tacq_status_string(expected)); \
    }                                                                                        \
  } while (0)

inline int finish(const char* name) {
  std::printf("%s: %d checks, %d failures (cpu isa %s)\n", name, g_checks, g_failures, tacq_cpu_isa());
  return g_failures == 0 ? 0 : 1;
}

// ---- fp16 / bf16 by the IEEE definitions ----------------------------------------

inline float ref_half_to_float(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
  double v;
  if (exp == 31) v = man ? NAN : INFINITY;
  else if (exp == 0) v = std::ldexp(static_cast<double>(man), -24);
  else v = std::ldexp(1.0 + man / 1024.0, exp - 15);
  return static_cast<float>(sign ? -v : v);
}

// Nearest fp16 (ties to even) of a finite value inside the fp16 range.
inline uint16_t ref_float_to_half(float f) {
  const double a = std::fabs(static_cast<double>(f));
  const uint16_t sign = f < 0 ? 0x8000 : 0;
  if (a < std::ldexp(1.0, -14))  // subnormal: units of 2^-24 (1024 units roll into the smallest normal)
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(a * std::ldexp(1.0, 24))));
  int ex = 0;
  const double frac = std::frexp(a, &ex);  // a = frac * 2^ex, frac in [0.5, 1)
  int e = ex - 1;
  double q = std::nearbyint((2 * frac - 1) * 1024);
  if (q == 1024) {
    q = 0;
    ++e;
  }
  return static_cast<uint16_t>(sign | ((e + 15) << 10) | static_cast<int>(q));
}

inline float ref_bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t ref_float_to_bf16(float f) {  // ties to even, finite inputs
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t low = u & 0xFFFF, high = u >> 16;
  if (low > 0x8000 || (low == 0x8000 && (high & 1))) return static_cast<uint16_t>(high + 1);
  return static_cast<uint16_t>(high);
}

// ---- the format, bit by bit ------------------------------------------------------

inline int64_t ref_words_per_row(int64_t K, int bits) { return (K + 31) / 32 * bits; }

inline std::vector<int32_t> ref_pack(const std::vector<uint8_t>& codes, int64_t N, int64_t K, int bits) {
  const int64_t W = ref_words_per_row(K, bits);
  std::vector<uint32_t> words(static_cast<size_t>(N * W), 0u);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < K; ++i)
      for (int b = 0; b < bits; ++b) {
        const int64_t bit = bits * i + b;
        if ((codes[n * K + i] >> b) & 1) words[n * W + bit / 32] |= 1u << (bit % 32);
      }
  std::vector<int32_t> out(words.size());
  if (!words.empty()) std::memcpy(out.data(), words.data(), words.size() * 4);
  return out;
}

inline int ref_code(const int32_t* row, int64_t i, int bits) {
  int code = 0;
  for (int b = 0; b < bits; ++b) {
    const int64_t bit = bits * i + b;
    const uint32_t word = static_cast<uint32_t>(row[bit / 32]);
    code |= static_cast<int>((word >> (bit % 32)) & 1u) << b;
  }
  return code;
}

inline int64_t ref_group_len(int64_t group_size, int64_t K) { return group_size == -1 ? K : group_size; }

// A random quantized layer with its owning storage.
struct Layer {
  int64_t N = 0, K = 0, group_size = -1;
  int bits = 2;
  bool f16_scales = false;
  std::vector<uint8_t> codes;
  std::vector<int32_t> packed;
  std::vector<float> scale32, zero32;   // the values (fp16-exact when f16_scales)
  std::vector<uint16_t> scale16, zero16;
  std::vector<int32_t> row_ptr, col_idx;
  std::vector<uint16_t> values;
  tacq_weights view() const {
    tacq_weights w{};
    w.N = N;
    w.K = K;
    w.bits = bits;
    w.group_size = group_size;
    w.scale_dtype = f16_scales ? TACQ_DTYPE_F16 : TACQ_DTYPE_F32;
    w.packed = packed.data();
    w.scale = f16_scales ? static_cast<const void*>(scale16.data()) : scale32.data();
    w.zero = f16_scales ? static_cast<const void*>(zero16.data()) : zero32.data();
    w.nnz = static_cast<int64_t>(col_idx.size());
    w.row_ptr = row_ptr.data();
    w.col_idx = col_idx.data();
    w.values = values.data();
    return w;
  }
  int64_t G() const { return K / ref_group_len(group_size, K); }
  // D[n, k] + R[n, k], in double
  double weight(int64_t n, int64_t k) const {
    const int64_t g = k / ref_group_len(group_size, K);
    double d = static_cast<double>(scale32[n * G() + g]) *
               (ref_code(packed.data() + n * ref_words_per_row(K, bits), k, bits) - zero32[n * G() + g]);
    for (int32_t i = row_ptr[n]; i < row_ptr[n + 1]; ++i)
      if (col_idx[i] == k) d += ref_half_to_float(values[i]);
    return d;
  }
};

// n standard-normal floats.
inline std::vector<float> random_normal(std::mt19937& rng, size_t n) {
  std::vector<float> v(n);
  std::normal_distribution<float> normal;
  for (auto& e : v) e = normal(rng);
  return v;
}

inline Layer random_layer(std::mt19937& rng, int64_t N, int64_t K, int bits, int64_t group_size, bool f16,
                          double density) {
  Layer L;
  L.N = N;
  L.K = K;
  L.bits = bits;
  L.group_size = group_size;
  L.f16_scales = f16;
  std::uniform_int_distribution<int> code(0, (1 << bits) - 1);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  L.codes.resize(static_cast<size_t>(N * K));
  for (auto& c : L.codes) c = static_cast<uint8_t>(code(rng));
  L.packed = ref_pack(L.codes, N, K, bits);
  const int64_t G = L.G();
  for (int64_t i = 0; i < N * G; ++i) {
    const float s = 0.01f + 0.05f * u(rng), z = static_cast<float>(code(rng));
    const uint16_t s16 = ref_float_to_half(s), z16 = ref_float_to_half(z);
    L.scale16.push_back(s16);
    L.zero16.push_back(z16);
    L.scale32.push_back(f16 ? ref_half_to_float(s16) : s);
    L.zero32.push_back(z);
  }
  L.row_ptr.push_back(0);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      if (u(rng) < density || (n == 0 && k == K - 1)) {
        L.col_idx.push_back(static_cast<int32_t>(k));
        L.values.push_back(ref_float_to_half(u(rng) - 0.5f));
      }
    }
    L.row_ptr.push_back(static_cast<int32_t>(L.col_idx.size()));
  }
  return L;
}

// y[m, n] = sum_k x[m, k] W[n, k], in double, plus sum_k |x W| for tolerances.
inline void ref_gemv(const Layer& L, const std::vector<float>& x, int64_t M, std::vector<double>* y,
                     std::vector<double>* magnitude) {
  y->assign(static_cast<size_t>(M * L.N), 0.0);
  magnitude->assign(static_cast<size_t>(M * L.N), 0.0);
  for (int64_t n = 0; n < L.N; ++n)
    for (int64_t k = 0; k < L.K; ++k) {
      const double w = L.weight(n, k);
      for (int64_t m = 0; m < M; ++m) {
        (*y)[m * L.N + n] += w * x[m * L.K + k];
        (*magnitude)[m * L.N + n] += std::fabs(w * x[m * L.K + k]);
      }
    }
}
