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

SaliencyBlocking SaliencyBlocking::for_shape(int64_t B, int64_t T, int64_t N, int64_t K, int64_t min_blocks) {
  // The packed activation panel (T x block_cols fp32, ~512 KiB) is swept once
  // per 6-row strip, so it must stay in a 1 MiB L2. The packed gradient rows
  // (T x block_rows, ~1 MiB) are read once, one strip at a time, so they may be
  // larger: more rows per block = fewer repacks of the activations.
  const int64_t cols = std::clamp<int64_t>((int64_t{1} << 17) / T / 64 * 64, 64, 512);
  const int64_t rows = std::clamp<int64_t>((int64_t{1} << 18) / T / 6 * 6, 48, 1020);
  SaliencyBlocking p{B, T, N, K, std::min(rows, round_up(N, 6)), std::min(cols, round_up(K, 64))};
  while (p.row_blocks() * p.col_blocks() < min_blocks && p.block_rows > 6)
    p.block_rows = round_up(p.block_rows / 2, 6);
  return p;
}

int64_t SaliencyBlocking::workspace_floats() const { return T * (block_cols + block_rows); }

}  // namespace tacq::cpu
