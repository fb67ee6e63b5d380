// Torch-free CPU kernel of tacq.bf16_gemv: y[m, n] = sum_k x[m, k] w[n, k]
// for a bf16 weight and bf16 activations, fp32 accumulation, y fp32. The
// unquantized layers of a quantized model (the LM head above all) decode
// through it: at one to a few rows torch's bf16 F.linear reads the weight far
// below the memory bandwidth on the CPUs it was measured on (docs/benchmarks.md).
// Layout: w [N, K] row-major bf16 bits (row stride K), x [M, K] bf16 bits with
// row stride x_stride, y [M, N] fp32 with row stride N. Works on the output
// rows [row_begin, row_end) so the caller can split rows across threads.
// Built for AVX-512 BF16 only (bf16_gemv_avx512bf16.cpp); bf16 subnormals of
// x or w count as zero there (vdpbf16ps).
#pragma once

#include <cstdint>

namespace tacq::cpu {

struct Bf16GemvProblem {
  const uint16_t* w;  // [N, K]
  const uint16_t* x;  // [M, K], row stride x_stride
  int64_t x_stride;
  int64_t M, N, K;
  float* y;           // [M, N]
};

namespace avx512bf16 {
void bf16_gemv_rows(const Bf16GemvProblem& p, int64_t row_begin, int64_t row_end);
}  // namespace avx512bf16

}  // namespace tacq::cpu
