// The route of the CPU tacq.mixed_gemv by the number of rows of x: up to
// cpu_fused_rows_limit(x's dtype, N, K) rows run the fused kernel, in calls of
// kMixedGemvMaxRows rows; more take a GEMM over blocks of the dense weight.
// The limit depends on the ISA in use (TACQ_CPU_ISA is read on every call),
// x's dtype and, for fp32 and bf16 x, the layer's columns K (and for fp32 x
// on rows of more than 256 columns, the weight's size N * K);
// TACQ_CPU_FUSED_ROWS=<n> (n >= 16, also read on every call) sets it.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace tacq {

// kNoRowLimit (fp16 x): every row count runs the fused kernel.
constexpr int64_t kNoRowLimit = INT64_MAX;

int64_t cpu_fused_rows_limit(at::ScalarType x_type, int64_t N, int64_t K);

}  // namespace tacq
