// 16-bit float conversions for the CPU kernels and the host layer: fp16 ->
// fp32 and fp32 -> bf16, each as one exact scalar conversion (portable) and an
// array conversion per ISA (generic: the scalar one in a loop; avx2: 8 values
// per instruction, F16C for fp16, which every AVX-512 CPU also has; avx512:
// 16 values, fp32 -> bf16 only).
#pragma once

#include <cstdint>

namespace tacq::cpu {

// The fp32 value of the fp16 bit pattern h (exact for every pattern: signed
// zeros, subnormals, infinities and NaN, whose payload is kept).
inline float half_bits_to_float(uint16_t h) {
  const uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  float magnitude;
  if (exp == 0) {
    magnitude = static_cast<float>(man) * 5.9604644775390625e-8f;  // subnormal: man * 2^-24
  } else {  // rebias the exponent (15 -> 127); exp 31 (inf / NaN) maps to 255
    const uint32_t bits = (exp == 0x1F ? 0xFFu << 23 : (exp + 112u) << 23) | (man << 13);
    __builtin_memcpy(&magnitude, &bits, 4);
  }
  return (h & 0x8000u) ? -magnitude : magnitude;
}

// The bf16 bit pattern nearest f, ties to even; NaN stays NaN (made quiet).
inline uint16_t float_to_bf16_bits(float f) {
  uint32_t bits;
  __builtin_memcpy(&bits, &f, 4);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// out[i] = half_bits_to_float(in[i]) for i < n.
using HalvesToFloatsFn = void (*)(const uint16_t* in, float* out, int64_t n);
namespace generic { void halves_to_floats(const uint16_t* in, float* out, int64_t n); }
namespace avx2 { void halves_to_floats(const uint16_t* in, float* out, int64_t n); }

// out[i] = float_to_bf16_bits(in[i]) for i < n.
using FloatsToBf16Fn = void (*)(const float* in, uint16_t* out, int64_t n);
namespace generic { void floats_to_bf16(const float* in, uint16_t* out, int64_t n); }
namespace avx2 { void floats_to_bf16(const float* in, uint16_t* out, int64_t n); }
namespace avx512 { void floats_to_bf16(const float* in, uint16_t* out, int64_t n); }

}  // namespace tacq::cpu
