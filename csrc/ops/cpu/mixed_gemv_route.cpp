// Where the CPU mixed_gemv sends x's rows: see mixed_gemv_route.h.
#include "mixed_gemv_route.h"

#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdlib>

#include "tacq/cpu_isa.h"
#include "tacq/limits.h"

namespace tacq {
namespace {

// TACQ_CPU_FUSED_ROWS=<n>, n >= kMixedGemvMaxRows: the limit for every dtype
// (the crossover is the machine's; bench/prompt_layer.py measures it). 0 when
// unset.
int64_t fused_rows_from_environment() {
  const char* v = std::getenv("TACQ_CPU_FUSED_ROWS");
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v, &end, 10);
  TORCH_CHECK_VALUE(*end == '\0' && errno == 0 && n >= kMixedGemvMaxRows,
                    "TACQ_CPU_FUSED_ROWS must be an integer of at least ", kMixedGemvMaxRows, ", got '", v, "'");
  return n;
}

}  // namespace

// The most rows of x for which the fused kernel, called on slices of
// kMixedGemvMaxRows rows, beats the GEMM over dense blocks
// (mixed_gemv_ops.cpp). Measured at 14336x4096, 2 and 3 bits, groups of 64,
// 2 threads (Zen 4; time of the slices / time of the dense blocks):
// - bf16 x with AVX-512 BF16: 0.47x at 17 rows, 0.89x at 48, 1.03x at 64;
// - fp32 x with AVX-512: 0.55-0.67x at 48 rows, 0.79-0.96x at 128,
//   0.87-1.16x at 192-256 (also at 2048x2048);
// - fp32 x with AVX2: 0.65x at 17, 1.0x at 32; bf16 x with AVX2: 1.2x at 17.
// Rows of at most kShortRowsK columns cost the fused kernel more per weight
// (a row's fixed work is shared by fewer codes) and their dense block stays in
// cache, so the GEMM wins sooner there: 2-bit, per row and groups of 64,
// 2 threads, AVX-512, fp32 x at 512x192 0.92x at 32 rows and 1.13-1.18x at
// 48, at 192x192 0.76-1.0x at 17 and 1.27-1.53x at 24-32 (at K = 512 still
// 0.68-0.70x at 32 rows, 192x512 and 512x512, 0.84-1.0x at 64); bf16 x at
// 64x192, 192x192 and 512x192 about 1.0x at 24 rows, 1.2-1.4x at 32 and 1.7x
// at 48. Those were with the dense blocks streamed to memory; since blocks of
// at most 1 MiB stay in cache (host::dense_rows), the GEMM wins sooner for fp32
// x (four alternating processes, groups of 64, 2-/3-bit fused vs dense, us:
// 64x192 at 17 rows 11/21 vs 11, 192x192 25/32 vs 20, 512x192 33/39 vs 45; at
// 20 rows 14/25 vs 11, 29/38 vs 21, 38/46 vs 45; at 24 every layer's dense
// route as fast or faster). Since each thread multiplies the blocks it made
// (mixed_gemv_ops.cpp), the dense route wins sooner still: bench/prompt_layer.py
// --calls 300, 2 threads, 2 and 3 bits, per row and groups of 64, fused /
// dense at 64x192, 192x192 and 512x192: fp32 x 1.1-1.9x at 17 rows,
// 1.5-2.2x at 20; bf16 x 0.6-1.4x at 17, 0.7-1.5x at 20, 0.9-1.7x at 24.
// Such layers take no more than 16 rows of fp32 x (one call) and 24 of bf16
// x through the fused kernel.
// fp16 x: the fused kernel stages it as fp32, but the dense route's GEMM is
// torch's fp16 one, which on CPUs without AVX512-FP16 was 2-3.5x slower than
// the fused slices at every size tried (2-bit, 2 threads: 512x192 at 33-512
// rows, 512x512 and 2048x2048 at 129-512; the same with TACQ_CPU_ISA=avx2 and
// ATEN_CPU_CAPABILITY=avx2), so fp16 x always takes the fused kernel on the
// vector paths (CPUs with fast fp16 GEMMs are not measured).
// fp32 x on longer rows: the smaller the weight, the sooner the per-thread
// dense blocks win (bench/prompt_layer.py, 2 threads, 2-bit unless said, per
// row and groups of 64, fused / dense, ranges over 2-3 runs): 192x512 and
// 512x512 0.92-1.17x at 24 rows, 1.20-1.59x at 53; 1024x1024 0.78-0.90x at 24,
// 0.98-1.23x at 48 (2 and 3 bits), 1.01-1.32x at 64; 512x2048 0.97-1.41x at
// 48; 2048x2048 0.93-1.11x at 48, 0.96-1.17x at 64, 0.84-1.29x at 96;
// 8192x2048 and 2048x8192 0.80-0.99x at 53, 0.94-1.17x at 96; the 8B's
// 14336x4096 and 4096x14336 0.85-1.01x at 64, 0.91-1.13x at 128 (per row
// still 0.93-0.96x at 160).
// fused_rows_fp32_long_rows gives each size class its limit.
// TACQ_CPU_FUSED_ROWS overrides them all.
constexpr int64_t kShortRowsK = 256;

namespace {
int64_t fused_rows_fp32_long_rows(int64_t weights) {
  if (weights <= (int64_t{1} << 19)) return kMixedGemvMaxRows;  // up to 512x1024
  if (weights <= (int64_t{1} << 21)) return 32;                 // up to 1024x2048
  if (weights <= (int64_t{1} << 23)) return 64;                 // up to 2048x4096
  return 128;
}
}  // namespace

int64_t cpu_fused_rows_limit(at::ScalarType x_type, int64_t N, int64_t K) {
  if (const int64_t n = fused_rows_from_environment()) return n;
  const CpuIsa isa = cpu_isa();
  if (isa == CpuIsa::kGeneric) return kMixedGemvMaxRows;
  if (x_type == at::kHalf) return kNoRowLimit;
  if (x_type == at::kBFloat16) {
    if (isa != CpuIsa::kAvx512 || !cpu_has_avx512_bf16()) return kMixedGemvMaxRows;
    return K <= kShortRowsK ? 24 : 48;
  }
  if (isa == CpuIsa::kAvx2) return 32;
  return K <= kShortRowsK ? kMixedGemvMaxRows : fused_rows_fp32_long_rows(N * K);
}

}  // namespace tacq
