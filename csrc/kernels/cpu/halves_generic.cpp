// fp16 -> fp32 array conversion, portable (halves.h).
#include "halves.h"

namespace tacq::cpu::generic {

void halves_to_floats(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = half_bits_to_float(in[i]);
}

}  // namespace tacq::cpu::generic
