// CPU entry point of tacq.saliency_accumulate:
//   acc[N,K] += sum_b |grad_out[b]^T act[b]|   (per-sample absolute value)
//
// Inputs are made fp32 and contiguous (half-precision inputs are copied once).
// AVX-512: the fused kernel (kernels/cpu/saliency_avx512.cpp) keeps each
// sample's gradient tile in registers; acc is cut into independent blocks run
// in parallel, each with a workspace of its own (two packed panels, ~1.5 MiB).
// Other CPUs: acc is cut into row tiles of at most kTileElems floats; for each
// tile and sample one BLAS GEMM writes the sample's gradient tile into a
// reusable buffer and a parallel epilogue adds its absolute value into acc
// while the tile is in cache. Either way the extra memory never grows with B.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <memory>

#include "../../kernels/cpu/saliency.h"
#include "tacq/cpu_isa.h"
#include "tacq/validate.h"

namespace tacq {
namespace {

constexpr int64_t kTileElems = int64_t{1} << 22;  // 16 MiB of fp32

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

void accumulate_fused(float* acc, const float* grad, const float* act, int64_t B, int64_t T, int64_t N,
                      int64_t K) {
  const auto blocking = cpu::SaliencyBlocking::for_shape(B, T, N, K, 4 * at::get_num_threads());
  const int64_t row_blocks = blocking.row_blocks();
  // Rounded up to whole cache lines, as aligned_alloc requires.
  const size_t workspace_bytes = (blocking.workspace_floats() * sizeof(float) + 63) / 64 * 64;
  at::parallel_for(0, row_blocks * blocking.col_blocks(), 1, [&](int64_t begin, int64_t end) {
    std::unique_ptr<float, FreeDeleter> workspace(static_cast<float*>(std::aligned_alloc(64, workspace_bytes)));
    TORCH_CHECK(workspace != nullptr, "tacq.saliency_accumulate: out of memory for a ", workspace_bytes,
                "-byte workspace");
    // Consecutive tasks share a column block, so its activations are re-read from L3.
    for (int64_t task = begin; task < end; ++task)
      cpu::saliency_block_avx512(blocking, acc, grad, act, task % row_blocks, task / row_blocks, workspace.get());
  });
}

void accumulate_with_blas(at::Tensor& acc, const at::Tensor& g, const at::Tensor& a) {
  const int64_t B = g.size(0), N = acc.size(0), K = acc.size(1);
  const int64_t tile_rows = std::clamp<int64_t>(kTileElems / K, 1, N);
  at::Tensor tile = at::empty({tile_rows, K}, acc.options());
  for (int64_t n0 = 0; n0 < N; n0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, N - n0);
    at::Tensor out = tile.narrow(0, 0, rows);
    float* acc_rows = acc.data_ptr<float>() + n0 * K;  // 64-bit offset
    for (int64_t b = 0; b < B; ++b) {
      at::mm_out(out, g[b].narrow(1, n0, rows).t(), a[b]);
      const float* grad = out.data_ptr<float>();
      at::parallel_for(0, rows * K, 1 << 16, [&](int64_t begin, int64_t end) {
        cpu::accumulate_abs(acc_rows + begin, grad + begin, end - begin);
      });
    }
  }
}

void saliency_accumulate_cpu(at::Tensor& acc, const at::Tensor& grad_out, const at::Tensor& act) {
  check_saliency_args("saliency_accumulate", acc, grad_out, act);
  const at::Tensor g = (grad_out.dim() == 2 ? grad_out.unsqueeze(0) : grad_out).to(at::kFloat).contiguous();
  const at::Tensor a = (act.dim() == 2 ? act.unsqueeze(0) : act).to(at::kFloat).contiguous();
  const int64_t B = g.size(0), T = g.size(1), N = acc.size(0), K = acc.size(1);
  if (B == 0 || T == 0 || N == 0 || K == 0) return;
  if (cpu_isa() == CpuIsa::kAvx512)
    accumulate_fused(acc.data_ptr<float>(), g.data_ptr<float>(), a.data_ptr<float>(), B, T, N, K);
  else
    accumulate_with_blas(acc, g, a);
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("saliency_accumulate", &saliency_accumulate_cpu); }

}  // namespace tacq
