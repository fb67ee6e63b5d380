#include "saliency.h"

namespace tacq::cpu {

void accumulate_abs(float* __restrict acc, const float* __restrict grad, int64_t count) {
  // A streaming loop the compiler vectorizes for any ISA; it runs on a tile
  // that was just written by the GEMM, so it is served from cache.
  for (int64_t i = 0; i < count; ++i) acc[i] += grad[i] < 0.f ? -grad[i] : grad[i];
}

}  // namespace tacq::cpu
