// The CUDA saliency_accumulate kernel (csrc/kernels/cuda/saliency_kernel.cuh)
// run on the CPU through cuda_host_shim.h and cuda_host_ptx.h (cp.async,
// ldmatrix and mma.sync from the PTX ISA), against a float64 reference
// written from the op's contract: acc[n, k] += sum_b |sum_t grad_out[b, t, n]
// act[b, t, k]|. No GPU and no CUDA compiler: CUDA's headers only.
// What it reaches: both load paths as the launcher picks them (16-byte
// cp.async with zero-filled chunks past N, K and T; element-wise for odd
// widths or misaligned bases), the 4-stage pipeline (fewer steps than stages,
// several samples and token stages wrapping the buffers), the ldmatrix/mma
// fragment mapping of fp16 and bf16 and the fp32 SIMT path, partial and
// several tiles in N and K, one block walking several tiles (a grid smaller
// than the launcher's), the per-sample absolute value, and writes bounded by
// N and K (acc is followed by a guard). Shared memory starts as NaN each
// block and a copy's destination is NaN until its wait, so a read of an
// unwaited or unstaged slot shows; copies never waited for are counted.
// What it cannot: timing, bank conflicts, and the memory model of a real GPU.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda_host_shim.h"
#include "cuda_host_ptx.h"
#include "emulation_values.h"
#include "saliency_kernel.cuh"

namespace tacq::cuda::saliency {
// the kernel's `extern __shared__`, as large as the larger element type needs
alignas(16) unsigned char smem_raw[std::max(Tiling<__half>::kSmemBytes, Tiling<float>::kSmemBytes)];
}

namespace {

namespace sl = tacq::cuda::saliency;

int g_failures = 0, g_cases = 0, g_async_cases = 0;

struct Case {
  int64_t B, T, N, K;
  bool misaligned;  // both bases one element past 16-byte alignment
  unsigned grid;    // blocks; 0: the launcher's (one per tile)
};

// `count` random elements in [-1, 1), at a 16-byte aligned address or one
// element past one.
template <typename E>
struct Operand {
  Operand(int64_t count, bool misaligned, std::mt19937& rng) : store(count + 16 / sizeof(E) + 1) {
    E* base = store.data();
    while (reinterpret_cast<uintptr_t>(base) % 16 != 0) ++base;
    data = base + (misaligned ? 1 : 0);
    std::uniform_real_distribution<float> uniform(-1.f, 1.f);
    for (int64_t i = 0; i < count; ++i) data[i] = E(uniform(rng));
  }
  double operator[](int64_t i) const { return static_cast<float>(data[i]); }
  std::vector<E> store;
  E* data;
};

template <typename E>
void run_case(const Case& c, std::mt19937& rng) {
  const int64_t B = c.B, T = c.T, N = c.N, K = c.K;
  const Operand<E> grad(B * T * N, c.misaligned, rng), act(B * T * K, c.misaligned, rng);
  // acc [N, K] from a random start, then a tile's rows of -0.0 the kernel must
  // not touch: adding anything, even +0.0, turns one into +0.0
  std::vector<float> acc((N + sl::kTile) * K, -0.f);
  std::uniform_real_distribution<float> initial(0.f, 4.f);
  for (int64_t i = 0; i < N * K; ++i) acc[i] = initial(rng);
  const std::vector<float> acc0 = acc;

  const bool async = sl::async_loads<E>(grad.data, act.data, N, K);
  gridDim = {c.grid ? c.grid : sl::launch_grid(N, K), 1, 1};
  std::atomic<size_t> in_flight{0};
  for (unsigned b = 0; b < gridDim.x; ++b) {
    std::memset(sl::smem_raw, 0xFF, sizeof sl::smem_raw);  // NaN in every fp32, fp16 and bf16 slot
    cuda_host::block_runner<sl::kThreads>().run(b, [&] {
      if (async) sl::saliency_kernel<E, true>(grad.data, act.data, acc.data(), B, T, N, K);
      else sl::saliency_kernel<E, false>(grad.data, act.data, acc.data(), B, T, N, K);
      in_flight += cuda_host::cp_async_discard();
    });
  }

  ++g_cases;
  g_async_cases += async;
  char what[160];
  std::snprintf(what, sizeof what, "%s B %ld T %ld N %ld K %ld grid %u%s%s", emulation::type_name<E>(), static_cast<long>(B),
                static_cast<long>(T), static_cast<long>(N), static_cast<long>(K), gridDim.x,
                async ? " cp.async" : " element-wise", c.misaligned ? " misaligned" : "");
  int wrong = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      double want = acc0[n * K + k], bound = std::fabs(want);
      for (int64_t b = 0; b < B; ++b) {
        double sample = 0;
        for (int64_t t = 0; t < T; ++t) {
          const double term = grad[(b * T + t) * N + n] * act[(b * T + t) * K + k];
          sample += term;
          bound += std::fabs(term);
        }
        want += std::fabs(sample);
      }
      // fp32 accumulation: about one rounding per token and per sample
      const double tol = 0x1p-24 * static_cast<double>(T + B + 2) * bound;
      const double got = acc[n * K + k];
      if (!(std::fabs(got - want) <= tol) && wrong++ < 3)
        std::fprintf(stderr, "%s: acc[%ld, %ld] = %.9g, want %.9g (tolerance %.3g)\n", what, static_cast<long>(n),
                     static_cast<long>(k), got, want, tol);
    }
  const bool guard_kept = std::memcmp(acc.data() + N * K, acc0.data() + N * K, sl::kTile * K * sizeof(float)) == 0;
  if (!guard_kept) std::fprintf(stderr, "%s: wrote past acc[N - 1, K - 1]\n", what);
  if (in_flight) std::fprintf(stderr, "%s: %zu copies never waited for\n", what, in_flight.load());
  if (wrong || !guard_kept || in_flight) ++g_failures;
}

}  // namespace

int main() {
  // {B, T, N, K, misaligned, grid}; a stage is 32 tokens (fp16, bf16) or 16 (fp32)
  const std::vector<Case> cases = {
      {1, 5, 40, 53, false, 0},     // T under one stage, fewer steps than the pipeline's; K odd: element-wise
      {2, 45, 136, 264, false, 0},  // 2 x 3 tiles, cp.async with chunks past N, K and T zero-filled
      {2, 35, 131, 139, false, 0},  // primes, 2 x 2 tiles, partial chunks
      {3, 40, 128, 136, true, 1},   // whole chunks but misaligned bases: element-wise; one block, 2 tiles of 6 steps
      {3, 32, 256, 128, false, 1},  // T whole stages; one block walks 2 tiles, the next prologue reusing the last stage's buffer
      {2, 1, 24, 16, false, 0},     // T = 1: cp.async, fewer steps than the pipeline's
      {7, 3, 9, 40, false, 0},      // 7 samples of 3 tokens, each its own |.|; N odd: element-wise
      {1, 130, 8, 8, false, 0},     // one sample of 5 (9) stages through the pipeline, tiny tile
  };
  std::mt19937 rng(20261207);
  for (const Case& c : cases) {
    run_case<__half>(c, rng);
    run_case<__nv_bfloat16>(c, rng);
    run_case<float>(c, rng);
  }
  std::printf("cuda_emulation_saliency: %d cases (%d through cp.async), %d failed\n", g_cases, g_async_cases,
              g_failures);
  return g_failures == 0 ? 0 : 1;
}
