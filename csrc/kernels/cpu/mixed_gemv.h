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
  const int32_t* row_ptr;   // [N+1]
  const int32_t* col_idx;   // [nnz], in [0, K)
  const uint16_t* values;   // [nnz] fp16 bit patterns
  int64_t M, N, K, Kp;      // Kp = ceil(K/32)*32
  int64_t group_len;        // K for whole rows, else a multiple of 32
  int bits;
  float* y;                 // [M, N] fp32 out
};

// Output rows [row_begin, row_end).
using GemvRowsFn = void (*)(const GemvProblem& p, int64_t row_begin, int64_t row_end);
namespace generic { void mixed_gemv_rows(const GemvProblem&, int64_t, int64_t); }
namespace avx2 { void mixed_gemv_rows(const GemvProblem&, int64_t, int64_t); }
namespace avx512 { void mixed_gemv_rows(const GemvProblem&, int64_t, int64_t); }

}  // namespace tacq::cpu
