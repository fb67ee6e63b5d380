// CPU entry point of tacq.mixed_gemv: checks (CSR content included), x staged
// once as zero-padded fp32 rows plus its per-group sums, threads over output
// rows, ISA dispatch, and the TORCH_LIBRARY_IMPL registration.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../../kernels/cpu/mixed_gemv.h"
#include "tacq/cpu_isa.h"
#include "tacq/validate.h"

namespace tacq {
namespace {

cpu::GemvRowsFn gemv_kernel_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512: return &cpu::avx512::mixed_gemv_rows;
    case CpuIsa::kAvx2: return &cpu::avx2::mixed_gemv_rows;
    case CpuIsa::kGeneric: return &cpu::generic::mixed_gemv_rows;
  }
  TORCH_CHECK(false, "tacq.mixed_gemv: no kernel for CPU ISA ", static_cast<int>(isa));
}

// x [M,K] -> xs fp32 [M,Kp] zero-padded, xsum [M,G] (sum of xs over each
// group), and, if x_bf16 is defined, x as bf16 [M,Kp] in bf16_lane_code order.
template <typename T>
void stage_activations(const at::Tensor& x, int64_t K, int64_t Kp, int64_t group_len, int bits,
                       at::Tensor& xs, at::Tensor& xsum, at::Tensor& x_bf16) {
  const int64_t M = x.size(0), G = K / group_len;
  const auto src = x.accessor<T, 2>();  // any strides
  float* dst = xs.data_ptr<float>();
  float* sums = xsum.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) {
    float* row = dst + m * Kp;
    for (int64_t k = 0; k < K; ++k) row[k] = static_cast<float>(src[m][k]);
    for (int64_t k = K; k < Kp; ++k) row[k] = 0.f;
    for (int64_t g = 0; g < G; ++g) {
      float sum = 0.f;
      for (int64_t k = g * group_len; k < (g + 1) * group_len; ++k) sum += row[k];
      sums[m * G + g] = sum;
    }
    if (!x_bf16.defined()) continue;
    at::BFloat16* out = x_bf16.data_ptr<at::BFloat16>() + m * Kp;
    for (int64_t block = 0; block < Kp; block += 32)
      for (int lane = 0; lane < 32; ++lane)
        out[block + lane] = static_cast<at::BFloat16>(row[block + cpu::bf16_lane_code(bits, lane)]);
  }
}

at::Tensor mixed_gemv_cpu(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                          const at::Tensor& zero, int64_t bits, int64_t group_size,
                          const at::Tensor& row_ptr, const at::Tensor& col_idx,
                          const at::Tensor& values) {
  static_assert(cpu::kGemvMaxRows == kMixedGemvMaxRows, "kernel and op contract agree on M");
  const auto [N, G, group_len] = check_mixed_gemv_args("mixed_gemv", x, packed, scale, zero, bits,
                                                       group_size, row_ptr, col_idx, values);
  const int64_t M = x.size(0), K = x.size(1);

  const int64_t Kp = (K + 31) / 32 * 32;
  // bf16 activations on a CPU with AVX-512 BF16: the kernel multiplies bf16
  // pairs directly, with x staged in its lane order (exact: bf16 -> fp32 sums).
  const bool use_bf16 = x.scalar_type() == at::kBFloat16 && cpu_has_avx512_bf16() &&
                        cpu::bf16_kernel_supports(static_cast<int>(bits));
  at::Tensor xs = at::empty({M, Kp}, x.options().dtype(at::kFloat));
  at::Tensor xsum = at::empty({M, G}, x.options().dtype(at::kFloat));
  at::Tensor x_bf16 = use_bf16 ? at::empty({M, Kp}, x.options().dtype(at::kBFloat16)) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "tacq_stage_x", [&] {
    stage_activations<scalar_t>(x, K, Kp, group_len, static_cast<int>(bits), xs, xsum, x_bf16);
  });
  const at::Tensor scale32 = scale.to(at::kFloat).contiguous(), zero32 = zero.to(at::kFloat).contiguous();
  at::Tensor y = at::empty({M, N}, x.options().dtype(at::kFloat));
  const cpu::GemvProblem problem{
      reinterpret_cast<const uint32_t*>(packed.data_ptr<int32_t>()), scale32.data_ptr<float>(),
      zero32.data_ptr<float>(), xs.data_ptr<float>(), xsum.data_ptr<float>(),
      use_bf16 ? reinterpret_cast<const uint16_t*>(x_bf16.data_ptr<at::BFloat16>()) : nullptr,
      row_ptr.data_ptr<int32_t>(), col_idx.data_ptr<int32_t>(),
      reinterpret_cast<const uint16_t*>(values.data_ptr<at::Half>()), M, N, K, Kp, group_len,
      static_cast<int>(bits), y.data_ptr<float>()};
  const cpu::GemvRowsFn kernel = use_bf16 ? &cpu::avx512bf16::mixed_gemv_rows : gemv_kernel_for(cpu_isa());
  // ~64 KiB of packed codes per task keeps scheduling overhead negligible.
  const int64_t row_bytes = Kp / 32 * bits * 4;
  const int64_t grain = std::max<int64_t>(1, (64 << 10) / row_bytes);
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) { kernel(problem, begin, end); });
  return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(tacq, CPU, m) { m.impl("mixed_gemv", &mixed_gemv_cpu); }

}  // namespace tacq
