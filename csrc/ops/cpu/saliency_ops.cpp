// CPU entry point of tacq.saliency_accumulate:
//   acc[N,K] += sum_b |grad_out[b]^T act[b]|   (per-sample absolute value)
//
// One-token samples (T = 1) are summed as one sample of |grad_out|, |act|.
// bf16 inputs on a CPU with AVX-512 BF16 go to the fused bf16 kernel as they
// are; all others are made fp32 and contiguous (half-precision inputs are copied
// once). AVX-512: the fused kernels (kernels/cpu/saliency_tiles.h) keep each
// sample's gradient tile in registers. A group of samples at a time (one
// sample, or a few short ones: SaliencyBlocking::group), their tokens are
// packed into two panels (about max(T, 128) x (N + K) 32-bit lanes, reused for
// every group; in parallel over tokens), then the blocks of acc run in parallel.
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
#include "../validate.h"

namespace tacq {
namespace {

constexpr int64_t kTileElems = int64_t{1} << 22;  // 16 MiB of fp32

struct FreeDeleter {
  void operator()(int32_t* p) const { std::free(p); }
};

std::unique_ptr<int32_t, FreeDeleter> aligned_lanes(int64_t lanes) {
  // Rounded up to whole cache lines, as aligned_alloc requires.
  const size_t bytes = (static_cast<size_t>(lanes) * sizeof(int32_t) + 63) / 64 * 64;
  std::unique_ptr<int32_t, FreeDeleter> buffer(static_cast<int32_t*>(std::aligned_alloc(64, bytes)));
  TORCH_CHECK(buffer != nullptr, "tacq.saliency_accumulate: out of memory for a ", bytes, "-byte packed panel");
  return buffer;
}

// Elem: float (fp32 inputs) or uint16_t (bf16 bit patterns); Pack, Tiles: the
// ISA's pack_steps and tile_block for it.
template <typename Elem, typename Pack, typename Tiles>
void accumulate_fused(float* acc, const Elem* grad, const Elem* act, int64_t B, int64_t T, int64_t N, int64_t K,
                      int64_t tokens_per_step, Pack pack_steps, Tiles tile_block) {
  const auto p = cpu::SaliencyBlocking::for_shape(B, T, N, K, tokens_per_step, 4 * at::get_num_threads());
  const auto grad_panel = aligned_lanes(p.grad_panel_lanes()), act_panel = aligned_lanes(p.act_panel_lanes());
  const cpu::SaliencyPanels panels{grad_panel.get(), act_panel.get()};
  const int64_t row_blocks = p.row_blocks(), steps = p.steps();
  for (int64_t b0 = 0; b0 < B; b0 += p.group) {
    const int64_t samples = std::min(p.group, B - b0);
    at::parallel_for(0, samples * steps, 1, [&](int64_t begin, int64_t end) {
      for (int64_t slot = begin / steps; slot * steps < end; ++slot) {
        const int64_t b = b0 + slot;
        pack_steps(p, grad + b * T * N, act + b * T * K, slot, std::max(begin - slot * steps, int64_t{0}),
                   std::min(end - slot * steps, steps), panels);
      }
    });
    // Consecutive blocks share a column block, so its activations are re-read from L3.
    at::parallel_for(0, row_blocks * p.col_blocks(), 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block)
        tile_block(p, acc, panels, samples, block % row_blocks, block / row_blocks);
    });
  }
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
  const at::Tensor g3 = grad_out.dim() == 2 ? grad_out.unsqueeze(0) : grad_out;
  const at::Tensor a3 = act.dim() == 2 ? act.unsqueeze(0) : act;
  const int64_t B = g3.size(0), T = g3.size(1), N = acc.size(0), K = acc.size(1);
  if (B == 0 || T == 0 || N == 0 || K == 0) return;
  if (T == 1 && B > 1) {
    // One-token samples: |g_b a_b| = |g_b| |a_b| exactly, so their sum is one
    // product of absolute values, B samples become the tokens of one sample
    // and acc is swept once instead of B times.
    saliency_accumulate_cpu(acc, g3.abs().reshape({B, N}), a3.abs().reshape({B, K}));
    return;
  }
  if (g3.scalar_type() == at::kBFloat16 && cpu_has_avx512_bf16()) {
    const at::Tensor g = g3.contiguous(), a = a3.contiguous();
    accumulate_fused(acc.data_ptr<float>(), reinterpret_cast<const uint16_t*>(g.const_data_ptr<at::BFloat16>()),
                     reinterpret_cast<const uint16_t*>(a.const_data_ptr<at::BFloat16>()), B, T, N, K, 2,
                     &cpu::avx512bf16::pack_steps, &cpu::avx512bf16::tile_block);
    return;
  }
  const at::Tensor g = g3.to(at::kFloat).contiguous(), a = a3.to(at::kFloat).contiguous();
  if (cpu_isa() == CpuIsa::kAvx512)
    accumulate_fused(acc.data_ptr<float>(), g.const_data_ptr<float>(), a.const_data_ptr<float>(), B, T, N, K, 1,
                     &cpu::avx512::pack_steps, &cpu::avx512::tile_block);
  else
    accumulate_with_blas(acc, g, a);
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("saliency_accumulate", &saliency_accumulate_cpu); }

}  // namespace tacq
