// Limits of the op contracts, shared by the CPU and CUDA kernels, the ops glue
// and (as tacq_ext._C.MIXED_GEMV_MAX_ROWS) the Python layer. Torch-free.
#pragma once

#include <cstdint>

namespace tacq {

// Most activation rows (M) one tacq.mixed_gemv call takes; larger batches
// dequantize and multiply densely.
constexpr int64_t kMixedGemvMaxRows = 16;

}  // namespace tacq
