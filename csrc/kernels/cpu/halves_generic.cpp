// fp16 -> fp32 and fp32 -> bf16 array conversions, portable (halves.h).
#include "halves.h"

namespace tacq::cpu::generic {

void halves_to_floats(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = half_bits_to_float(in[i]);
}

void floats_to_bf16(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16_bits(in[i]);
}

}  // namespace tacq::cpu::generic
