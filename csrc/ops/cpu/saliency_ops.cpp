// CPU entry point of tacq.saliency_accumulate:
//   acc[N,K] += sum_b |grad_out[b]^T act[b]|   (per-sample absolute value)
//
// Mapping: acc is cut into row tiles of at most kTileElems floats. For each
// tile and each sample b, one GEMM (torch's BLAS, multi-threaded) writes the
// sample's gradient tile grad_out[b][:, rows]^T act[b] into a reusable fp32
// buffer, and a parallel vectorized epilogue adds its absolute value into acc
// while the tile is still in cache. Extra memory: one tile (<= 16 MiB) plus the
// fp32 copies of half-precision inputs — never B x N x K, whatever B is.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../../kernels/cpu/saliency.h"
#include "tacq/validate.h"

namespace tacq {
namespace {

constexpr int64_t kTileElems = int64_t{1} << 22;  // 16 MiB of fp32

void saliency_accumulate_cpu(at::Tensor& acc, const at::Tensor& grad_out, const at::Tensor& act) {
  const char* op = "saliency_accumulate";
  check_saliency_args(op, acc, grad_out, act);
  const at::Tensor g = (grad_out.dim() == 2 ? grad_out.unsqueeze(0) : grad_out).to(at::kFloat).contiguous();
  const at::Tensor a = (act.dim() == 2 ? act.unsqueeze(0) : act).to(at::kFloat).contiguous();
  const int64_t B = g.size(0), N = acc.size(0), K = acc.size(1);
  if (B == 0 || g.size(1) == 0 || N == 0) return;

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

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("saliency_accumulate", &saliency_accumulate_cpu); }

}  // namespace tacq
