// tacq.bf16_gemv CPU kernel, AVX-512 with the BF16 extension (Sapphire
// Rapids, Zen 4). Data layout in bf16_gemv.h. Mapping: the caller's thread
// owns a range of output rows; within it, blocks of 4 weight rows are read
// in 32-element steps (64 bytes each; the hardware prefetcher follows the 4
// streams: software prefetches and masked loads cost ~30 % at 1 row), and
// each step is multiplied by every activation row of a tile of up to 4 rows
// with vdpbf16ps (exact bf16 products, pairs summed into 16 fp32 lanes), so a
// block holds up to 16 accumulators. With more than 4 activation rows the
// block's later tiles read its 4 rows again from L1/L2, not from memory. A
// row's last K % 32 elements come through a masked load; leftover rows of the
// range (fewer than 4) run one at a time.
#include <cstdint>
#include <type_traits>

#include "avx512_intrinsics.h"
#include "bf16_gemv.h"

namespace tacq::cpu::avx512bf16 {
namespace {

constexpr int64_t kStep = 32;              // bf16 elements per vector
constexpr int kBlockRows = 4;
constexpr int kTileRows = 4;

template <bool kTail>
__m512bh load_bf16(const uint16_t* p, __mmask32 mask) {
  if constexpr (kTail) return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, p));
  else return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p));
}

// y[m0 + m, n + r] for r < kRows weight rows from n and m < kTile activation rows from m0.
template <int kRows, int kTile>
void dot_block(const Bf16GemvProblem& p, int64_t n, int64_t m0) {
  const uint16_t* w = p.w + n * p.K;
  const uint16_t* x = p.x + m0 * p.x_stride;
  __m512 acc[kRows][kTile];
  for (int r = 0; r < kRows; ++r)
    for (int m = 0; m < kTile; ++m) acc[r][m] = _mm512_setzero_ps();
  const int64_t full = p.K / kStep * kStep;
  auto step = [&](int64_t k, __mmask32 mask, auto tail) {
    constexpr bool kTail = decltype(tail)::value;
    __m512bh xv[kTile];
    for (int m = 0; m < kTile; ++m) xv[m] = load_bf16<kTail>(x + m * p.x_stride + k, mask);
    for (int r = 0; r < kRows; ++r) {
      const __m512bh wv = load_bf16<kTail>(w + r * p.K + k, mask);
      for (int m = 0; m < kTile; ++m) acc[r][m] = _mm512_dpbf16_ps(acc[r][m], wv, xv[m]);
    }
  };
  for (int64_t k = 0; k < full; k += kStep) step(k, ~__mmask32{0}, std::false_type{});
  if (full < p.K) step(full, _cvtu32_mask32((1u << (p.K - full)) - 1), std::true_type{});
  for (int r = 0; r < kRows; ++r)
    for (int m = 0; m < kTile; ++m) p.y[(m0 + m) * p.N + n + r] = _mm512_reduce_add_ps(acc[r][m]);
}

template <int kRows>
void dot_rows(const Bf16GemvProblem& p, int64_t n) {
  int64_t m0 = 0;
  for (; m0 + kTileRows <= p.M; m0 += kTileRows) dot_block<kRows, kTileRows>(p, n, m0);
  switch (p.M - m0) {
    case 3: dot_block<kRows, 3>(p, n, m0); break;
    case 2: dot_block<kRows, 2>(p, n, m0); break;
    case 1: dot_block<kRows, 1>(p, n, m0); break;
    default: break;
  }
}

}  // namespace

void bf16_gemv_rows(const Bf16GemvProblem& p, int64_t row_begin, int64_t row_end) {
  int64_t n = row_begin;
  for (; n + kBlockRows <= row_end; n += kBlockRows) dot_rows<kBlockRows>(p, n);
  for (; n < row_end; ++n) dot_rows<1>(p, n);
}

}  // namespace tacq::cpu::avx512bf16
