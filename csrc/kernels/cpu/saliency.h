// Torch-free CPU pieces of tacq.saliency_accumulate:
//   acc[n, k] += sum_b | sum_t grad[b, t, n] * act[b, t, k] |
#pragma once

#include <cstdint>

namespace tacq::cpu {

// acc[i] += |grad[i]| for i in [0, count): both fp32, contiguous. The epilogue
// of the BLAS path, which folds one sample's gradient tile into acc.
void accumulate_abs(float* acc, const float* grad, int64_t count);

// The fused AVX-512 path. All fp32 and contiguous: grad [B, T, N], act [B, T, K],
// acc [N, K]. The caller cuts acc into blocks of SaliencyBlocking and runs
// saliency_block_avx512 on each (blocks are independent, so in parallel); every
// call gets a workspace of workspace_floats() floats of its own.
struct SaliencyBlocking {
  int64_t B, T, N, K;
  int64_t block_rows;  // rows of acc per block (a multiple of the 6-row micro-tile)
  int64_t block_cols;  // columns of acc per block (a multiple of the 64-column micro-tile)

  // Blocks sized for the caches, then split along rows until there are at
  // least min_blocks of them (so every thread gets several).
  static SaliencyBlocking for_shape(int64_t B, int64_t T, int64_t N, int64_t K, int64_t min_blocks);
  int64_t row_blocks() const { return (N + block_rows - 1) / block_rows; }
  int64_t col_blocks() const { return (K + block_cols - 1) / block_cols; }
  int64_t workspace_floats() const;
};

// Adds block (row_block, col_block) of sum_b |grad_b^T act_b| into acc.
void saliency_block_avx512(const SaliencyBlocking& blocking, float* acc, const float* grad, const float* act,
                           int64_t row_block, int64_t col_block, float* workspace);

}  // namespace tacq::cpu
