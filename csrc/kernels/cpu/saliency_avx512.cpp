// Fused per-sample saliency GEMM, AVX-512:
//   acc[n, k] += sum_b | sum_t g_b[t, n] * a_b[t, k] |
//
// Layout: g_b = grad + b*T*N is [T, N] row-major, a_b = act + b*T*K is [T, K],
// acc is [N, K]; all fp32. One call owns one block of acc (block_rows x
// block_cols). For each sample b it packs
//   - a_b's block columns into 64-column strips, [strip][T][64] (the panel that
//     stays in L2 while every row strip of the block sweeps it), and
//   - g_b's block rows into 6-row strips, [strip][T][6] (zero rows past N),
// then runs the micro-kernel on every (row strip, column strip) pair.
// Micro-kernel: a 6 x 64 tile of sample b's gradient lives in 24 zmm registers
// for all T tokens (per token: four 16-float loads of a, six broadcasts of g,
// 24 FMAs); then |tile| is added into acc under a column mask. The per-sample
// gradient never leaves registers, and the extra memory is the workspace.
#include <immintrin.h>

#include <algorithm>

#include "saliency.h"

namespace tacq::cpu {
namespace {

constexpr int kTileRows = 6;
constexpr int kTileCols = 64;
constexpr int kVecs = kTileCols / 16;

__mmask16 column_mask(int64_t cols_left, int vec) {
  const int64_t n = std::clamp<int64_t>(cols_left - 16 * vec, 0, 16);
  return static_cast<__mmask16>((1u << n) - 1u);
}

// acc_tile[r, c] += |sum_t g_strip[t, r] * a_strip[t, c]| for r < rows, c < cols.
void micro_tile(const float* g_strip, const float* a_strip, int64_t T, float* acc_tile, int64_t ld_acc,
                int rows, int64_t cols) {
  __m512 c[kTileRows][kVecs];
  for (auto& row : c)
    for (auto& v : row) v = _mm512_setzero_ps();
  for (int64_t t = 0; t < T; ++t) {
    const float* a_t = a_strip + t * kTileCols;
    const float* g_t = g_strip + t * kTileRows;
    __m512 a[kVecs];
    for (int v = 0; v < kVecs; ++v) a[v] = _mm512_load_ps(a_t + 16 * v);
    for (int r = 0; r < kTileRows; ++r) {
      const __m512 g = _mm512_set1_ps(g_t[r]);
      for (int v = 0; v < kVecs; ++v) c[r][v] = _mm512_fmadd_ps(g, a[v], c[r][v]);
    }
  }
  for (int r = 0; r < rows; ++r) {
    float* out = acc_tile + r * ld_acc;
    for (int v = 0; v < kVecs; ++v) {
      const __mmask16 m = column_mask(cols, v);
      const __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(m, out + 16 * v), _mm512_abs_ps(c[r][v]));
      _mm512_mask_storeu_ps(out + 16 * v, m, sum);
    }
  }
}

// [strip][T][64] <- a[t, col0 + 64*strip + c], zero past the last column.
void pack_act(const float* a, int64_t T, int64_t K, int64_t col0, int64_t cols, float* panel) {
  for (int64_t s = 0; s * kTileCols < cols; ++s) {
    const int64_t left = cols - s * kTileCols;
    float* dst = panel + s * T * kTileCols;
    for (int64_t t = 0; t < T; ++t) {
      const float* src = a + t * K + col0 + s * kTileCols;
      for (int v = 0; v < kVecs; ++v)
        _mm512_store_ps(dst + t * kTileCols + 16 * v, _mm512_maskz_loadu_ps(column_mask(left, v), src + 16 * v));
    }
  }
}

// [strip][T][6] <- g[t, row0 + 6*strip + r], zero past the last row.
void pack_grad(const float* g, int64_t T, int64_t N, int64_t row0, int64_t rows, float* strips) {
  for (int64_t s = 0; s * kTileRows < rows; ++s) {
    const int64_t left = std::min<int64_t>(rows - s * kTileRows, kTileRows);
    const __mmask16 m = static_cast<__mmask16>((1u << left) - 1u);
    float* dst = strips + s * T * kTileRows;
    for (int64_t t = 0; t < T; ++t) {
      const __m512 v = _mm512_maskz_loadu_ps(m, g + t * N + row0 + s * kTileRows);
      _mm512_mask_storeu_ps(dst + t * kTileRows, (1u << kTileRows) - 1u, v);
    }
  }
}

}  // namespace

void saliency_block_avx512(const SaliencyBlocking& p, float* acc, const float* grad, const float* act,
                           int64_t row_block, int64_t col_block, float* workspace) {
  const int64_t row0 = row_block * p.block_rows, rows = std::min(p.block_rows, p.N - row0);
  const int64_t col0 = col_block * p.block_cols, cols = std::min(p.block_cols, p.K - col0);
  float* act_panel = workspace;                      // T x block_cols, 64-byte aligned
  float* grad_strips = workspace + p.T * p.block_cols;  // T x block_rows
  for (int64_t b = 0; b < p.B; ++b) {
    pack_act(act + b * p.T * p.K, p.T, p.K, col0, cols, act_panel);
    pack_grad(grad + b * p.T * p.N, p.T, p.N, row0, rows, grad_strips);
    for (int64_t r = 0; r < rows; r += kTileRows) {
      const float* g_strip = grad_strips + (r / kTileRows) * p.T * kTileRows;
      const int tile_rows = static_cast<int>(std::min<int64_t>(kTileRows, rows - r));
      for (int64_t c = 0; c < cols; c += kTileCols) {
        float* acc_tile = acc + (row0 + r) * p.K + col0 + c;
        micro_tile(g_strip, act_panel + (c / kTileCols) * p.T * kTileCols, p.T, acc_tile, p.K, tile_rows,
                   cols - c);
      }
    }
  }
}

}  // namespace tacq::cpu
