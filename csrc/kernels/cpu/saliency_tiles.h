// Fused per-sample saliency GEMM, AVX-512 (the math in saliency.h):
//   acc[n, k] += sum_b | sum_t g_b[t, n] * a_b[t, k] |
// included inside namespace tacq::cpu::<isa> by saliency_avx512.cpp (fp32
// inputs, vfmadd) and saliency_avx512bf16.cpp (bf16 inputs, vdpbf16ps), where it
// defines that ISA's pack_steps and tile_block (saliency.h). Each first defines,
// in an anonymous namespace, `struct Steps`:
//   Steps::Elem (float or uint16_t bf16 bit patterns), kTokens (tokens per step),
//   load(src, ld, tokens, mask) -> 16 lanes of 32 bits: lane c holds the masked
//     columns src[c], src[ld + c], ... of `tokens` (1 .. kTokens) consecutive
//     token rows, zero past them (fp32: one float; bf16: a bf16 pair, token t in
//     the low half),
//   madd(acc, g, a): acc[c] += sum over the step's tokens of g[c] * a[c].
// No includes (the including file brings avx512_intrinsics.h and <algorithm>).
//
// Layout: g_b = grad + b*T*N is [T, N] row-major, a_b = act + b*T*K is [T, K],
// acc is [N, K]. Tokens are taken kTokens at a time ("steps"; a zero token pads
// the last one). The caller handles `group` samples at a time: pack_steps packs
// each into its slot of the panels of SaliencyPanels, in 32-bit lanes (zero
// past N and K):
//   grad: [row strip][slot][step][6]   (6-row strips of g_b's columns)
//   act:  [col strip][slot][step][64]  (64-column strips of a_b's columns)
// then tile_block adds each slot's |g_b^T a_b| into one block of acc: its row
// strips sweep its column strips, whose panel (group_steps x block_cols)
// stays in L2.
// Micro-kernel: a 6 x 64 tile of sample b's gradient lives in 24 zmm registers
// for all steps (per step: four vector loads of a, six broadcasts of g, 24
// multiply-adds); then |tile| is added into acc under a column mask, and the
// next slot's sample follows on the same acc tile, now in L1. The per-sample
// gradient never leaves registers.

namespace {

constexpr int kTileRows = 6;
constexpr int kTileCols = 64;
constexpr int kVecs = kTileCols / 16;

__mmask16 column_mask(int64_t cols_left, int vec) {
  const int64_t n = std::clamp<int64_t>(cols_left - 16 * vec, 0, 16);
  return static_cast<__mmask16>((1u << n) - 1u);
}

// acc_tile[r, c] += sum_j |sum_s g_strip[j, s, r] . a_strip[j, s, c]| over
// samples j < samples, for r < rows, c < cols.
void micro_tile(const int32_t* g_strip, const int32_t* a_strip, int64_t samples, int64_t steps,
                float* acc_tile, int64_t ld_acc, int rows, int64_t cols) {
  // The acc tile is cold (last touched a whole group ago): fetch it while the
  // tile computes, so the epilogue does not wait for memory.
  for (int r = 0; r < rows; ++r)
    for (int v = 0; v < kVecs; ++v)
      _mm_prefetch(reinterpret_cast<const char*>(acc_tile + r * ld_acc + 16 * v), _MM_HINT_T0);
  for (int64_t j = 0; j < samples; ++j) {
    const int32_t* g_j = g_strip + j * steps * kTileRows;
    const int32_t* a_j = a_strip + j * steps * kTileCols;
    __m512 c[kTileRows][kVecs];
#pragma GCC unroll 6
    for (auto& row : c)
#pragma GCC unroll 4
      for (auto& v : row) v = _mm512_setzero_ps();
    for (int64_t s = 0; s < steps; ++s) {
      const int32_t* a_s = a_j + s * kTileCols;
      const int32_t* g_s = g_j + s * kTileRows;
      __m512i a[kVecs];
      for (int v = 0; v < kVecs; ++v) a[v] = _mm512_load_si512(a_s + 16 * v);
      for (int r = 0; r < kTileRows; ++r) {
        const __m512i g = _mm512_set1_epi32(g_s[r]);
        for (int v = 0; v < kVecs; ++v) c[r][v] = Steps::madd(c[r][v], g, a[v]);
      }
    }
    // Unrolled over the whole tile (rows past `rows` skipped), so that c stays
    // in registers: a loop over a run-time row count would put it on the stack.
#pragma GCC unroll 6
    for (int r = 0; r < kTileRows; ++r) {
      if (r >= rows) break;
      float* out = acc_tile + r * ld_acc;
#pragma GCC unroll 4
      for (int v = 0; v < kVecs; ++v) {
        const __mmask16 m = column_mask(cols, v);
        const __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(m, out + 16 * v), _mm512_abs_ps(c[r][v]));
        _mm512_mask_storeu_ps(out + 16 * v, m, sum);
      }
    }
  }
}

}  // namespace

// Steps [step_begin, step_end) of one sample into slot `slot` of both panels.
// Token rows are read in order and each left to right, so the source streams
// from memory.
void pack_steps(const SaliencyBlocking& p, const Steps::Elem* g, const Steps::Elem* a, int64_t slot,
                int64_t step_begin, int64_t step_end, const SaliencyPanels& panels) {
  const int64_t strip_steps = p.group_steps(), first = slot * p.steps();
  for (int64_t step = step_begin; step < step_end; ++step) {
    const int tokens = static_cast<int>(std::min<int64_t>(Steps::kTokens, p.T - step * Steps::kTokens));
    const auto* g_row = g + step * Steps::kTokens * p.N;
    for (int64_t s = 0; s * kTileRows < p.N; ++s) {
      const int64_t left = std::min<int64_t>(p.N - s * kTileRows, kTileRows);
      const __m512i v = Steps::load(g_row + s * kTileRows, p.N, tokens, static_cast<__mmask16>((1u << left) - 1u));
      _mm512_mask_storeu_epi32(panels.grad + (s * strip_steps + first + step) * kTileRows, (1u << kTileRows) - 1u,
                               v);
    }
    const auto* a_row = a + step * Steps::kTokens * p.K;
    for (int64_t s = 0; s * kTileCols < p.K; ++s) {
      int32_t* dst = panels.act + (s * strip_steps + first + step) * kTileCols;
      for (int v = 0; v < kVecs; ++v)
        _mm512_store_si512(dst + 16 * v, Steps::load(a_row + s * kTileCols + 16 * v, p.K, tokens,
                                                     column_mask(p.K - s * kTileCols, v)));
    }
  }
}

// acc block (row_block, col_block) += sum over slots [0, samples) of |g_b^T a_b|.
void tile_block(const SaliencyBlocking& p, float* acc, const SaliencyPanels& panels, int64_t samples,
                int64_t row_block, int64_t col_block) {
  const int64_t row0 = row_block * p.block_rows, rows = std::min(p.block_rows, p.N - row0);
  const int64_t col0 = col_block * p.block_cols, cols = std::min(p.block_cols, p.K - col0);
  const int64_t strip_steps = p.group_steps();
  for (int64_t r = row0; r < row0 + rows; r += kTileRows) {
    const int32_t* g_strip = panels.grad + (r / kTileRows) * strip_steps * kTileRows;
    const int tile_rows = static_cast<int>(std::min<int64_t>(kTileRows, row0 + rows - r));
    for (int64_t c = col0; c < col0 + cols; c += kTileCols)
      micro_tile(g_strip, panels.act + (c / kTileCols) * strip_steps * kTileCols, samples, p.steps(),
                 acc + r * p.K + c, p.K, tile_rows, col0 + cols - c);
  }
}
