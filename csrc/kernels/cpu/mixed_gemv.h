// Torch-free CPU kernel of tacq.mixed_gemv:
//   y[M,N] = x[M,K] (dequant(packed) + R)^T,   R a CSR fp16 residual,
// computed per output row n and activation row m as
//   y[m,n] = sum_g scale[n,g] * (sum_{k in g} code[n,k] x[m,k] - zero[n,g] * xsum[m,g])
//            + sum_{i in row n of R} values[i] * x[m, col_idx[i]]
// so the inner loop only unpacks codes and multiply-adds; the residual of a row
// is applied right after its dense part, in the same pass over the rows.
// One variant per ISA (mixed_gemv_{generic,avx2,avx512}.cpp), chosen by the caller.
#pragma once

#include <cstdint>

namespace tacq::cpu {

constexpr int64_t kGemvMaxRows = 16;  // M limit of the op

struct GemvProblem {
  const uint32_t* packed;   // [N, Kp/32*bits], tacq/packing.h layout
  const float* scale;       // [N, G]
  const float* zero;        // [N, G]
  const float* x;           // [M, Kp] fp32, zero-padded past K, 64-byte aligned rows
  const float* xsum;        // [M, G] sum of x over each group
  const uint16_t* x_bf16;   // [M, Kp] bf16 bit patterns in bf16_lane_code() order, or
                            // nullptr; only the bf16 kernel reads it
  const int32_t* row_ptr;   // [N+1]
  const int32_t* col_idx;   // [nnz], in [0, K)
  const uint16_t* values;   // [nnz] fp16 bit patterns
  int64_t M, N, K, Kp;      // Kp = ceil(K/32)*32
  int64_t group_len;        // K for whole rows, else a multiple of 32
  int bits;
  float* y;                 // [M, N] fp32 out
};

// The bf16 kernel (mixed_gemv_avx512bf16.cpp) pairs lane l of a 32-code block
// with code bf16_lane_code(bits, l) of the block, so x is staged in that order.
// 2-bit: identity. 4-bit: the block's two 64-bit halves sit in alternate
// qwords of the register, lanes 4q..4q+3 reading qword q.
static inline int bf16_lane_code(int bits, int lane) {
  if (bits != 4) return lane;
  const int a = lane / 8, b = (lane / 4) & 1, r = lane & 3;
  return 16 * b + 4 * a + r;
}

// bits for which the bf16 kernel exists.
static inline bool bf16_kernel_supports(int bits) { return bits == 2 || bits == 4; }

// Output rows [row_begin, row_end).
using GemvRowsFn = void (*)(const GemvProblem& p, int64_t row_begin, int64_t row_end);
namespace generic { void mixed_gemv_rows(const GemvProblem&, int64_t, int64_t); }
namespace avx2 { void mixed_gemv_rows(const GemvProblem&, int64_t, int64_t); }
namespace avx512 { void mixed_gemv_rows(const GemvProblem&, int64_t, int64_t); }
namespace avx512bf16 { void mixed_gemv_rows(const GemvProblem&, int64_t, int64_t); }

}  // namespace tacq::cpu
