// Torch-free CPU pieces of tacq.saliency_accumulate:
//   acc[n, k] += sum_b | sum_t grad[b, t, n] * act[b, t, k] |
#pragma once

#include <cstdint>

namespace tacq::cpu {

// acc[i] += |grad[i]| for i in [0, count): both fp32, contiguous. The epilogue
// of the BLAS path, which folds one sample's gradient tile into acc.
void accumulate_abs(float* acc, const float* grad, int64_t count);

// The fused AVX-512 paths (layouts in saliency_tiles.h). Inputs contiguous:
// grad [B, T, N], act [B, T, K], both fp32 or both bf16; acc [N, K] fp32.
// Samples are taken `group` at a time (short samples are grouped, so that acc
// is swept once per group rather than once per sample): the caller packs each
// sample of the group into its slot of the panels (in parallel over steps),
// then runs tile_block on every block of acc (independent, so in parallel).
struct SaliencyBlocking {
  int64_t B, T, N, K;
  int64_t tokens_per_step;  // tokens one multiply-add sums: 1 for fp32, 2 for bf16
  int64_t group;            // samples packed and swept over acc together
  int64_t block_rows;       // rows of acc per block (a multiple of the 6-row micro-tile)
  int64_t block_cols;       // columns of acc per block (a multiple of the 64-column micro-tile)

  // Blocks sized for the caches, then split along rows until there are at
  // least min_blocks of them (so every thread gets several).
  static SaliencyBlocking for_shape(int64_t B, int64_t T, int64_t N, int64_t K, int64_t tokens_per_step,
                                    int64_t min_blocks);
  int64_t steps() const { return (T + tokens_per_step - 1) / tokens_per_step; }
  int64_t group_steps() const { return group * steps(); }  // panel rows per strip
  int64_t row_blocks() const { return (N + block_rows - 1) / block_rows; }
  int64_t col_blocks() const { return (K + block_cols - 1) / block_cols; }
  int64_t grad_panel_lanes() const;  // group_steps x N rounded up to 6-row strips
  int64_t act_panel_lanes() const;   // group_steps x K rounded up to 64-column strips
};

// One group of samples, packed: 64-byte aligned buffers of 32-bit lanes.
struct SaliencyPanels {
  int32_t* grad;  // grad_panel_lanes()
  int32_t* act;   // act_panel_lanes()
};

// pack_steps: token steps [step_begin, step_end) of sample grad_b [T, N], act_b [T, K]
//   into panel slot `slot` (< group).
// tile_block: acc block (row_block, col_block) += sum over slots [0, samples) of
//   |grad_b^T act_b|.
namespace avx512 {
void pack_steps(const SaliencyBlocking& p, const float* grad_b, const float* act_b, int64_t slot,
                int64_t step_begin, int64_t step_end, const SaliencyPanels& panels);
void tile_block(const SaliencyBlocking& p, float* acc, const SaliencyPanels& panels, int64_t samples,
                int64_t row_block, int64_t col_block);
}  // namespace avx512
namespace avx512bf16 {  // grad, act: bf16 bit patterns; needs cpu_has_avx512_bf16()
void pack_steps(const SaliencyBlocking& p, const uint16_t* grad_b, const uint16_t* act_b, int64_t slot,
                int64_t step_begin, int64_t step_end, const SaliencyPanels& panels);
void tile_block(const SaliencyBlocking& p, float* acc, const SaliencyPanels& panels, int64_t samples,
                int64_t row_block, int64_t col_block);
}  // namespace avx512bf16

}  // namespace tacq::cpu
