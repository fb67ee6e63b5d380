#include "saliency.h"

#include <algorithm>

namespace tacq::cpu {

void accumulate_abs(float* __restrict acc, const float* __restrict grad, int64_t count) {
  // A streaming loop the compiler vectorizes for any ISA; it runs on a tile
  // that was just written by the GEMM, so it is served from cache.
  for (int64_t i = 0; i < count; ++i) acc[i] += grad[i] < 0.f ? -grad[i] : grad[i];
}

namespace {
int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
}  // namespace

SaliencyBlocking SaliencyBlocking::for_shape(int64_t B, int64_t T, int64_t N, int64_t K, int64_t tokens_per_step,
                                             int64_t min_blocks) {
  // Samples shorter than kGroupSteps steps are grouped up to that many steps:
  // a tile then computes several samples' gradients in turn while its acc
  // tile stays in L1, instead of every sample re-reading acc from memory.
  constexpr int64_t kGroupSteps = 128;
  const int64_t steps = (T + tokens_per_step - 1) / tokens_per_step;
  const int64_t group = std::clamp<int64_t>(kGroupSteps / steps, 1, B);
  // A block's activation panel (group_steps x block_cols 32-bit lanes,
  // <= 512 KiB) is swept once per 6-row strip, so it must stay in a 1 MiB L2;
  // its gradient strips are read once each. Blocks split N and K into
  // near-equal parts.
  const int64_t max_cols = std::clamp<int64_t>((int64_t{1} << 17) / (group * steps) / 64 * 64, 64, 1024);
  const int64_t col_blocks = (K + max_cols - 1) / max_cols;
  SaliencyBlocking p{B, T, N, K, tokens_per_step, group, round_up(N, 6),
                     round_up((K + col_blocks - 1) / col_blocks, 64)};
  for (int64_t row_blocks = 2; p.row_blocks() * p.col_blocks() < min_blocks && p.block_rows > 6; ++row_blocks)
    p.block_rows = round_up((N + row_blocks - 1) / row_blocks, 6);
  return p;
}

int64_t SaliencyBlocking::grad_panel_lanes() const { return group_steps() * round_up(N, 6); }
int64_t SaliencyBlocking::act_panel_lanes() const { return group_steps() * round_up(K, 64); }

}  // namespace tacq::cpu
