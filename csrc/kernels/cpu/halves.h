// fp16 -> fp32 conversion for the CPU kernels and the host layer: one exact
// scalar conversion (portable) and an array conversion per ISA (generic: the
// scalar one in a loop; avx2: F16C, 8 values per instruction, which every
// AVX-512 CPU also has).
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

// out[i] = half_bits_to_float(in[i]) for i < n.
using HalvesToFloatsFn = void (*)(const uint16_t* in, float* out, int64_t n);
namespace generic { void halves_to_floats(const uint16_t* in, float* out, int64_t n); }
namespace avx2 { void halves_to_floats(const uint16_t* in, float* out, int64_t n); }

}  // namespace tacq::cpu
